"""Tests of distill/envs/datasets.py: every spec kind reaches its loader."""

import h5py
import numpy as np
import pytest

from distill.data import d4rl
from distill.envs import datasets
from distill.envs import suite


def test_suite_spec_goes_to_the_generator_and_is_validated(monkeypatch):
  calls = []

  def load(task, quality, num_transitions=None):
    calls.append((task, quality, num_transitions))
    rng = np.random.default_rng(2)
    return {'observations': rng.normal(size=(5, 17)),
            'actions': np.full((5, 6), 1.5), 'rewards': np.zeros(5),
            'terminals': np.zeros(5, bool), 'timeouts': np.zeros(5, bool)}

  monkeypatch.setattr(suite, 'load', load)
  with pytest.raises(d4rl.DatasetError,
                     match="suite:halfcheetah-backward-medium: key 'actions'"):
    datasets.load_dataset('suite:halfcheetah-backward-medium')
  assert calls == [('halfcheetah-backward', 'medium', None)]
  with pytest.warns(UserWarning):
    data = datasets.load_dataset('suite:hopper-mixed', clip_actions=True,
                                 suite_transitions=5)
  assert calls[-1] == ('hopper', 'mixed', 5)
  assert data['actions'].max() == 1.0
  with pytest.raises(d4rl.DatasetError, match='suite:<task>-<quality>'):
    datasets.load_dataset('suite:hopper')
  assert len(calls) == 2


def test_unknown_suite_task_names_the_valid_ones(tmp_path, monkeypatch):
  monkeypatch.setenv('DISTILL_DATA_DIR', str(tmp_path))
  with pytest.raises(d4rl.DatasetError, match='valid: halfcheetah-forward'):
    datasets.load_dataset('suite:cheetah-medium')


def test_file_spec_goes_to_sources(tmp_path):
  path = str(tmp_path / 'hopper_medium-v2.hdf5')
  with h5py.File(path, 'w') as f:
    f['observations'] = np.zeros((4, 3))
    f['actions'] = np.full((4, 2), 2.0)
    f['rewards'] = np.arange(4.0)
    f['terminals'] = np.eye(4, dtype=bool)[1]
    f['timeouts'] = np.zeros(4, bool)
  with pytest.raises(d4rl.DatasetError, match="hopper_medium-v2.hdf5: key"
                     " 'actions'"):
    datasets.load_dataset(path)
  with pytest.warns(UserWarning):
    data = datasets.load_dataset(path, clip_actions=True,
                                 suite_transitions=99)
  np.testing.assert_array_equal(data['rewards'], np.arange(4.0))
  assert data['actions'].max() == 1.0
  with pytest.raises(d4rl.DatasetError, match='no such file'):
    datasets.load_dataset(str(tmp_path / 'missing.hdf5'))
