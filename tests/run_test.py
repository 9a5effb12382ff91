"""End-to-end test of experiments/run.py with the teacher stages."""

import json
import os

import numpy as np
import pytest

from configs import teachers as teachers_config
from distill import checkpointing
from distill.data import d4rl
from experiments import run


def _write_fake(directory, task, obs, act):
  r = np.random.default_rng(0)
  n = 600
  timeouts = np.zeros(n, bool)
  timeouts[99::100] = True
  d4rl.write_hdf5(os.path.join(directory, f'{task}-medium.hdf5'), dict(
      observations=r.normal(size=(n, obs)).astype(np.float32),
      actions=np.tanh(r.normal(size=(n, act))).astype(np.float32),
      rewards=r.normal(size=n).astype(np.float32),
      terminals=np.zeros(n, bool), timeouts=timeouts))


@pytest.mark.slow
def test_teacher_stages_skip_resume_and_retrain(tmp_path):
  data_dir = tmp_path / 'data'
  _write_fake(str(data_dir), 'hopper', 11, 3)
  _write_fake(str(data_dir), 'walker2d', 17, 6)
  config = teachers_config.get_config('smoke')
  config.data.spec = str(data_dir / '{task}-{quality}.hdf5')
  config.teacher.steps = 10
  config.eval.max_episode_steps = 5
  workdir = str(tmp_path / 'work')
  run.run(config, workdir)
  evals = json.load(open(os.path.join(workdir, 'teachers', 'eval.json')))
  assert set(evals) == {'hopper', 'walker2d'}
  assert evals['hopper']['step'] == 10
  assert np.isfinite(evals['walker2d']['normalized_mean'])
  summary = json.load(open(os.path.join(workdir, 'datasets.json')))
  assert summary['hopper']['obs_dim'] == 11
  rows = [json.loads(l) for l in open(os.path.join(workdir, 'metrics.jsonl'))]
  assert any('teacher/hopper/loss' in r for r in rows)
  assert any('eval/teacher/walker2d/normalized_score' in r for r in rows)

  # Same config: every stage is skipped (nothing changes on disk).
  mtime = os.path.getmtime(os.path.join(workdir, 'teachers', 'eval.json'))
  run.run(config, workdir)
  assert os.path.getmtime(
      os.path.join(workdir, 'teachers', 'eval.json')) == mtime

  # More steps: training continues from the checkpoint, eval reruns.
  config.teacher.steps = 15
  run.run(config, workdir)
  assert checkpointing.latest_step(
      os.path.join(workdir, 'teachers', 'hopper')) == 15
  evals = json.load(open(os.path.join(workdir, 'teachers', 'eval.json')))
  assert evals['hopper']['step'] == 15

  # A changed model: old teachers moved aside, trained again from scratch.
  config.teacher.model.width = 8
  run.run(config, workdir)
  stale = [d for d in os.listdir(workdir) if d.startswith('teachers.stale-')]
  assert len(stale) == 1
  _, params, meta = checkpointing.load_policy(
      os.path.join(workdir, 'teachers', 'walker2d'))
  assert meta['model']['width'] == 8 and meta['step'] == 15
