r"""Populations and devices: wall-time ratios measured in one run.

  python -m experiments.bench_scale
  python -m experiments.bench_scale --config=configs/mt_distill.py:paper

Prints JSON lines, one per figure, each naming the device:

- `population`: distilling a population of `--members` seeds in one program
  (the step vmapped over a leading population axis; one compilation) against
  the same members distilled one after another (one program each), the same
  `--steps` steps of the config's student on the same synthetic 4-task data
  (the suite's sizes), compilation included, as a run would pay it. Target:
  ratio <= 0.5. The population program is built both ways
  (`config.mesh.members`): 'map' (members in turn; the CPU default) and
  'vmap' (batched; the accelerators' default), each line saying which is
  the default here. Printed on one device, and (in a child process with one
  forced CPU device per core, `--population_devices`) with the population
  axis split over those devices, each member group on its own core; the
  sequential runs use one device in both.
- `devices`: the distillation step on 1, 2 and 4 forced CPU devices (data
  parallel over 'data'), each in a child process. Forced CPU devices share
  the same cores, so this checks that the sharded step runs, not speed.
"""

import json
import os
import subprocess
import sys
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np

from distill import parallel
from distill.data import segments
from distill.models import model as model_lib
from distill.train import student as student_lib

_CONFIG = config_flags.DEFINE_config_file(
    'config', 'configs/mt_distill.py', 'Experiment config.', lock_config=False)
_STEPS = flags.DEFINE_integer('steps', 200, 'Distillation steps per member.')
_MEMBERS = flags.DEFINE_integer('members', 4, 'Population size.')
_DEVICES = flags.DEFINE_string('devices', '1,2,4',
                               'Forced CPU device counts for the step (empty:'
                               ' not measured).')
_POP_DEVICES = flags.DEFINE_integer(
    'population_devices', os.cpu_count() or 1,
    'Forced CPU devices for the sharded population figure (one per core; 1'
    ' or less: not measured).')
_CHILD = flags.DEFINE_integer('child_devices', 0,
                              'Internal: time the sharded step here.')
_CHILD_POP = flags.DEFINE_integer(
    'child_population_devices', 0,
    'Internal: time the population split over this many devices here.')

# The suite's observation / action sizes.
DIMS = ((17, 6), (17, 6), (11, 3), (17, 6))


def _source(config, n=20_000, seed=0):
  rng = np.random.default_rng(seed)
  data = []
  for obs_dim, act_dim in DIMS:
    terminals = np.zeros(n, bool)
    terminals[999::1000] = True
    data.append({
        'observations': rng.normal(size=(n, obs_dim)).astype(np.float32),
        'actions': rng.uniform(-1, 1, (n, act_dim)).astype(np.float32),
        'rewards': rng.normal(size=n).astype(np.float32),
        'terminals': terminals, 'timeouts': np.zeros(n, bool)})
  return segments.make_segment_source(
      data, context_len=config.data.context_len,
      rtg_scale=config.data.rtg_scale, max_timestep=config.data.max_timestep)


def _member(config, source, seed, placement=None):
  """(step, state, teacher_params_T, pool) of one seed."""
  teacher = model_lib.make_model(
      config.teacher.model, obs_dims=(source.states.shape[1],),
      act_dims=(source.actions.shape[1],),
      context_len=config.data.context_len,
      max_timestep=config.data.max_timestep)
  key = jax.random.key(seed)
  teacher_params_T = jax.vmap(lambda k: model_lib.init_params(teacher, k))(
      jax.random.split(key, len(DIMS)))
  student = model_lib.make_model(
      config.student.model, obs_dims=[d[0] for d in DIMS],
      act_dims=[d[1] for d in DIMS], context_len=config.data.context_len,
      max_timestep=config.data.max_timestep)
  selector = student_lib.make_selector(config.curriculum, len(DIMS),
                                       source.states.shape[1], key)
  optimizer = student_lib.make_optimizer(config, key)
  pool = student_lib.make_probe_pool(source, teacher, teacher_params_T, key,
                                     config.student.probe_pool)
  step = student_lib.make_multi_step(student_lib.make_distill_step(
      config, student, teacher, selector, optimizer, placement=placement),
                                     _STEPS.value)
  return step, student_lib.init_state(student, selector, optimizer, key), (
      teacher_params_T), pool


