"""The gate's table (experiments/gate.py) and its sweep (configs/gate.py)."""

import json

import numpy as np
import pytest

from configs import gate as gate_config
from distill import sweeps
from experiments import gate

TASKS = ('hopper', 'walker2d')


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
