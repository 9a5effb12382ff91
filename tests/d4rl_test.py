"""Tests for distill.data.d4rl on small D4RL-format files made with h5py."""

import hashlib
import os
import warnings

import h5py
import numpy as np
import pytest

from distill.data import d4rl


def make_arrays(n=30, obs_dim=4, act_dim=2, seed=0, ends=(9, 19)):
  rng = np.random.default_rng(seed)
  terminals = np.zeros(n, np.float32)
  timeouts = np.zeros(n, bool)
  terminals[ends[0]] = 1.0
  timeouts[ends[1]] = True
  return {
      'observations': rng.normal(size=(n, obs_dim)),
      'actions': rng.uniform(-1, 1, size=(n, act_dim)).astype(np.float32),
      'rewards': rng.normal(size=(n, 1)).astype(np.float32),
      'terminals': terminals,
      'timeouts': timeouts,
  }


def write_raw(path, arrays, infos=True):
  """Writes a D4RL-style file with h5py directly (not with write_hdf5)."""
  with h5py.File(path, 'w') as f:
    for key, value in arrays.items():
      f.create_dataset(key, data=value)
    if infos:
      n = len(arrays['rewards'])
      f.create_dataset('infos/qpos', data=np.arange(n * 3.0).reshape(n, 3))
      f.create_dataset('infos/goal', data=np.ones((n, 2)))
      f.create_dataset('metadata/algorithm', data='SAC')
      f.create_dataset('metadata/policy/nonlinearity', data='relu')
      f.create_dataset('metadata/iteration', data=7)
  return path


def digest(path):
  with open(path, 'rb') as f:
    return hashlib.sha256(f.read()).hexdigest()


def test_load_hdf5_reads_keys_infos_metadata_and_squeezes(tmp_path):
  arrays = make_arrays()
  path = write_raw(tmp_path / 'hopper_medium-v2.hdf5', arrays)
  data = d4rl.load_hdf5(path)
  assert data['observations'].dtype == np.float32
  assert data['observations'].shape == (30, 4)
  assert data['actions'].shape == (30, 2)
  assert data['rewards'].shape == (30,) and data['rewards'].dtype == np.float32
  assert data['terminals'].dtype == bool and data['terminals'].shape == (30,)
  assert data['timeouts'].dtype == bool
  np.testing.assert_allclose(data['rewards'], arrays['rewards'][:, 0])
  np.testing.assert_allclose(data['observations'], arrays['observations'],
                             rtol=1e-6)
  assert data['terminals'][9] and data['terminals'].sum() == 1
  assert data['infos/qpos'].shape == (30, 3)
  assert data['infos/goal'].shape == (30, 2)
  assert data['metadata/algorithm'] == 'SAC'
  assert data['metadata/policy/nonlinearity'] == 'relu'
  assert data['metadata/iteration'] == 7


def test_load_hdf5_without_timeouts_splits_on_terminals(tmp_path):
  arrays = make_arrays()
  del arrays['timeouts']
  path = write_raw(tmp_path / 'old.hdf5', arrays, infos=False)
  data = d4rl.load_hdf5(path)
  assert not data['timeouts'].any()
  bounds = d4rl.episode_bounds(data['terminals'], data['timeouts'])
  np.testing.assert_array_equal(bounds, [[0, 10], [10, 30]])
  np.testing.assert_array_equal(d4rl.episode_bounds(data['terminals']),
                                [[0, 10], [10, 30]])


def test_episode_bounds():
  terminals = np.array([0, 0, 1, 0, 0, 0, 0, 1], bool)
  timeouts = np.array([0, 0, 0, 0, 1, 0, 0, 0], bool)
  np.testing.assert_array_equal(
      d4rl.episode_bounds(terminals, timeouts), [[0, 3], [3, 5], [5, 8]])
  # Trailing unfinished episode is kept.
  terminals[-1] = False
  np.testing.assert_array_equal(
      d4rl.episode_bounds(terminals, timeouts), [[0, 3], [3, 5], [5, 8]])
  # No episode end at all: one unfinished episode.
  np.testing.assert_array_equal(d4rl.episode_bounds(np.zeros(4, bool)),
                                [[0, 4]])
  # A terminal and a timeout on the same step end one episode, not two.
  np.testing.assert_array_equal(
      d4rl.episode_bounds(np.array([1, 0, 1]), np.array([1, 0, 0])),
      [[0, 1], [1, 3]])
  assert d4rl.episode_bounds(np.array([1, 0, 0, 1])).dtype == np.int64


