"""Tests for distill.data.sources: HDF5 paths, d4rl:, minari: specs."""

import os
import subprocess
import sys
import types

import h5py
import numpy as np
import pytest

from distill.data import d4rl
from distill.data import sources


def _write(path, n=12, act_scale=1.0):
  rng = np.random.default_rng(0)
  terminals = np.zeros(n, bool)
  terminals[4] = True
  with h5py.File(path, 'w') as f:
    f['observations'] = rng.normal(size=(n, 3))
    f['actions'] = act_scale * rng.uniform(-1, 1, size=(n, 2))
    f['rewards'] = rng.normal(size=n)
    f['terminals'] = terminals
    f['timeouts'] = np.zeros(n, bool)
  return str(path)


def test_path_spec(tmp_path):
  path = _write(tmp_path / 'hopper_medium-v2.hdf5')
  data = sources.load_dataset(path)
  assert data['observations'].shape == (12, 3)
  bad = _write(tmp_path / 'bad.hdf5', act_scale=3.0)
  with pytest.raises(d4rl.DatasetError, match=r"bad.hdf5: key 'actions'"):
    sources.load_dataset(bad)
  with pytest.warns(UserWarning, match='clipping'):
    data = sources.load_dataset(bad, clip_actions=True)
  assert np.abs(data['actions']).max() <= 1.0


def test_missing_path_names_spec_kinds(tmp_path):
  with pytest.raises(d4rl.DatasetError, match=r"no such file.*minari:<id>"):
    sources.load_dataset(str(tmp_path / 'missing.hdf5'))


