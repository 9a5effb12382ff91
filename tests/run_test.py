"""End-to-end tests of the stage table (distill/run/stages.py), teacher side."""

import json
import os

import numpy as np
import pytest

from configs import teachers as teachers_config
from distill.run import stages
from distill.train import checkpointing


def _config(d4rl_dir):
  config = teachers_config.get_config('smoke')
  config.data.spec = os.path.join(d4rl_dir, '{task}-{quality}.hdf5')
  config.eval.max_episode_steps = 5
  return config


@pytest.mark.slow
def test_teacher_stages_skip_resume_and_retrain(tmp_path, d4rl_dir):
  config = _config(d4rl_dir)
  config.teacher.steps = 10
  workdir = str(tmp_path / 'work')
  stages.run(config, workdir)
  evals = json.load(open(os.path.join(workdir, 'teachers', 'eval.json')))
  assert set(evals) == {'hopper', 'walker2d'}
  assert evals['hopper']['step'] == 10
  assert np.isfinite(evals['walker2d']['normalized_mean'])
  summary = json.load(open(os.path.join(workdir, 'datasets.json')))
  assert summary['hopper']['obs_dim'] == 11
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f]
  assert any('teacher/hopper/loss' in r for r in rows)
  assert any('eval/teacher/walker2d/normalized_score' in r for r in rows)

  # Same config: every stage is skipped (nothing changes on disk).
  mtime = os.path.getmtime(os.path.join(workdir, 'teachers', 'eval.json'))
  stages.run(config, workdir)
  assert os.path.getmtime(
      os.path.join(workdir, 'teachers', 'eval.json')) == mtime

  # More steps: training continues from the checkpoint, eval reruns.
  config.teacher.steps = 15
  stages.run(config, workdir)
  assert checkpointing.latest_step(
      os.path.join(workdir, 'teachers', 'hopper')) == 15
  evals = json.load(open(os.path.join(workdir, 'teachers', 'eval.json')))
  assert evals['hopper']['step'] == 15

  # A changed model: old teachers moved aside, trained again from scratch.
  config.teacher.model.width = 8
  stages.run(config, workdir)
  stale = [d for d in os.listdir(workdir) if d.startswith('teachers.stale-')]
  assert len(stale) == 1
  _, params, meta = checkpointing.load_policy(
      os.path.join(workdir, 'teachers', 'walker2d'))
  assert meta['model']['width'] == 8 and meta['step'] == 15


@pytest.mark.slow
def test_shared_teacher_workdir_is_trained_once_and_reused(tmp_path,
                                                           d4rl_dir):
  config = _config(d4rl_dir)
  config.teacher.steps = 5
  shared = str(tmp_path / 'teachers')
  config.teacher_workdir = shared
  stages.run(config, str(tmp_path / 'a'))
  assert checkpointing.latest_step(
      os.path.join(shared, 'teachers', 'hopper')) == 5
  assert os.path.exists(os.path.join(shared, 'teachers', 'eval.json'))
  assert os.path.exists(os.path.join(shared, 'stamps', 'teachers.json'))
  assert not os.path.exists(tmp_path / 'a' / 'teachers')
  stamp = os.path.join(shared, 'stamps', 'teachers.json')
  mtime = os.path.getmtime(stamp)
  stages.run(config, str(tmp_path / 'b'))  # A second run: nothing trains.
  assert os.path.getmtime(stamp) == mtime
  assert not os.path.exists(tmp_path / 'b' / 'teachers')


def test_config_errors_name_the_field_before_any_work(tmp_path, d4rl_dir):
  config = _config(d4rl_dir)
  config.stages = ('datasets', 'teachers', 'sideways')
  with pytest.raises(ValueError, match='config.stages'):
    stages.run(config, str(tmp_path / 'w'))
  config = _config(d4rl_dir)
  del config.eval.target_return['walker2d']
  with pytest.raises(KeyError, match='eval.target_return.walker2d'):
    stages.run(config, str(tmp_path / 'w'))
  assert not os.path.exists(tmp_path / 'w')