def _broken(kind):
  arrays = make_arrays()
  if kind == 'missing':
    del arrays['actions']
    return arrays, 'actions', 'missing'
  if kind == 'length':
    arrays['rewards'] = arrays['rewards'][:-3]
    return arrays, 'rewards', 'lengths differ'
  if kind == 'nan':
    arrays['observations'][5, 1] = np.nan
    return arrays, 'observations', 'NaN'
  if kind == 'inf':
    arrays['rewards'][7] = np.inf
    return arrays, 'rewards', 'Inf'
  if kind == 'rank_obs':
    arrays['observations'] = arrays['observations'][:, 0]
    return arrays, 'observations', 'rank 1'
  if kind == 'rank_rewards':
    arrays['rewards'] = np.ones((30, 2))
    return arrays, 'rewards', 'rank 2'
  if kind == 'empty':
    arrays = {k: v[:0] for k, v in arrays.items()}
    return arrays, 'observations', 'zero transitions'
  if kind == 'actions_range':
    arrays['actions'][3, 0] = 1.5
    return arrays, 'actions', 'outside [-1, 1]'
  if kind == 'flags':
    arrays['terminals'][4] = 2.0
    return arrays, 'terminals', 'only 0/1'
  raise ValueError(kind)


@pytest.mark.parametrize('kind', [
    'missing', 'length', 'nan', 'inf', 'rank_obs', 'rank_rewards', 'empty',
    'actions_range', 'flags'])
def test_bad_input_is_refused_naming_file_key_problem(tmp_path, kind):
  arrays, key, problem = _broken(kind)
  path = write_raw(tmp_path / f'{kind}.hdf5', arrays)
  before = digest(path)
  mtime = os.stat(path).st_mtime_ns
  with pytest.raises(d4rl.DatasetError) as info:
    d4rl.load_hdf5(path)
  message = str(info.value)
  assert str(path) in message
  assert repr(key) in message
  assert problem in message
  assert digest(path) == before
  assert os.stat(path).st_mtime_ns == mtime


def test_missing_and_non_hdf5_files(tmp_path):
  with pytest.raises(d4rl.DatasetError, match='no such file'):
    d4rl.load_hdf5(tmp_path / 'nope.hdf5')
  bad = tmp_path / 'text.hdf5'
  bad.write_text('not hdf5')
  with pytest.raises(d4rl.DatasetError, match='cannot be read as HDF5'):
    d4rl.load_hdf5(bad)
  assert bad.read_text() == 'not hdf5'


def test_clip_actions_warns_and_clips(tmp_path):
  arrays, _, _ = _broken('actions_range')
  arrays['actions'][4, 1] = -3.0
  path = write_raw(tmp_path / 'clip.hdf5', arrays)
  before = digest(path)
  with pytest.warns(UserWarning, match=r"'actions'.*2 action values.*clipping"):
    data = d4rl.load_hdf5(path, clip_actions=True)
  assert data['actions'][3, 0] == 1.0 and data['actions'][4, 1] == -1.0
  assert np.abs(data['actions']).max() <= 1.0
  assert digest(path) == before


def test_validate_does_not_modify_input_and_passes_other_keys():
  arrays = make_arrays()
  arrays['actions'][0, 0] = 2.0
  copy = {k: v.copy() for k, v in arrays.items()}
  arrays['infos/x'] = np.zeros(30)
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    out = d4rl.validate(arrays, source='mem', clip_actions=True)
  for k, v in copy.items():
    np.testing.assert_array_equal(arrays[k], v)
  assert out['infos/x'] is arrays['infos/x']
  assert out['actions'][0, 0] == 1.0


