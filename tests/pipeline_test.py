"""End to end: `experiments.run` on `configs/mt_distill.py:smoke`.

The run is the session's shared reference (`smoke_reference`: two small
D4RL files); the suite's own datasets are generated end to end by
`tests/sweep_test.py`'s smoke sweep and checked in `tests/suite_test.py`.
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from distill.run import pipeline
from distill.run import stages
from distill.train import checkpointing
from distill.train import parallel
import smoke_reference  # tests/ is on sys.path under pytest

ROOT = smoke_reference.ROOT


@pytest.fixture(scope='module', name='shared')
def fixture_shared(tmp_path_factory, d4rl_dir):
  return smoke_reference.shared_dir(tmp_path_factory, d4rl_dir)


@pytest.fixture(scope='module', name='smoke')
def fixture_smoke(shared):
  return smoke_reference.reference_run(shared)


@pytest.mark.slow
def test_smoke_run_writes_a_well_formed_results_json(smoke):
  workdir = smoke
  with open(os.path.join(workdir, 'results.json')) as f:
    results = json.load(f)
  tasks = ('hopper', 'walker2d')
  assert set(results['tasks']) == set(tasks)
  for task in tasks:
    r = results['tasks'][task]
    for key in ('dataset_score', 'teacher_score', 'teacher_score_std',
                'student_score', 'student_score_std'):
      assert isinstance(r[key], float) and np.isfinite(r[key]), (task, key)
    assert isinstance(results['teacher_params'][task], int)
  assert 0 < results['student_params']
  assert set(results['latency_ms']) == {'teacher_batch1', 'student_batch1'}
  assert all(v > 0 for v in results['latency_ms'].values())
  assert results['curriculum']['name'] == 'max_kl'
  # Every distillation step learned from exactly one teacher.
  assert sum(results['curriculum']['counts'].values()) == 40
  assert results['surgery']['name'] == 'previous'
  assert 0.0 <= results['surgery']['projected_fraction'] <= 1.0
  # The report stage writes results.json, so its own time is not in it yet.
  for stage in ('datasets', 'teachers', 'teacher_eval', 'distill',
                'student_eval'):
    assert results['wall_s'][stage] >= 0
  assert results['seed'] == 0


@pytest.mark.slow
def test_smoke_run_writes_report_plots_and_logs(smoke):
  workdir = smoke
  with open(os.path.join(workdir, 'report.md')) as f:
    text = f.read()
  assert '| task | dataset | teacher | student | student / teacher |' in text
  assert '| hopper |' in text and '| walker2d |' in text
  for png in ('kl.png', 'curriculum.png', 'scores.png'):
    with open(os.path.join(workdir, png), 'rb') as f:
      assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    assert f'({png})' in text
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    keys = set().union(*(json.loads(line) for line in f))
  for key in ('distill/kl/hopper', 'distill/kl/walker2d', 'train/loss',
              'surgery/cos_prev', 'surgery/projected', 'train/grad_norm',
              'teacher/hopper/loss'):
    assert key in keys, key
  assert os.listdir(os.path.join(workdir, 'tensorboard'))


@pytest.mark.slow
def test_rerun_skips_done_stages_and_reuses_teachers(shared, smoke,
                                                     tmp_path):
  workdir = smoke_reference.copy(smoke, tmp_path)
  teacher_stamp = os.path.join(workdir, 'stamps', 'teachers.json')
  before = os.path.getmtime(teacher_stamp)
  proc = smoke_reference.run(shared, workdir,
                             '--config.curriculum.name=round_robin',
                             '--config.surgery.name=none')
  assert proc.returncode == 0, proc.stderr[-4000:]
  assert 'stage teachers: up to date' in proc.stderr
  assert os.path.getmtime(teacher_stamp) == before
  with open(os.path.join(workdir, 'results.json')) as f:
    results = json.load(f)
  assert results['curriculum']['name'] == 'round_robin'
  assert results['curriculum']['counts'] == {'hopper': 20, 'walker2d': 20}
  assert results['surgery'] == {'name': 'none', 'projected_fraction': 0.0}


def test_bad_curriculum_flag_is_refused_before_work(tmp_path):
  cmd = [sys.executable, '-m', 'experiments.run',
         '--config=configs/mt_distill.py:smoke',
         f'--workdir={tmp_path / "w"}', '--config.curriculum.name=sideways']
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                        timeout=900, check=False)
  assert proc.returncode != 0
  assert 'curriculum.name' in proc.stderr
  assert not os.path.exists(tmp_path / 'w' / 'teachers')


def _params_max_diff(a, b):
  return max(float(np.max(np.abs(np.asarray(x, np.float64)
                                 - np.asarray(y, np.float64))))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.slow
@pytest.mark.parametrize('members', ['map', 'vmap'])
def test_population_member_equals_the_single_seed_run(shared, smoke,
                                                      tmp_path, members):
  # Seeds (0, 1) in one program; member 0 against the reference (seed 0).
  # 'map' (the CPU default) runs the members in turn, each the computation
  # of a single run: equal to the last bit. 'vmap' batches them: equal
  # within float tolerance.
  workdir = str(tmp_path / 'pop')
  proc = smoke_reference.run(shared, workdir, '--config.seeds=(0,1)',
                             f'--config.mesh.members={members}')
  assert proc.returncode == 0, proc.stderr[-4000:]
  for rel in ('teachers/hopper', 'teachers/walker2d', 'student/last',
              'student/best'):
    _, member, meta = checkpointing.load_policy(
        os.path.join(workdir, 'seed_0', rel))
    _, single, single_meta = checkpointing.load_policy(
        os.path.join(smoke, rel))
    assert meta['step'] == single_meta['step'], rel
    assert _params_max_diff(member, single) < 1e-5, rel
    if members == 'map':
      assert _params_max_diff(member, single) == 0.0, rel
  _, other, _ = checkpointing.load_policy(
      os.path.join(workdir, 'seed_1', 'student', 'last'))
  assert _params_max_diff(member, other) > 1e-3  # Really another member.
  with open(os.path.join(smoke, 'results.json')) as f:
    reference = json.load(f)
  with open(os.path.join(workdir, 'results.json')) as f:
    results = json.load(f)
  assert results['seeds'] == [0, 1]
  assert [m['seed'] for m in results['members']] == [0, 1]
  for task in ('hopper', 'walker2d'):
    for key in ('teacher_score', 'student_score', 'student_best_score'):
      np.testing.assert_allclose(results['members'][0]['tasks'][task][key],
                                 reference['tasks'][task][key], rtol=1e-5,
                                 atol=1e-6)
  # Each member's results.json reads as a single-seed run's.
  with open(os.path.join(workdir, 'seed_1', 'results.json')) as f:
    member = json.load(f)
  assert member == results['members'][1]
  assert set(member) == set(reference)
  student = results['aggregate']['student']
  assert student['runs'] == 2
  assert student['iqm']['ci_low'] <= student['iqm']['value'] <= (
      student['iqm']['ci_high'])
  with open(os.path.join(workdir, 'report.md')) as f:
    text = f.read()
  assert '| [0](seed_0/report.md) |' in text and '| [1](seed_1/' in text
  assert '95% stratified bootstrap CI over seeds' in text
  assert os.path.exists(os.path.join(workdir, 'seed_1', 'report.md'))
  assert not os.path.exists(os.path.join(workdir, 'teachers'))


def test_seed_and_seeds(smoke_config):
  config = smoke_config
  assert pipeline.member_seeds(config) == (0,)
  config.seed = 1  # The single-seed command line of sweeps.
  assert pipeline.member_seeds(config) == (1,)
  single = stages.stage_hash(config, 'distill', with_inputs=False)
  config.seed, config.seeds = 0, (1,)
  assert stages.stage_hash(config, 'distill', with_inputs=False) == single
  config.seeds = (1, 2)
  assert pipeline.member_seeds(config) == (1, 2)
  config.seed = 2
  with pytest.raises(ValueError, match=r'config.seed=2 and config.seeds'):
    stages.check_config(config)
  config.seed, config.seeds = 0, (1, 1)
  with pytest.raises(ValueError, match=r'config.seeds=\(1, 1\)'):
    stages.check_config(config)
  config.seeds, config.mesh.population = (1, 2), 3
  with pytest.raises(ValueError, match='config.mesh.population=3'):
    stages.check_config(config)
  config.mesh.population = 0
  stages.check_config(config)
  # How members share the program: the backend's choice, or a named one.
  assert parallel.population_mode(config.mesh) == 'map'  # CPU
  config.mesh.members = 'vmap'
  assert parallel.population_mode(config.mesh) == 'vmap'
  config.mesh.members = 'batched'
  with pytest.raises(ValueError, match="config.mesh.members='batched'"):
    stages.check_config(config)
  # The hashed stage config ignores it: a finished run stays finished.
  hashes = set()
  for members in ('map', 'vmap'):
    config.mesh.members = members
    hashes.add(stages.stage_hash(config, 'distill', with_inputs=False))
  assert len(hashes) == 1
