"""Tests for distill.data.segments against a naive NumPy construction."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill.data import d4rl
from distill.data import segments


def make_dataset(lengths, obs_dim, act_dim, seed, unfinished=False,
                 timeouts=True):
  """Episodes of the given lengths; observation feature 0 is the step index."""
  n = sum(lengths)
  rng = np.random.default_rng(seed)
  ends = np.cumsum(lengths) - 1
  terminals = np.zeros(n, bool)
  timeout = np.zeros(n, bool)
  for i, end in enumerate(ends):
    if unfinished and i == len(ends) - 1:
      continue
    if timeouts and i % 2:
      timeout[end] = True
    else:
      terminals[end] = True
  obs = rng.normal(size=(n, obs_dim)) * 3 + 1
  obs[:, 0] = np.arange(n)
  data = {
      'observations': obs,
      'actions': rng.uniform(-1, 1, size=(n, act_dim)),
      'rewards': rng.normal(size=n) + 1,
      'terminals': terminals,
  }
  if timeouts:
    data['timeouts'] = timeout
  return d4rl.validate(data, source='synthetic')


def naive_segment(data, start, k, rtg_scale, max_timestep, mean, std, s, a):
  """One segment as the DT reference code builds it (loops, float64)."""
  bounds = d4rl.episode_bounds(data['terminals'], data.get('timeouts'))
  ep_start, ep_end = next((b, e) for b, e in bounds if b <= start < e)
  steps = list(range(start, min(start + k, ep_end)))
  pad = k - len(steps)
  rewards = np.asarray(data['rewards'], np.float64)
  rtg = np.zeros((k, 1))
  states = np.zeros((k, s))
  actions = np.zeros((k, a))
  timesteps = np.zeros(k, np.int64)
  mask = np.zeros(k)
  obs_dim = data['observations'].shape[1]
  act_dim = data['actions'].shape[1]
  for p, j in enumerate(steps, start=pad):
    rtg[p, 0] = sum(rewards[j:ep_end]) / rtg_scale
    states[p, :obs_dim] = (data['observations'][j] - mean) / std
    actions[p, :act_dim] = data['actions'][j]
    timesteps[p] = min(j - ep_start, max_timestep - 1)
    mask[p] = 1
  return rtg, states, actions, timesteps, mask


# Jitted once per module; eager calls dispatch op by op and are slower.
sample_task = jax.jit(segments.sample_task_batch, static_argnums=3)
sample_mixed = jax.jit(segments.sample_mixed_batch, static_argnums=2)

K = 5
RTG_SCALE = 10.0
MAX_T = 8


@pytest.fixture(scope='module')
def datasets():
  return [
      # Episodes shorter than K, timeouts, a trailing unfinished episode.
      make_dataset([2, 3, 7, 12, 4], 4, 2, seed=0, unfinished=True),
      # Smaller dims, no timeouts key: splits on terminals only.
      make_dataset([1, 9, 6], 3, 1, seed=1, timeouts=False),
  ]


@pytest.fixture(scope='module')
def source(datasets):
  return segments.make_segment_source(
      datasets, context_len=K, rtg_scale=RTG_SCALE, max_timestep=MAX_T)


def check_against_naive(batch, datasets, stats):
  s = batch.states.shape[-1]
  a = batch.actions.shape[-1]
  batch = jax.tree.map(np.asarray, batch)
  for b in range(len(batch.task)):
    t = int(batch.task[b])
    mean, std = stats[t]
    first = int(np.argmax(batch.mask[b]))
    start = int(round(batch.states[b, first, 0] * std[0] + mean[0]))
    want = naive_segment(datasets[t], start, K, RTG_SCALE, MAX_T, mean, std,
                         s, a)
    got = (batch.rtg[b], batch.states[b], batch.actions[b],
           batch.timesteps[b], batch.mask[b])
    for name, g, w in zip(('rtg', 'states', 'actions', 'timesteps', 'mask'),
                          got, want):
      np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5,
                                 err_msg=f'{name} of element {b} (task {t})')


def test_state_stats(datasets):
  mean, std = segments.state_stats(datasets[0])
  obs = datasets[0]['observations'].astype(np.float64)
  assert mean.dtype == np.float32 and std.dtype == np.float32
  np.testing.assert_allclose(mean, obs.mean(0), rtol=1e-6)
  np.testing.assert_allclose(std, obs.std(0) + 1e-6, rtol=1e-6)
  const = dict(datasets[0], observations=np.ones((30, 2), np.float32))
  np.testing.assert_allclose(segments.state_stats(const)[1], 1e-6)


def test_mixed_batch_matches_naive(source, datasets):
  batch = sample_mixed(source, jax.random.key(0), 256)
  chex.assert_shape(batch.rtg, (256, K, 1))
  chex.assert_shape(batch.states, (256, K, 4))
  chex.assert_shape(batch.actions, (256, K, 2))
  chex.assert_shape([batch.timesteps, batch.mask], (256, K))
  chex.assert_shape(batch.task, (256,))
  assert batch.timesteps.dtype == jnp.int32 and batch.task.dtype == jnp.int32
  assert batch.mask.dtype == jnp.float32 and batch.rtg.dtype == jnp.float32
  assert set(np.asarray(batch.task)) == {0, 1}
  # Some segments are padded (short episodes), some are full.
  valid = np.asarray(batch.mask).sum(1)
  assert valid.min() == 1 and valid.max() == K
  stats = [segments.state_stats(d) for d in datasets]
  check_against_naive(batch, datasets, stats)


def test_left_padding_and_zero_pad_values(source):
  batch = jax.tree.map(np.asarray, sample_mixed(
      source, jax.random.key(1), 256))
  for b in range(256):
    m = batch.mask[b]
    pad = int(K - m.sum())
    np.testing.assert_array_equal(m, [0] * pad + [1] * (K - pad))
    assert not batch.states[b, :pad].any()
    assert not batch.actions[b, :pad].any()
    assert not batch.rtg[b, :pad].any()
    assert not batch.timesteps[b, :pad].any()
    # Consecutive timesteps within the valid part (until clipping).
    ts = batch.timesteps[b, pad:]
    np.testing.assert_array_equal(
        ts, np.minimum(ts[0] + np.arange(K - pad), MAX_T - 1))


def test_multitask_feature_padding_is_zero(source):
  batch = sample_task(source, jax.random.key(2), 1, 64)
  np.testing.assert_array_equal(batch.task, 1)
  assert not np.asarray(batch.states[..., 3:]).any()
  assert not np.asarray(batch.actions[..., 1:]).any()
  np.testing.assert_array_equal(source.obs_dims, [4, 3])
  np.testing.assert_array_equal(source.act_dims, [2, 1])
  np.testing.assert_array_equal(source.offsets, [0, 28])
  np.testing.assert_array_equal(source.sizes, [28, 16])


def test_task_batch_with_traced_task_compiles_once(source, datasets):
  @jax.jit
  @chex.assert_max_traces(n=1)
  def sample(source, key, task):
    return segments.sample_task_batch(source, key, task, 32)

  chex.clear_trace_counter()
  stats = [segments.state_stats(d) for d in datasets]
  for i, task in enumerate([0, 1, 0, 1]):
    batch = sample(source, jax.random.key(i), jnp.int32(task))
    np.testing.assert_array_equal(batch.task, task)
    check_against_naive(batch, datasets, stats)


def test_custom_stats_and_timestep_clipping(datasets):
  stats = [(np.full(4, 2.0, np.float32), np.full(4, 4.0, np.float32)),
           (np.zeros(3, np.float32), np.ones(3, np.float32))]
  source = segments.make_segment_source(
      datasets, context_len=K, rtg_scale=RTG_SCALE, max_timestep=3,
      stats=stats)
  batch = sample_mixed(source, jax.random.key(3), 256)
  assert int(batch.timesteps.max()) == 2
  np.testing.assert_allclose(
      source.states[:28, :4],
      (datasets[0]['observations'] - 2.0) / 4.0, rtol=1e-6)


def test_rtg_matches_episode_suffix_sums(source, datasets):
  data = datasets[0]
  rtg = np.asarray(source.rtg[:28])
  for start, end in d4rl.episode_bounds(data['terminals'], data['timeouts']):
    r = data['rewards'][start:end].astype(np.float64)
    np.testing.assert_allclose(rtg[start:end],
                               np.cumsum(r[::-1])[::-1] / RTG_SCALE,
                               rtol=1e-5, atol=1e-6)


def test_episodes_sampled_in_proportion_to_length():
  # Episodes of 10 and 90 steps: 10% / 90% of segment starts.
  data = make_dataset([10, 90], 2, 1, seed=3)
  other = make_dataset([1000], 2, 1, seed=4)
  source = segments.make_segment_source(
      [data, other], context_len=4, rtg_scale=1.0, max_timestep=1000)
  n = 20000
  batch = sample_task(source, jax.random.key(5), 0, n)
  stats = segments.state_stats(data)
  first = np.argmax(np.asarray(batch.mask), axis=1)
  starts = np.rint(np.asarray(batch.states)[np.arange(n), first, 0]
                   * stats[1][0] + stats[0][0]).astype(int)
  assert starts.min() >= 0 and starts.max() <= 99
  frac_long = (starts >= 10).mean()
  assert abs(frac_long - 0.9) < 0.015  # ~7 standard deviations.
  # Uniform over all 100 transitions.
  counts = np.bincount(starts, minlength=100)
  assert counts.min() > 0.6 * n / 100 and counts.max() < 1.4 * n / 100
  # Mixed batches: task uniform whatever the dataset sizes.
  mixed = sample_mixed(source, jax.random.key(6), n)
  assert abs(np.asarray(mixed.task).mean() - 0.5) < 0.02


def test_bad_arguments(datasets):
  with pytest.raises(ValueError, match='empty'):
    segments.make_segment_source([], context_len=2, rtg_scale=1.0,
                                 max_timestep=10)
  with pytest.raises(ValueError, match='context_len'):
    segments.make_segment_source(datasets, context_len=0, rtg_scale=1.0,
                                 max_timestep=10)
  with pytest.raises(ValueError, match='stats'):
    segments.make_segment_source(datasets, context_len=2, rtg_scale=1.0,
                                 max_timestep=10, stats=[(0.0, 1.0)])