def test_write_hdf5_round_trip(tmp_path):
  arrays = make_arrays()
  arrays['infos/qpos'] = np.ones((30, 3))
  arrays['metadata/algorithm'] = 'SAC'
  path = tmp_path / 'sub' / 'out.hdf5'
  d4rl.write_hdf5(path, arrays, attrs={'task': 'hopper', 'quality': 'medium'})
  data = d4rl.load_hdf5(path)
  np.testing.assert_allclose(data['observations'], arrays['observations'],
                             rtol=1e-6)
  np.testing.assert_array_equal(data['timeouts'], arrays['timeouts'])
  assert data['metadata/algorithm'] == 'SAC'
  np.testing.assert_array_equal(data['infos/qpos'], np.ones((30, 3)))
  with h5py.File(path, 'r') as f:
    assert f.attrs['task'] == 'hopper'
  assert os.listdir(tmp_path / 'sub') == ['out.hdf5']


class _Boom:
  """An array-like that fails when h5py converts it."""

  def __array__(self, dtype=None, copy=None):
    raise RuntimeError('boom mid-write')


def test_write_hdf5_is_atomic(tmp_path):
  path = tmp_path / 'data.hdf5'
  d4rl.write_hdf5(path, make_arrays(seed=1))
  before = digest(path)
  arrays = make_arrays(seed=2)
  arrays['zz_late'] = _Boom()  # After the real keys were written.
  with pytest.raises(RuntimeError, match='boom mid-write'):
    d4rl.write_hdf5(path, arrays)
  assert digest(path) == before
  assert os.listdir(tmp_path) == ['data.hdf5']
  np.testing.assert_allclose(
      d4rl.load_hdf5(path)['observations'],
      make_arrays(seed=1)['observations'], rtol=1e-6)


def test_damaged_bytes_in_a_written_file_are_refused_not_read(tmp_path):
  # write_hdf5 stores Fletcher-32 checksums: random bytes inside an array
  # fail to read instead of reading as other numbers.
  path = tmp_path / 'data.hdf5'
  arrays = make_arrays(n=4000, obs_dim=8)
  d4rl.write_hdf5(path, arrays)
  with h5py.File(path, 'r') as f:
    offset = f['observations'].id.get_offset() or f[
        'observations'].id.get_chunk_info(0).byte_offset
  with open(path, 'r+b') as f:
    f.seek(offset + 1000)
    f.write(b'\0' * 256)  # A zeroed block.
  with pytest.raises(d4rl.DatasetError, match='data.hdf5: cannot be read'):
    d4rl.load_hdf5(path)


def test_hdf5_shapes_reads_no_data_and_names_the_problem(tmp_path):
  path = write_raw(tmp_path / 'd.hdf5', make_arrays(n=30, obs_dim=4))
  assert d4rl.hdf5_shapes(path) == {
      'observations': (30, 4), 'actions': (30, 2), 'rewards': (30, 1),
      'terminals': (30,), 'timeouts': (30,)}
  arrays = make_arrays()
  del arrays['rewards']
  with pytest.raises(d4rl.DatasetError, match="key 'rewards': missing"):
    d4rl.hdf5_shapes(write_raw(tmp_path / 'e.hdf5', arrays, infos=False))
  (tmp_path / 'f.hdf5').write_bytes(b'\0' * 100)
  with pytest.raises(d4rl.DatasetError, match='f.hdf5: cannot be read'):
    d4rl.hdf5_shapes(tmp_path / 'f.hdf5')


def test_data_sha256_depends_on_values_not_on_the_file(tmp_path):
  arrays = make_arrays()
  d4rl.write_hdf5(tmp_path / 'a.hdf5', arrays)
  write_raw(tmp_path / 'b.hdf5', arrays, infos=False)  # No checksums.
  assert digest(tmp_path / 'a.hdf5') != digest(tmp_path / 'b.hdf5')
  a, b = (d4rl.load_hdf5(tmp_path / n) for n in ('a.hdf5', 'b.hdf5'))
  assert d4rl.data_sha256(a) == d4rl.data_sha256(b)
  b['rewards'] = b['rewards'] + 1e-3
  assert d4rl.data_sha256(a) != d4rl.data_sha256(b)