def test_d4rl_spec_when_d4rl_import_raises_plain_exception(
    tmp_path, monkeypatch):
  # mujoco-py raises a plain Exception (not ImportError) without MuJoCo 2.1.
  (tmp_path / 'gym.py').write_text('def make(name):\n  raise AssertionError\n')
  (tmp_path / 'd4rl.py').write_text(
      "raise Exception('missing MuJoCo 2.1 binaries')\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  monkeypatch.delitem(sys.modules, 'gym', raising=False)
  monkeypatch.delitem(sys.modules, 'd4rl', raising=False)
  monkeypatch.delenv('D4RL_SUPPRESS_IMPORT_ERROR', raising=False)
  with pytest.raises(d4rl.DatasetError) as info:
    sources.load_dataset('d4rl:hopper-medium-v2')
  message = str(info.value)
  assert message.startswith('d4rl:hopper-medium-v2: ')
  assert 'missing MuJoCo 2.1 binaries' in message
  assert '.[d4rl]' in message and '~/.d4rl/datasets' in message
  assert os.environ['D4RL_SUPPRESS_IMPORT_ERROR'] == '1'


def test_d4rl_spec_loads_through_gym_make(monkeypatch):
  rng = np.random.default_rng(1)
  dataset = {
      'observations': rng.normal(size=(6, 11)),
      'actions': rng.uniform(-1, 1, size=(6, 3)),
      'rewards': rng.normal(size=(6, 1)),
      'terminals': np.array([0, 0, 1, 0, 0, 0], np.float32),
      'timeouts': np.zeros(6, bool),
      'infos/qpos': np.zeros((6, 6)),
  }
  made = []

  def make(name):
    made.append(name)
    return types.SimpleNamespace(get_dataset=lambda: dataset)

  monkeypatch.setitem(sys.modules, 'gym', types.SimpleNamespace(make=make))
  monkeypatch.setitem(sys.modules, 'd4rl', types.ModuleType('d4rl'))
  data = sources.load_dataset('d4rl:hopper-medium-v2')
  assert made == ['hopper-medium-v2']
  assert data['rewards'].shape == (6,)
  assert data['infos/qpos'].shape == (6, 6)
  dataset['actions'] = dataset['actions'] * 4
  with pytest.raises(d4rl.DatasetError,
                     match=r"d4rl:hopper-medium-v2: key 'actions'"):
    sources.load_dataset('d4rl:hopper-medium-v2')


def _collect_minari(dataset_id, num_steps, rescale=True, max_steps=15):
  import gymnasium as gym  # pylint: disable=g-import-not-at-top
  from minari import DataCollector  # pylint: disable=g-import-not-at-top
  env = gym.make('Pendulum-v1', max_episode_steps=max_steps)
  if rescale:
    env = gym.wrappers.RescaleAction(env, -1.0, 1.0)
  env = DataCollector(env, record_infos=False)
  env.reset(seed=0)
  env.action_space.seed(0)
  for _ in range(num_steps):
    _, _, terminated, truncated, _ = env.step(env.action_space.sample())
    if terminated or truncated:
      env.reset()
  dataset = env.create_dataset(dataset_id, algorithm_name='random')
  env.close()
  return dataset


@pytest.mark.filterwarnings('ignore::UserWarning')
def test_minari_round_trip(tmp_path, monkeypatch):
  pytest.importorskip('minari')
  monkeypatch.setenv('MINARI_DATASETS_PATH', str(tmp_path))
  # 40 steps of 15-step episodes: 15 + 15 + an unfinished 10 (which minari
  # stores as truncated).
  dataset = _collect_minari('test/pendulum/random-v0', 40)
  episodes = list(dataset.iterate_episodes())
  data = sources.load_dataset('minari:test/pendulum/random-v0')
  assert data['observations'].shape == (40, 3)
  assert data['actions'].shape == (40, 1)
  np.testing.assert_allclose(
      data['observations'],
      np.concatenate([ep.observations[:-1] for ep in episodes]), rtol=1e-6)
  np.testing.assert_allclose(
      data['actions'], np.concatenate([ep.actions for ep in episodes]),
      rtol=1e-6)
  np.testing.assert_allclose(
      data['rewards'], np.concatenate([ep.rewards for ep in episodes]),
      rtol=1e-6)
  assert not data['terminals'].any()
  np.testing.assert_array_equal(np.flatnonzero(data['timeouts']),
                                [14, 29, 39])
  np.testing.assert_array_equal(
      d4rl.episode_bounds(data['terminals'], data['timeouts']),
      [[0, 15], [15, 30], [30, 40]])


@pytest.mark.filterwarnings('ignore::UserWarning')
def test_minari_out_of_range_actions_refused_or_clipped(tmp_path, monkeypatch):
  pytest.importorskip('minari')
  monkeypatch.setenv('MINARI_DATASETS_PATH', str(tmp_path))
  _collect_minari('test/pendulum/raw-v0', 20, rescale=False)  # [-2, 2].
  with pytest.raises(d4rl.DatasetError,
                     match=r"minari:test/pendulum/raw-v0: key 'actions'"):
    sources.load_dataset('minari:test/pendulum/raw-v0')
  data = sources.load_dataset('minari:test/pendulum/raw-v0', clip_actions=True)
  assert np.abs(data['actions']).max() <= 1.0


def test_minari_missing_dataset_names_id_and_directory(tmp_path, monkeypatch):
  monkeypatch.setenv('MINARI_DATASETS_PATH', str(tmp_path / 'root'))
  with pytest.raises(d4rl.DatasetError) as info:
    sources.load_dataset('minari:mujoco/hopper/medium-v0')
  message = str(info.value)
  assert "'mujoco/hopper/medium-v0'" in message
  assert str(tmp_path / 'root' / 'mujoco/hopper/medium-v0') in message
  # Nothing created (minari would create the root directory).
  assert not (tmp_path / 'root').exists()


def test_minari_converter_marks_unended_middle_episode():
  def ep(i, n, term, trunc):
    return types.SimpleNamespace(
        id=i, observations=np.zeros((n + 1, 2)), actions=np.zeros((n, 1)),
        rewards=np.ones(n), terminations=np.eye(n, dtype=bool)[-1] * term,
        truncations=np.eye(n, dtype=bool)[-1] * trunc,
        infos={'x': np.arange(n + 1.0)})

  data = sources._minari_to_d4rl(
      [ep(0, 3, True, False), ep(1, 2, False, False), ep(2, 2, False, False)],
      'spec')
  np.testing.assert_array_equal(data['terminals'], [0, 0, 1, 0, 0, 0, 0])
  np.testing.assert_array_equal(data['timeouts'], [0, 0, 0, 0, 1, 0, 0])
  np.testing.assert_array_equal(data['infos/x'], [0, 1, 2, 0, 1, 0, 1])
  np.testing.assert_array_equal(
      d4rl.episode_bounds(data['terminals'], data['timeouts']),
      [[0, 3], [3, 5], [5, 7]])


def test_suite_spec_is_refused_with_the_loader_to_use():
  with pytest.raises(d4rl.DatasetError,
                     match='suite:hopper-medium: .*distill.envs.datasets'):
    sources.load_dataset('suite:hopper-medium')


def test_data_package_does_not_import_envs_or_behavior_policies():
  # Layering: distill.data sits below distill.envs (distill/envs/datasets.py).
  code = ('import sys; import distill.data.d4rl, distill.data.scores,'
          ' distill.data.segments, distill.data.sources, distill.data.summary;'
          ' print([m for m in sys.modules if m.startswith("distill.")'
          ' and not m.startswith("distill.data")])')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                       text=True, check=True, timeout=120).stdout
  assert out.strip() == "['distill.io', 'distill.io.fileio']"
