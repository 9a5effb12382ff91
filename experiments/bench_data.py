r"""Measures jitted Decision Transformer segment sampling against a train step.

  python -m experiments.bench_data
  python -m experiments.bench_data --transitions=200000 --seconds=2

Synthetic data (no files): a 1M-transition single task (17 obs / 6 act,
1000-step episodes) and a 4-task source of the same total size with the
suite's dims (17/6, 17/6, 11/3, 17/6). Prints segments/s of one jitted
`sample_*_batch` call per batch (batch 64, K=20), and the ratio to what a
paper-size DT train step consumes (64 segments per ~0.2 s on a 2-core CPU,
i.e. 320 segments/s; README's Benchmarks).
"""

import time

from absl import app
from absl import flags
import jax
import numpy as np

from distill.data import d4rl
from distill.data import segments

_TRANSITIONS = flags.DEFINE_integer(
    'transitions', 1_000_000, 'Transitions in each source (all tasks).')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 64, 'Segments per batch.')
_CONTEXT_LEN = flags.DEFINE_integer('context_len', 20, 'K.')
_SECONDS = flags.DEFINE_float('seconds', 3.0, 'Timing duration per case.')
_STEP_SECONDS = flags.DEFINE_float(
    'train_step_seconds', 0.2, 'Time of one train step that the sampler feeds.')

_SUITE_DIMS = ((17, 6), (17, 6), (11, 3), (17, 6))


def synthetic(n: int, obs_dim: int, act_dim: int, seed: int) -> dict:
  rng = np.random.default_rng(seed)
  timeouts = np.zeros(n, bool)
  timeouts[999::1000] = True
  return d4rl.validate({
      'observations': rng.normal(size=(n, obs_dim)).astype(np.float32),
      'actions': rng.uniform(-1, 1, size=(n, act_dim)).astype(np.float32),
      'rewards': rng.normal(size=n).astype(np.float32),
      'terminals': np.zeros(n, bool),
      'timeouts': timeouts,
  }, source=f'synthetic-{seed}')


def time_sampler(sample, source, seconds: float) -> float:
  """Segments/s of `sample(source, key)` with a blocking fetch per call."""
  batch = jax.block_until_ready(sample(source, jax.random.key(0)))  # Compile.
  batch_size = batch.task.shape[0]
  calls, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    jax.block_until_ready(sample(source, jax.random.key(calls)))
    calls += 1
  return calls * batch_size / (time.perf_counter() - start)


def main(argv):
  del argv
  n, b, k = _TRANSITIONS.value, _BATCH_SIZE.value, _CONTEXT_LEN.value
  need = b / _STEP_SECONDS.value
  kw = dict(context_len=k, rtg_scale=1000.0, max_timestep=1000)
  single = segments.make_segment_source([synthetic(n, 17, 6, 0)], **kw)
  multi = segments.make_segment_source(
      [synthetic(n // 4, o, a, i + 1) for i, (o, a) in enumerate(_SUITE_DIMS)],
      **kw)
  task_fn = jax.jit(
      lambda source, key: segments.sample_task_batch(source, key, 0, b))
  mixed_fn = jax.jit(
      lambda source, key: segments.sample_mixed_batch(source, key, b))
  print(f'device: {jax.devices()[0]}; batch {b}, K={k}; a train step needs '
        f'{need:.0f} segments/s ({b} per {_STEP_SECONDS.value} s)')
  for name, fn, source in (
      (f'1 task, {n} transitions, sample_task_batch', task_fn, single),
      (f'4 tasks, {n} transitions, sample_task_batch', task_fn, multi),
      (f'4 tasks, {n} transitions, sample_mixed_batch', mixed_fn, multi)):
    rate = time_sampler(fn, source, _SECONDS.value)
    print(f'{name}: {rate:,.0f} segments/s = {rate / need:,.0f}x a train '
          f'step\'s need ({1e6 * b / rate:.0f} us per batch)')


if __name__ == '__main__':
  app.run(main)
