"""The gate's table (experiments/gate.py) and its sweep (configs/gate.py)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from configs import gate as gate_config
from configs import mt10 as mt10_config
from distill.envs import mt10
from distill.run import preflight
from distill.run import sweeps
from distill.train import student as student_lib
from experiments import gate

TASKS = ('hopper', 'walker2d')
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _runs(teacher, baselines):
  """Runs of a fake gate sweep.

  Args:
    teacher: {seed: [score per task]}.
    baselines: {configuration: {seed: [score per task]}}.
  """
  runs = []
  for configuration, by_seed in baselines.items():
    for seed, student in by_seed.items():
      runs.append({
          'member': f'{configuration},seed={seed}',
          'configuration': configuration, 'seed': seed,
          'tasks': {t: {'teacher_score': teacher[seed][i],
                        'student_score': student[i],
                        'dataset_score': 20.0 + i}
                    for i, t in enumerate(TASKS)}})
  return runs


def test_the_best_baseline_per_task_and_the_margin():
  teacher = {0: [60.0, 30.0], 1: [62.0, 32.0], 2: [64.0, 34.0]}
  plain = 'student.model.width=32,student.bc_top_fraction=1.0'
  top = 'student.model.width=32,student.bc_top_fraction=0.1'
  runs = _runs(teacher, {
      plain: {0: [40.0, 30.0], 1: [40.0, 30.0], 2: [40.0, 30.0]},
      top: {0: [50.0, 20.0], 1: [50.0, 20.0], 2: [50.0, 20.0]}})
  table = gate.gate_table(runs, margin=10.0, min_tasks=2, reps=200)
  hopper, walker = table['tasks']
  # hopper: the best cloning is %BC (50); teachers 62 lead by 12.
  assert hopper['best'] == top
  assert hopper['teacher']['value'] == pytest.approx(62.0)
  assert hopper['margin']['value'] == pytest.approx(12.0)
  assert hopper['margin']['ci_low'] <= 12.0 <= hopper['margin']['ci_high']
  assert hopper['passed']
  # walker2d: plain cloning (30) is best; teachers 32 lead by 2 only.
  assert walker['best'] == plain
  assert walker['margin']['value'] == pytest.approx(2.0)
  assert not walker['passed']
  assert table['passed_tasks'] == ['hopper']
  assert not table['passed']  # one task of the two needed
  assert gate.gate_table(runs, min_tasks=1, reps=200)['passed']
  text = gate.render_markdown(table)
  assert 'NOT PASSED' in text
  assert '| hopper | 20.0 | 69.9 |' in text  # dataset, best behaviour
  assert '?x32 %BC 0.1' in text


def test_success_rates_count_in_points():
  runs = _runs({0: [0.0, 0.0], 1: [0.0, 0.0]}, {'c=1': {0: [0, 0], 1: [0, 0]}})
  for r in runs:
    for i, t in enumerate(TASKS):
      r['tasks'][t].update(teacher_success_rate=0.5 + 0.1 * i,
                           student_success_rate=0.3,
                           dataset_success_rate=0.4)
  table = gate.gate_table(runs, metric='success_rate', reps=200)
  assert [r['margin']['value'] for r in table['tasks']] == pytest.approx(
      [20.0, 30.0])
  assert table['passed']
  with pytest.raises(ValueError, match='teacher_success_rate'):
    gate.gate_table(_runs({0: [1, 1]}, {'c=1': {0: [0, 0]}}),
                    metric='success_rate')


def test_teachers_must_agree_within_a_seed():
  runs = _runs({0: [60.0, 30.0]}, {'a=1': {0: [1, 1]}, 'b=1': {0: [1, 1]}})
  runs[1]['tasks']['hopper']['teacher_score'] = 61.0
  with pytest.raises(ValueError, match='seed 0'):
    gate.gate_table(runs)


def test_main_writes_the_table(tmp_path):
  teacher = {0: [60.0, 30.0], 1: [62.0, 32.0]}
  runs = _runs(teacher, {'a=1': {0: [40.0, 10.0], 1: [41.0, 11.0]}})
  table = gate.gate_table(runs, reps=200)
  gate.write_table(table, str(tmp_path / 'sub' / 'gate'))
  assert json.loads((tmp_path / 'sub' / 'gate.json').read_text())['passed']
  assert '**PASSED**' in (tmp_path / 'sub' / 'gate.md').read_text()


def test_gate_sweep_members():
  sweep = gate_config.get_sweep()
  assert len(sweep.members) == 3 * 2 * 3
  names = {sweeps.configuration_name(m) for m in sweep.members}
  assert len(names) == 6
  config = gate_config.get_config()
  assert config.curriculum.name == 'scratch'
  assert config.data.quality == 'mixed'
  assert config.student.steps == config.teacher.steps
  # The teachers' size is among the cloning students' sizes.
  sizes = {(m['student.model.num_layers'], m['student.model.width'])
           for m in sweep.members}
  assert (config.teacher.model.num_layers,
          config.teacher.model.width) in sizes
  assert np.isclose(sorted({m['student.bc_top_fraction']
                            for m in sweep.members})[-1], 1.0)
  with pytest.raises(ValueError, match='configs/gate.py'):
    gate_config.get_config('nope')


@pytest.mark.parametrize('arg,quality,steps', [('mt10', 'mixed', 9000),
                                               ('mt10_switch', 'switch',
                                                3000)])
def test_mt10_gate_sweep_members_and_config(arg, quality, steps, tmp_path):
  sweep = gate_config.get_sweep(arg)
  assert sweep.members == gate_config.get_sweep().members
  config = gate_config.get_config(arg)
  student_lib.check_config(config)
  preflight.check_config(config)
  assert tuple(config.tasks) == mt10.TASK_NAMES
  assert config.data.spec == 'suite:mt10/{task}-{quality}'
  assert config.data.quality == quality
  assert config.data.suite_transitions == 20_000
  assert config.curriculum.name == 'scratch'
  assert config.surgery.name == 'none'
  assert config.teacher.steps == config.student.steps == steps == (
      gate_config.MT10_TEACHER_STEPS[arg])
  assert config.student.optimizer.decay_steps == steps
  assert config.teacher.batch_size == 64
  assert config.student.batch_size % len(config.tasks) == 0
  assert (config.teacher.model.num_layers, config.teacher.model.width) == (
      2, 64)
  assert config.eval.episodes == 10
  assert config.eval.target_return.to_dict() == mt10_config.TARGET_RETURNS
  teachers, members = sweeps.plan(f'configs/gate.py:{arg}', sweep,
                                  str(tmp_path))
  assert len(teachers) == 3 and len(members) == 18  # one teacher per seed
  sizes_fractions = {(m.config['student']['model']['num_layers'],
                      m.config['student']['model']['width'],
                      m.config['student']['bc_top_fraction'])
                     for m in members}
  assert sizes_fractions == {(2, w, f) for w in (32, 64)
                             for f in (1.0, 0.25, 0.1)}
  for m in members:
    assert m.config['data']['quality'] == quality
    assert m.config['curriculum']['name'] == 'scratch'
    assert m.config['student']['steps'] == steps


def test_unknown_args_name_the_valid_ones():
  valid = "valid: '', 'n20k', 'smoke', 'mt10', 'mt10_switch'"
  for fn in (gate_config.get_config, gate_config.get_sweep):
    with pytest.raises(ValueError, match=valid):
      fn('mt10_medium')


def _mt10_runs(lead_tasks):
  """Runs of a fake MT10 gate: 3 seeds x 6 cloning configurations.

  The best baseline has success rate 0.5 on every task; the teachers lead
  it by 0.15 on `lead_tasks` and trail it by 0.1 elsewhere.
  """
  configurations = [sweeps.configuration_name(m)
                    for m in gate_config.baselines()]
  runs = []
  for seed in (0, 1, 2):
    for c, configuration in enumerate(configurations):
      tasks = {}
      for task in mt10.TASK_NAMES:
        tasks[task] = {
            'teacher_success_rate': 0.65 if task in lead_tasks else 0.4,
            'student_success_rate': 0.5 if c == 3 else 0.2,
            'dataset_success_rate': 0.6,
            'teacher_score': 50.0, 'student_score': 40.0,
            'dataset_score': 45.0}
      runs.append({'member': f'{configuration},seed={seed}',
                   'configuration': configuration, 'seed': seed,
                   'tasks': tasks})
  return runs, configurations


def test_mt10_gate_counts_success_rate_points_over_ten_tasks():
  lead = mt10.TASK_NAMES[:3]
  runs, configurations = _mt10_runs(lead)
  table = gate.gate_table(runs, metric='success_rate', min_tasks=3, reps=200)
  assert [r['task'] for r in table['tasks']] == list(mt10.TASK_NAMES)
  assert table['passed_tasks'] == list(lead)
  assert table['passed']
  for row in table['tasks']:
    assert row['best'] == configurations[3]
    assert row['behaviour'] is None
    assert row['margin']['value'] == pytest.approx(
        15.0 if row['task'] in lead else -10.0)
  text = gate.render_markdown(table)
  assert 'success rate, points' in text and '**PASSED**' in text
  assert '| reach-v3 | 60.0 | - | 65.0' in text
  runs, _ = _mt10_runs(lead[:2])
  assert not gate.gate_table(runs, metric='success_rate', min_tasks=3,
                             reps=200)['passed']


@pytest.mark.slow  # A Python start (a few seconds on a busy CPU).
def test_gate_command_reads_an_mt10_sweep(tmp_path):
  runs, _ = _mt10_runs(mt10.TASK_NAMES[:3])
  jobs = []
  for r in runs:
    name = r['member']
    (tmp_path / 'members' / name).mkdir(parents=True)
    (tmp_path / 'members' / name / 'results.json').write_text(json.dumps(
        {'seed': r['seed'], 'tasks': r['tasks'], 'student_params': 1}))
    jobs.append({'kind': 'member', 'name': name, 'status': 'done',
                 'configuration': r['configuration'], 'log': ''})
  (tmp_path / sweeps.STATE).write_text(json.dumps({'jobs': jobs}))
  out = tmp_path / 'gate' / 'mt10_switch'
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.gate', str(tmp_path),
       '--metric=success_rate', '--min_tasks=3', '--reps=100',
       f'--out={out}'], cwd=ROOT, capture_output=True, text=True,
      timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr
  assert '**PASSED**' in proc.stdout
  table = json.loads((tmp_path / 'gate' / 'mt10_switch.json').read_text())
  assert table['passed'] and table['min_tasks'] == 3
  assert table['passed_tasks'] == list(mt10.TASK_NAMES[:3])
