"""Bench section `scale`: populations and devices, wall-time ratios.

- `population`: distilling a population of `members` seeds in one program
  (the step vmapped over a leading population axis; one compilation)
  against the same members distilled one after another (one program each),
  the same `steps` steps of the config's student on the same synthetic
  4-task data (the suite's sizes; the config's tasks replaced by four),
  compilation included, as a run would pay it. Target: ratio <= 0.5. The
  population program is built both ways (`config.mesh.members`): 'map'
  (members in turn; the CPU default) and 'vmap' (batched; the accelerators'
  default), each line saying which is the default here. Printed on one
  device, and (in a child process with one forced CPU device per core,
  `population_devices`) with the population axis split over those devices,
  each member group on its own core; the sequential runs use one device in
  both.
- `devices`: the distillation step on 1, 2 and 4 forced CPU devices (data
  parallel over 'data'), each in a child process. Forced CPU devices share
  the same cores, so this checks that the sharded step runs, not speed.

A child is `python -m experiments.bench --only=scale` with
`--scale_child_devices=N` or `--scale_child_population_devices=N` and
XLA's forced host device count; its lines are printed as they are.
"""

import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from distill.data import segments
from distill.models import model as model_lib
from distill.train import parallel
from distill.train import student as student_lib
from experiments.benches import common


def source(config, n=20_000, seed=0):
  """The synthetic 4-task segment source (the suite's sizes)."""
  return segments.make_segment_source(
      common.synthetic_datasets(common.SUITE_DIMS, n, seed=seed,
                                end='terminals', actions='uniform'),
      context_len=config.data.context_len,
      rtg_scale=config.data.rtg_scale, max_timestep=config.data.max_timestep)


def _member(config, data, seed, steps, placement=None):
  """(step, state, teacher_params_T, pool) of one seed."""
  dims = common.SUITE_DIMS
  key = jax.random.key(seed)
  teacher, teacher_params_T = common.random_teachers(config, data, key)
  student = model_lib.make_model(
      config.student.model, obs_dims=[d[0] for d in dims],
      act_dims=[d[1] for d in dims], context_len=config.data.context_len,
      max_timestep=config.data.max_timestep)
  selector = student_lib.make_selector(config.curriculum, len(dims),
                                       data.states.shape[1], key)
  optimizer = student_lib.make_optimizer(config, key)
  pool = student_lib.make_probe_pool(data, teacher, teacher_params_T, key,
                                     config.student.probe_pool)
  step = student_lib.make_multi_step(student_lib.make_distill_step(
      config, student, teacher, selector, optimizer, placement=placement),
                                     steps)
  return step, student_lib.init_state(student, selector, optimizer, key), (
      teacher_params_T), pool


def bench_population(config, steps, members, shards=1):
  """Sequential members vs one population program (on `shards` devices),
  the program built both ways (`config.mesh.members`: 'map', 'vmap')."""
  config = common.suite_config(config)
  data = source(config)
  built = [_member(config, data, seed, steps) for seed in range(members)]
  jax.block_until_ready([b[1:] for b in built])
  start = time.perf_counter()
  for step, state, teacher_params_T, pool in built:
    out, _ = jax.jit(step)(state, teacher_params_T, data, pool)
    jax.block_until_ready(out)
  sequential = time.perf_counter() - start
  stack = lambda *xs: jnp.stack(xs)
  states, teachers, pools = (jax.tree.map(stack, *[b[i] for b in built])
                             for i in (1, 2, 3))
  default = parallel.population_mode(config.get('mesh'))
  for mode in ('map', 'vmap'):
    population_step = student_lib.make_population_step(built[0][0], mode,
                                                       shards)
    if shards > 1:
      place = parallel.Placement(parallel.make_mesh(population=shards))
      member, rep = place.member_sharding, place.replicated_sharding
      fn = jax.jit(population_step,
                   in_shardings=(member, member, rep, member),
                   out_shardings=(member, member))
      args = (place.per_member(states), place.per_member(teachers),
              place.replicated(data), place.per_member(pools))
      jax.block_until_ready(args)
    else:
      fn, args = jax.jit(population_step), (states, teachers, data, pools)
    start = time.perf_counter()
    out, _ = fn(*args)
    jax.block_until_ready(out)
    population = time.perf_counter() - start
    common.emit('population', members=members, steps=steps,
                population_devices=shards, members_mode=mode,
                default_mode=mode == default,
                sequential_s=round(sequential, 3),
                population_s=round(population, 3),
                ratio=round(population / sequential, 3), target='<= 0.5',
                met=population / sequential <= 0.5)


def bench_devices(config, steps):
  """The `devices` line of this process's devices."""
  config = common.suite_config(config)
  data = source(config)
  place = parallel.Placement(parallel.make_mesh(population=1))
  step, state, teacher_params_T, pool = _member(config, data, 0, steps,
                                                placement=place)
  rep = place.replicated_sharding
  fn = jax.jit(step, in_shardings=rep, out_shardings=rep)
  args = place.replicated((state, teacher_params_T, data, pool))
  out, _ = fn(*args)  # Compiles.
  jax.block_until_ready(out)
  best = np.inf
  for _ in range(3):
    start = time.perf_counter()
    out, _ = fn(out, *args[1:])
    jax.block_until_ready(out)
    best = min(best, time.perf_counter() - start)
  common.emit('devices', devices=jax.device_count(),
              ms_per_step=round(best / steps * 1e3, 3),
              note='forced CPU devices share the same cores')


def bench_scale(config, steps, members, devices, population_devices,
                config_args):
  """`population` here and in a child, then `devices` in children.

  Args:
    config: the experiment config (its student, teacher and mesh).
    steps: distillation steps per member.
    members: population size.
    devices: forced CPU device counts of the `devices` lines.
    population_devices: forced CPU devices of the sharded population line
      (1 or less: not measured; only on CPU, with `members` a multiple).
    config_args: the command line's `--config...` arguments, for the
      children.
  """
  bench_population(config, steps, members)
  children = [(n, f'--scale_child_population_devices={n}')
              for n in [population_devices] if n > 1
              and jax.default_backend() == 'cpu' and members % n == 0]
  children += [(n, f'--scale_child_devices={n}') for n in devices]
  for n, child in children:
    # The caller's XLA flags stay; the device count is added to them.
    env = dict(os.environ, XLA_FLAGS=(
        os.environ.get('XLA_FLAGS', '')
        + f' --xla_force_host_platform_device_count={n}').strip())
    proc = subprocess.run(
        [sys.executable, '-m', 'experiments.bench', '--only=scale', child,
         f'--scale_steps={steps}', f'--scale_members={members}',
         *config_args], env=env, capture_output=True, text=True,
        check=False)
    if proc.returncode:
      raise RuntimeError(f'bench scale: {child} failed:\n'
                         f'{proc.stderr[-3000:]}')
    for line in proc.stdout.splitlines():
      if line.startswith('{'):
        print(line, flush=True)
