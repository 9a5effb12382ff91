"""End to end: `experiments.run` on `configs/mt_distill.py:smoke`.

The run is the session's shared reference (`smoke_reference`: two small
D4RL files); the suite's own datasets are generated end to end by
`tests/sweep_test.py`'s smoke sweep and checked in `tests/suite_test.py`.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

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
