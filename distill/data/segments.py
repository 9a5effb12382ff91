"""Decision Transformer segments, sampled on the device under `jax.jit`.

A segment is up to K consecutive steps of one episode: (return-to-go, state,
action, timestep) per step. The start is uniform over a task's transitions,
so episodes are drawn in proportion to their length (as in the DT code); a
segment that would run past its episode's end is cut there and LEFT-padded
with zeros (valid steps right-aligned; position K-1 is the latest step), and
`mask` marks the real steps. Episodes shorter than K are included.

All tasks live in one `SegmentSource` of device arrays concatenated along
time; features are zero-padded to S = max obs dim and A = max act dim, so a
batch has one shape whatever the task, and `task` may be a traced scalar.
Pass the source to a jitted function as an argument (not by closure, which
would bake the whole dataset into the compiled program as a constant).

Letters: B batch, K context length, S state features, A action features,
N transitions (all tasks), T tasks, E episodes.
"""

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from distill.data import d4rl


class SegmentBatch(NamedTuple):
  rtg: jax.Array  # [B, K, 1] f32, return-to-go / rtg_scale.
  states: jax.Array  # [B, K, S] f32, normalized, zero-padded features.
  actions: jax.Array  # [B, K, A] f32, zero-padded features.
  timesteps: jax.Array  # [B, K] int32, step index within the episode.
  mask: jax.Array  # [B, K] f32, 1 for a real step, 0 for padding.
  task: jax.Array  # [B] int32.


class SegmentSource(NamedTuple):
  """Device arrays of T tasks' datasets, concatenated along time."""
  states: jax.Array  # [N, S] f32, normalized per task, zero-padded.
  actions: jax.Array  # [N, A] f32, zero-padded.
  rtg: jax.Array  # [N] f32, return-to-go / rtg_scale.
  timesteps: jax.Array  # [N] int32, clipped to max_timestep - 1.
  episode_end: jax.Array  # [N] int32, global end (exclusive) of the episode.
  offsets: jax.Array  # [T] int32, first transition of each task.
  sizes: jax.Array  # [T] int32, transitions of each task.
  obs_dims: jax.Array  # [T] int32.
  act_dims: jax.Array  # [T] int32.
  positions: jax.Array  # [K] int32, 0..K-1; its shape carries K under jit.


