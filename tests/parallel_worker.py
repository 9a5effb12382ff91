"""Child process of parallel_test.py: runs with 4 forced CPU devices.

  XLA_FLAGS=--xla_force_host_platform_device_count=4 python parallel_worker.py

Prints one JSON line of measured differences; the test asserts on them.
"""

import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from conftest import make_fake_dataset
from distill.data import segments
from distill.models import model as model_lib
from distill.train import parallel
from distill.train import student as student_lib
from distill.train import teacher as teacher_lib
import student_test
import teacher_test

OBS_DIMS, ACT_DIMS, K = student_test.OBS_DIMS, student_test.ACT_DIMS, 4


def _max_diff(a, b):
  return max(float(np.max(np.abs(np.asarray(x, np.float64)
                                 - np.asarray(y, np.float64))))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _setup(seed):
  data = [make_fake_dataset(60, o, a, seed=i)
          for i, (o, a) in enumerate(zip(OBS_DIMS, ACT_DIMS))]
  source = segments.make_segment_source(data, context_len=K, rtg_scale=10.0,
                                        max_timestep=100)
  config = student_test._config('max_kl', 'previous')  # pylint: disable=protected-access
  teacher = model_lib.make_model(
      config.teacher.model, obs_dims=(max(OBS_DIMS),),
      act_dims=(max(ACT_DIMS),), context_len=K, max_timestep=100)
  keys = jax.random.split(jax.random.key(seed), len(OBS_DIMS))
  # Jitted: a vmapped init run op by op compiles every op on its own.
  teacher_params_T = jax.jit(jax.vmap(
      lambda k: model_lib.init_params(teacher, k)))(keys)
  return config, source, teacher, teacher_params_T


def _member(config, source, teacher, teacher_params_T, seed, placement=None):
  student = model_lib.make_model(config.student.model, obs_dims=OBS_DIMS,
                                 act_dims=ACT_DIMS, context_len=K,
                                 max_timestep=100)
  key = jax.random.key(seed)
  selector = student_lib.make_selector(config.curriculum, 2, max(OBS_DIMS),
                                       key)
  optimizer = student_lib.make_optimizer(config, key)
  pool = student_lib.make_probe_pool(source, teacher, teacher_params_T, key,
                                     config.student.probe_pool)
  step = student_lib.make_multi_step(student_lib.make_distill_step(
      config, student, teacher, selector, optimizer, placement=placement), 5)
  state = student_lib.init_state(student, selector, optimizer, key)
  return step, state, pool


def main():
  assert jax.device_count() == 4, jax.devices()
  out = {}
  config, source, teacher, teacher_params_T = _setup(1)
  # Data parallel: 4 devices on 'data' against one device.
  step, state, pool = _member(config, source, teacher, teacher_params_T, 3)
  single, _ = jax.jit(step)(state, teacher_params_T, source, pool)
  mesh = parallel.make_mesh(population=1)
  place = parallel.Placement(mesh)
  step, state, pool = _member(config, source, teacher, teacher_params_T, 3,
                              placement=place)
  rep = place.replicated_sharding
  sharded_fn = jax.jit(step, in_shardings=rep, out_shardings=rep)
  sharded, metrics = sharded_fn(place.replicated(state),
                                place.replicated(teacher_params_T),
                                place.replicated(source),
                                place.replicated(pool))
  out['data_parallel_devices'] = len(sharded.params['embed_return'][
      'kernel'].sharding.device_set)
  out['data_parallel_max_diff'] = _max_diff(single.params, sharded.params)
  out['data_parallel_steps'] = int(sharded.step)

  # A population of 2 members (own teachers, own students) in one program.
  members = [(_setup(10 + m), 100 + m) for m in range(2)]
  singles, states, teachers, pools = [], [], [], []
  for (cfg, src, tch, tp), seed in members:
    step, state, pool = _member(cfg, src, tch, tp, seed)
    singles.append(jax.jit(step)(state, tp, src, pool)[0])
    states.append(state)
    teachers.append(tp)
    pools.append(pool)
  stack = lambda *xs: jnp.stack(xs)
  mesh = parallel.make_mesh(population=2)
  place = parallel.Placement(mesh)
  pop_step = jax.jit(student_lib.make_population_step(step))
  pop_states, _ = pop_step(
      place.per_member(jax.tree.map(stack, *states)),
      place.per_member(jax.tree.map(stack, *teachers)),
      place.replicated(source), place.per_member(jax.tree.map(stack, *pools)))
  out['population_max_diff'] = max(
      _max_diff(jax.tree.map(lambda x, i=i: x[i], pop_states.params),
                singles[i].params) for i in range(2))
  out['population_members_differ'] = _max_diff(singles[0].params,
                                               singles[1].params)
  # The members in turn ('map'): in one group on one device, and in two
  # groups of one on the mesh's two 'population' devices.
  for groups in (1, 2):
    fn = student_lib.make_population_step(step, 'map', groups)
    args = (jax.tree.map(stack, *states), jax.tree.map(stack, *teachers),
            source, jax.tree.map(stack, *pools))
    if groups > 1:
      args = (place.per_member(args[0]), place.per_member(args[1]),
              place.replicated(args[2]), place.per_member(args[3]))
    map_states, _ = jax.jit(fn)(*args)
    out[f'population_map{groups}_max_diff'] = max(
        _max_diff(jax.tree.map(lambda x, i=i: x[i], map_states.params),
                  singles[i].params) for i in range(2))
    out[f'population_map{groups}_devices'] = len(
        map_states.params['embed_return']['kernel'].sharding.device_set)
  out.update(_teachers())
  print(json.dumps(out))


def _teachers():
  """The fused teacher update of 2 tasks (vmapped, as `train_teachers`
  runs it) with every batch split over 4 devices, against one device."""
  out = {}
  source, _ = teacher_test.make_source()
  config = teacher_test.make_config()
  _, train_step, state = teacher_test.build(config, source)
  states_N = jax.tree.map(lambda *x: jnp.stack(x), state, state)
  tasks_N = jnp.arange(2, dtype=jnp.int32)

  def update(placement=None):
    return jax.vmap(teacher_lib.make_update_fn(
        train_step, batch_size=4, num_steps=3, placement=placement),
                    in_axes=(0, None, 0))

  single, _ = jax.jit(update())(states_N, source, tasks_N)
  place = parallel.Placement(parallel.make_mesh(population=1))
  rep = place.replicated_sharding
  sharded, _ = jax.jit(update(place), in_shardings=rep, out_shardings=rep)(
      *place.replicated((states_N, source, tasks_N)))
  out['teacher_data_parallel_devices'] = len(sharded.params[
      'embed_return']['kernel'].sharding.device_set)
  out['teacher_data_parallel_steps'] = int(sharded.step[0])
  out['teacher_max_diff'] = _max_diff(sharded.params, single.params)
  out['teacher_tasks_differ'] = _max_diff(
      jax.tree.map(lambda x: x[0], single.params),
      jax.tree.map(lambda x: x[1], single.params))
  return out


if __name__ == '__main__':
  main()
