"""Tests for experiments/dataset_info.py, run as a subprocess."""

import hashlib
import json
import subprocess
import sys

import h5py
import numpy as np
import pytest

from conftest import make_three_episodes
from distill.data import d4rl
from distill.data import scores


def _write(path, act_scale=1.0, nan=False):
  data = make_three_episodes(act=0.5 * act_scale)
  if nan:
    data['observations'][2, 3] = np.nan
  with h5py.File(path, 'w') as f:  # float64 and (N, 1), as D4RL files have.
    for key in ('observations', 'actions', 'terminals'):
      f[key] = data[key].astype(np.float64)
    f['timeouts'] = data['timeouts']
    f['rewards'] = data['rewards'][:, None].astype(np.float64)
    f['metadata/algorithm'] = 'SAC'
  return str(path)


def _run(*args):
  return subprocess.run(
      [sys.executable, '-m', 'experiments.dataset_info', *args],
      capture_output=True, text=True, timeout=120, check=False)


def _digest(path):
  with open(path, 'rb') as f:
    return hashlib.sha256(f.read()).hexdigest()


def test_prints_summary(tmp_path):
  path = _write(tmp_path / 'hopper_medium-v2.hdf5')
  before = _digest(path)
  result = _run(path)
  assert result.returncode == 0, result.stderr
  info = json.loads(result.stdout)
  returns = np.array([0 + 1 + 2, 3 + 4 + 5 + 6, 7 + 8])
  assert info['name'] == path
  assert info['episodes'] == 3
  assert info['transitions'] == 9
  assert info['obs_dim'] == 11 and info['act_dim'] == 3
  assert info['return_mean'] == pytest.approx(returns.mean())
  assert info['return_std'] == pytest.approx(returns.std())
  assert info['return_min'] == pytest.approx(3.0)
  assert info['return_max'] == pytest.approx(18.0)
  assert info['length_min'] == 2 and info['length_max'] == 4
  assert info['last_episode_unfinished'] is True
  assert info['normalized_return_mean'] == pytest.approx(
      scores.normalized_score(returns, 'hopper').mean())
  # The digest of the arrays, as the suite's dataset cards record it.
  assert info['data_sha256'] == d4rl.data_sha256(d4rl.load_hdf5(path))
  assert len(info['data_sha256']) == 64
  assert _digest(path) == before


def test_no_normalized_score_for_unknown_task(tmp_path):
  result = _run(_write(tmp_path / 'pendulum.hdf5'))
  assert result.returncode == 0, result.stderr
  assert 'normalized_return_mean' not in json.loads(result.stdout)


def test_bad_file_exits_nonzero_with_one_line(tmp_path):
  path = _write(tmp_path / 'walker2d_bad.hdf5', nan=True)
  before = _digest(path)
  result = _run(path)
  assert result.returncode in (1, 2)
  assert result.stdout == ''
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1, result.stderr
  assert path in lines[0] and "'observations'" in lines[0]
  assert 'NaN' in lines[0]
  assert 'Traceback' not in result.stderr
  assert _digest(path) == before
  assert sorted(p.name for p in tmp_path.iterdir()) == ['walker2d_bad.hdf5']


def test_clip_actions_flag(tmp_path):
  path = _write(tmp_path / 'wide.hdf5', act_scale=4.0)
  before = _digest(path)
  refused = _run(path)
  assert refused.returncode == 1
  assert "'actions'" in refused.stderr and 'clip_actions' in refused.stderr
  clipped = _run(path, '--clip_actions')
  assert clipped.returncode == 0, clipped.stderr
  assert json.loads(clipped.stdout)['action_max'] == 1.0
  assert _digest(path) == before


def test_missing_file_and_missing_spec(tmp_path):
  result = _run(str(tmp_path / 'nope.hdf5'))
  assert result.returncode in (1, 2)
  assert 'no such file' in result.stderr
  assert _run().returncode in (1, 2)


def test_several_specs_print_a_list(tmp_path):
  first = _write(tmp_path / 'hopper_medium-v2.hdf5')
  second = _write(tmp_path / 'other.hdf5')
  result = _run(first, second)
  assert result.returncode == 0, result.stderr
  infos = json.loads(result.stdout)
  assert [i['name'] for i in infos] == [first, second]
  assert all(i['seconds'] >= 0 for i in infos)
  assert '2 dataset(s) in' in result.stderr
  # A bad SPEC after a good one still fails as a whole, naming the bad one.
  bad = _run(first, str(tmp_path / 'nope.hdf5'))
  assert bad.returncode == 1 and bad.stdout == ''
  assert 'nope.hdf5' in bad.stderr