def state_stats(data: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
  """Mean and std of a dataset's observations, for state normalization.

  Args:
    data: a validated dataset (see `d4rl.validate`).

  Returns:
    (mean [S], std [S]) float32, where std already includes `+ 1e-6` so that
    `(obs - mean) / std` is safe for constant features (as in the DT code).
  """
  obs = np.asarray(data['observations'], dtype=np.float64)
  return (obs.mean(axis=0).astype(np.float32),
          (obs.std(axis=0) + 1e-6).astype(np.float32))


def _task_arrays(data: dict[str, Any], mean: np.ndarray, std: np.ndarray,
                 rtg_scale: float, max_timestep: int):
  """Per-step states, rtg, timesteps and episode end of one dataset."""
  bounds_Ex2 = d4rl.episode_bounds(data['terminals'], data.get('timeouts'))
  lengths_E = bounds_Ex2[:, 1] - bounds_Ex2[:, 0]
  end_N = np.repeat(bounds_Ex2[:, 1], lengths_E)
  start_N = np.repeat(bounds_Ex2[:, 0], lengths_E)
  rewards = np.asarray(data['rewards'], dtype=np.float64)
  # Suffix sums: rtg[i] = sum(rewards[i:end]) = suffix[i] - suffix[end].
  suffix = np.concatenate([np.cumsum(rewards[::-1])[::-1], [0.0]])
  rtg_N = (suffix[:-1] - suffix[end_N]) / rtg_scale
  timesteps_N = np.minimum(np.arange(len(rewards)) - start_N, max_timestep - 1)
  states = (np.asarray(data['observations'], np.float32) - mean) / std
  return states.astype(np.float32), rtg_N.astype(np.float32), timesteps_N, end_N


def make_segment_source(
    datasets: Sequence[dict[str, Any]], *, context_len: int, rtg_scale: float,
    max_timestep: int,
    stats: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
) -> SegmentSource:
  """Puts T tasks' datasets on the device for segment sampling.

  Args:
    datasets: validated datasets (see `d4rl.validate`), one per task.
    context_len: K, the segment length.
    rtg_scale: returns-to-go are divided by it (1000 in the DT paper).
    max_timestep: timesteps are clipped to `max_timestep - 1` (the size of the
      model's timestep embedding).
    stats: per-task (mean, std) for state normalization (e.g. a teacher's);
      default: each dataset's own `state_stats`.

  Returns:
    The `SegmentSource` with S = max obs dim and A = max act dim.
  """
  if not datasets:
    raise ValueError('make_segment_source: datasets is empty')
  if context_len < 1 or max_timestep < 1 or rtg_scale <= 0:
    raise ValueError(
        f'make_segment_source: need context_len >= 1, max_timestep >= 1, '
        f'rtg_scale > 0; got {context_len}, {max_timestep}, {rtg_scale}')
  if stats is not None and len(stats) != len(datasets):
    raise ValueError(f'make_segment_source: {len(stats)} stats for '
                     f'{len(datasets)} datasets')
  obs_dims = [np.shape(d['observations'])[1] for d in datasets]
  act_dims = [np.shape(d['actions'])[1] for d in datasets]
  s, a = max(obs_dims), max(act_dims)
  n_total = sum(len(d['rewards']) for d in datasets)
  if n_total >= np.iinfo(np.int32).max:
    raise ValueError(f'make_segment_source: {n_total} transitions overflow '
                     'int32 indices')
  states_NxS = np.zeros((n_total, s), np.float32)
  actions_NxA = np.zeros((n_total, a), np.float32)
  rtg_N = np.zeros(n_total, np.float32)
  timesteps_N = np.zeros(n_total, np.int32)
  end_N = np.zeros(n_total, np.int32)
  offsets, sizes = [], []
  offset = 0
  for t, data in enumerate(datasets):
    mean, std = stats[t] if stats is not None else state_stats(data)
    states, rtg, timesteps, end = _task_arrays(
        data, np.asarray(mean, np.float32), np.asarray(std, np.float32),
        rtg_scale, max_timestep)
    n = len(rtg)
    rows = slice(offset, offset + n)
    states_NxS[rows, :obs_dims[t]] = states
    actions_NxA[rows, :act_dims[t]] = data['actions']
    rtg_N[rows] = rtg
    timesteps_N[rows] = timesteps
    end_N[rows] = end + offset
    offsets.append(offset)
    sizes.append(n)
    offset += n

  def i32(x):
    return jnp.asarray(np.asarray(x, np.int32))

  return SegmentSource(
      states=jnp.asarray(states_NxS), actions=jnp.asarray(actions_NxA),
      rtg=jnp.asarray(rtg_N), timesteps=i32(timesteps_N),
      episode_end=i32(end_N), offsets=i32(offsets), sizes=i32(sizes),
      obs_dims=i32(obs_dims), act_dims=i32(act_dims),
      positions=i32(np.arange(context_len)))


def _gather(source: SegmentSource, start_B: jax.Array,
            task_B: jax.Array) -> SegmentBatch:
  """Segments starting at global indices `start_B`, left-padded to K."""
  k = source.positions.shape[0]
  length_B = jnp.minimum(source.episode_end[start_B] - start_B, k)
  pad_B = k - length_B
  # Position p holds step start + p - pad; positions before pad are padding.
  index_BxK = start_B[:, None] + source.positions[None, :] - pad_B[:, None]
  valid_BxK = source.positions[None, :] >= pad_B[:, None]
  index_BxK = jnp.where(valid_BxK, index_BxK, 0)
  mask_BxK = valid_BxK.astype(jnp.float32)
  return SegmentBatch(
      rtg=(source.rtg[index_BxK] * mask_BxK)[..., None],
      states=source.states[index_BxK] * mask_BxK[..., None],
      actions=source.actions[index_BxK] * mask_BxK[..., None],
      timesteps=jnp.where(valid_BxK, source.timesteps[index_BxK], 0),
      mask=mask_BxK,
      task=task_B.astype(jnp.int32))


def sample_task_batch(source: SegmentSource, key: jax.Array, task: Any,
                      batch_size: int) -> SegmentBatch:
  """Samples `batch_size` segments of one task.

  Args:
    source: from `make_segment_source`.
    key: a `jax.random.key`.
    task: task index (a Python int or a traced int32 scalar).
    batch_size: B (static).

  Returns:
    A `SegmentBatch` with every `task` entry equal to `task`.
  """
  task_B = jnp.full((batch_size,), task, dtype=jnp.int32)
  return _sample(source, key, task_B)


def sample_mixed_batch(source: SegmentSource, key: jax.Array,
                       batch_size: int) -> SegmentBatch:
  """Samples `batch_size` segments, the task of each uniform over tasks.

  Args:
    source: from `make_segment_source`.
    key: a `jax.random.key`.
    batch_size: B (static).

  Returns:
    A `SegmentBatch`; `task` says which task each segment came from.
  """
  task_key, key = jax.random.split(key)
  num_tasks = source.offsets.shape[0]
  task_B = jax.random.randint(task_key, (batch_size,), 0, num_tasks,
                              dtype=jnp.int32)
  return _sample(source, key, task_B)


def _sample(source: SegmentSource, key: jax.Array,
            task_B: jax.Array) -> SegmentBatch:
  # Uniform over the task's transitions = episodes in proportion to length.
  step_B = jax.random.randint(key, task_B.shape, 0, source.sizes[task_B],
                              dtype=jnp.int32)
  return _gather(source, source.offsets[task_B] + step_B, task_B)