def _line(**kw):
  print(json.dumps({'device': str(jax.devices()[0].device_kind),
                    'platform': jax.default_backend(), **kw}), flush=True)


def bench_population(config, source, shards=1):
  """Sequential members vs one population program (on `shards` devices),
  the program built both ways (`config.mesh.members`: 'map', 'vmap')."""
  members = _MEMBERS.value
  built = [_member(config, source, seed) for seed in range(members)]
  jax.block_until_ready([b[1:] for b in built])
  start = time.perf_counter()
  for step, state, teacher_params_T, pool in built:
    out, _ = jax.jit(step)(state, teacher_params_T, source, pool)
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
              place.replicated(source), place.per_member(pools))
      jax.block_until_ready(args)
    else:
      fn, args = jax.jit(population_step), (states, teachers, source, pools)
    start = time.perf_counter()
    out, _ = fn(*args)
    jax.block_until_ready(out)
    population = time.perf_counter() - start
    _line(figure='population', members=members, steps=_STEPS.value,
          population_devices=shards, members_mode=mode,
          default_mode=mode == default, sequential_s=round(sequential, 3),
          population_s=round(population, 3),
          ratio=round(population / sequential, 3), target='<= 0.5',
          met=population / sequential <= 0.5)


def bench_devices_child(config):
  source = _source(config)
  place = parallel.Placement(parallel.make_mesh(population=1))
  step, state, teacher_params_T, pool = _member(config, source, 0,
                                                placement=place)
  rep = place.replicated_sharding
  fn = jax.jit(step, in_shardings=rep, out_shardings=rep)
  args = place.replicated((state, teacher_params_T, source, pool))
  out, _ = fn(*args)  # Compiles.
  jax.block_until_ready(out)
  best = np.inf
  for _ in range(3):
    start = time.perf_counter()
    out, _ = fn(out, *args[1:])
    jax.block_until_ready(out)
    best = min(best, time.perf_counter() - start)
  _line(figure='devices', devices=jax.device_count(),
        ms_per_step=round(best / _STEPS.value * 1e3, 3),
        note='forced CPU devices share the same cores')


def main(argv):
  del argv
  config = _CONFIG.value
  if _CHILD.value:
    bench_devices_child(config)
    return
  if _CHILD_POP.value:
    bench_population(config, _source(config), shards=_CHILD_POP.value)
    return
  bench_population(config, _source(config))
  children = [(n, f'--child_population_devices={n}')
              for n in [_POP_DEVICES.value] if n > 1 and jax.default_backend()
              == 'cpu' and _MEMBERS.value % n == 0]
  children += [(int(x), f'--child_devices={x}')
               for x in _DEVICES.value.split(',') if x.strip()]
  for n, child in children:
    env = dict(os.environ,
               XLA_FLAGS=f'--xla_force_host_platform_device_count={n}')
    proc = subprocess.run(
        [sys.executable, '-m', 'experiments.bench_scale', child,
         f'--steps={_STEPS.value}', f'--members={_MEMBERS.value}',
         *[a for a in sys.argv[1:] if a.startswith('--config')]],
        env=env, capture_output=True, text=True, check=False)
    if proc.returncode:
      raise RuntimeError(f'bench_scale: {child} failed:\n'
                         f'{proc.stderr[-3000:]}')
    lines = proc.stdout.strip().splitlines()
    for line in lines[-2:] if 'population' in child else lines[-1:]:
      print(line, flush=True)


if __name__ == '__main__':
  app.run(main)
