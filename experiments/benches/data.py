"""Bench section `data`: jitted segment sampling against a train step.

Synthetic data (no files): a single task of `transitions` transitions
(17 obs / 6 act, 1000-step episodes) and a 4-task source of the same total
size with the suite's sizes. One `sampler` line per case: segments/s of one
jitted `sample_*_batch` call per batch, and the ratio to what a train step
of `train_step_seconds` consumes (a paper-size DT train step took ~0.2 s
per batch of 64 on a 2-core CPU: 320 segments/s).
"""

import time

import jax

from distill.data import d4rl
from distill.data import segments
from experiments.benches import common


def synthetic(n: int, obs_dim: int, act_dim: int, seed: int) -> dict:
  """One validated synthetic task (timeouts every 1000 steps)."""
  data = common.synthetic_datasets([(obs_dim, act_dim)], n, seed=seed,
                                   actions='uniform')[0]
  return d4rl.validate(data, source=f'synthetic-{seed}')


def time_sampler(sample, source, seconds: float) -> float:
  """Segments/s of `sample(source, key)` with a blocking fetch per call."""
  batch = jax.block_until_ready(sample(source, jax.random.key(0)))  # Compile.
  batch_size = batch.task.shape[0]
  calls, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    jax.block_until_ready(sample(source, jax.random.key(calls)))
    calls += 1
  return calls * batch_size / (time.perf_counter() - start)


def bench_data(transitions, batch_size, context_len, seconds,
               train_step_seconds):
  """The `sampler` lines (see the module docstring)."""
  n, b = transitions, batch_size
  need = b / train_step_seconds
  kw = dict(context_len=context_len, rtg_scale=1000.0, max_timestep=1000)
  single = segments.make_segment_source([synthetic(n, 17, 6, 0)], **kw)
  multi = segments.make_segment_source(
      [synthetic(n // 4, o, a, i + 1)
       for i, (o, a) in enumerate(common.SUITE_DIMS)], **kw)
  task_fn = jax.jit(
      lambda source, key: segments.sample_task_batch(source, key, 0, b))
  mixed_fn = jax.jit(
      lambda source, key: segments.sample_mixed_batch(source, key, b))
  for tasks, fn_name, fn, source in (
      (1, 'sample_task_batch', task_fn, single),
      (4, 'sample_task_batch', task_fn, multi),
      (4, 'sample_mixed_batch', mixed_fn, multi)):
    rate = time_sampler(fn, source, seconds)
    common.emit('sampler', tasks=tasks, transitions=n, sampler=fn_name,
                batch=b, context=context_len,
                segments_per_s=round(rate),
                us_per_batch=round(1e6 * b / rate),
                train_step_segments_per_s=round(need),
                ratio=round(rate / need, 1),
                baseline=f'a train step: {b} segments per'
                f' {train_step_seconds} s')
