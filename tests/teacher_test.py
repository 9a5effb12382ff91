"""Tests of distill/train/teacher.py."""

import os

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import teachers as teachers_config
from conftest import make_fake_dataset
from distill.data import segments
from distill.models import model as model_lib
from distill.run import sweeps
from distill.train import logs
from distill.train import optimizer as optimizer_lib
from distill.train import parallel
from distill.train import teacher

K = 4
TEACHERS_PY = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), 'configs', 'teachers.py')


def make_source():
  datasets = [make_fake_dataset(200, 5, 3, 0),
              make_fake_dataset(150, 4, 2, 1)]
  stats = [segments.state_stats(d) for d in datasets]
  source = segments.make_segment_source(
      datasets, context_len=K, rtg_scale=100.0, max_timestep=50, stats=stats)
  return source, stats


def make_config(**kw):
  """The smoke teacher config, sized for the tiny datasets here."""
  config = teachers_config.get_config('smoke').teacher
  config.update_from_flattened_dict({
      'model.num_heads': 2, 'model.dropout': 0.0, 'optimizer.lr': 3e-3,
      'optimizer.warmup_steps': 0, 'optimizer.grad_clip': 1.0,
      'entropy.lr': 1e-2, 'steps': 6, 'batch_size': 4,
      'steps_per_dispatch': 3, 'log_every': 3, 'ckpt_every': 3, 'keep': 2,
      **kw})
  return config


DATA = ml_collections.ConfigDict(dict(context_len=K, rtg_scale=100.0,
                                      max_timestep=50))


def build(config, source):
  model = model_lib.make_model(
      config.model, obs_dims=(source.states.shape[1],),
      act_dims=(source.actions.shape[1],), context_len=K, max_timestep=50)
  opt = optimizer_lib.make_optimizer(config.optimizer)
  alpha_opt = optimizer_lib.make_alpha_optimizer(config.entropy)
  step = teacher.make_train_step(model, opt, alpha_opt, act_dims=(3, 2))
  state = teacher.init_state(model, opt, alpha_opt, jax.random.key(0),
                             alpha=config.entropy.alpha)
  return model, step, state


@pytest.mark.parametrize('head', ['tanh_gaussian', 'deterministic'])
def test_train_step_lowers_loss_on_fixed_batch(head):
  source, _ = make_source()
  config = make_config(**{'model.head': head})
  _, train_step, state = build(config, source)
  batch = segments.sample_task_batch(source, jax.random.key(1), 1, 8)
  step = jax.jit(train_step)
  losses = []
  for _ in range(8):
    state, metrics = step(state, batch)
    losses.append(float(metrics['loss']))
  assert losses[-1] < losses[0]
  assert int(state.step) == 8
  chex.assert_tree_all_finite(state.params)
  if head == 'tanh_gaussian':
    assert float(metrics['alpha']) != pytest.approx(0.1, abs=1e-6)
  else:
    assert set(metrics) >= {'loss', 'mse', 'action_mse', 'grad_norm'}


def test_no_retrace():
  source, _ = make_source()
  _, train_step, state = build(make_config(), source)
  traced = chex.assert_max_traces(train_step, n=1)
  step = jax.jit(traced, donate_argnums=0)
  for i in range(3):
    batch = segments.sample_task_batch(source, jax.random.key(i), 0, 4)
    state, _ = step(state, batch)
  assert int(state.step) == 3


def test_scan_fusion_equals_single_steps():
  source, _ = make_source()
  _, train_step, state = build(make_config(), source)
  fused = jax.jit(teacher.make_update_fn(train_step, batch_size=4,
                                         num_steps=3))
  single = jax.jit(teacher.make_update_fn(train_step, batch_size=4,
                                          num_steps=1))
  a, _ = fused(state, source, jnp.int32(1))
  b = state
  for _ in range(3):
    b, _ = single(b, source, jnp.int32(1))
  chex.assert_trees_all_close(a.params, b.params, atol=1e-5)


def test_vmap_equals_one_by_one(tmp_path):
  source, stats = make_source()
  out = {}
  for vmap in (True, False):
    out[vmap] = teacher.train_teachers(
        make_config(vmap=vmap), DATA, tasks=('a', 'b'), source=source,
        stats=stats, directory=str(tmp_path / str(vmap)), seed=3)
  for task in ('a', 'b'):
    assert int(out[True][task].step) == 6
    chex.assert_trees_all_close(out[True][task].params,
                                out[False][task].params, atol=1e-5, rtol=1e-4)
  # Different tasks give different teachers.
  assert not np.allclose(out[True]['a'].params['embed_return']['kernel'],
                         out[True]['b'].params['embed_return']['kernel'])


def test_metrics_and_nonfinite_abort(tmp_path):
  source, stats = make_source()
  with logs.MetricWriter(str(tmp_path)) as writer:
    teacher.train_teachers(make_config(), DATA, tasks=('a', 'b'),
                           source=source, stats=stats,
                           directory=str(tmp_path / 'ckpt'), seed=0,
                           writer=writer)
  rows = logs.read_metrics(str(tmp_path))
  # One row per logged step (vmapped) or per teacher and step (one by one,
  # the CPU's 'auto').
  for task in ('a', 'b'):
    assert [r['step'] for r in rows if f'teacher/{task}/loss' in r] == [3, 6]
  assert {'teacher/a/loss', 'teacher/b/nll', 'teacher/b/alpha'} <= set().union(
      *rows)
  bad = source._replace(states=source.states.at[200:].set(jnp.nan))
  with pytest.raises(FloatingPointError, match="task 'b' at step 3"):
    teacher.train_teachers(make_config(), DATA, tasks=('a', 'b'), source=bad,
                           stats=stats, directory=str(tmp_path / 'nan'),
                           seed=0)


def test_optimizer_warmup():
  config = make_config(**{'optimizer.warmup_steps': 10, 'optimizer.lr': 1.0,
                          'optimizer.grad_clip': 0.0,
                          'optimizer.weight_decay': 0.0})
  opt = optimizer_lib.make_optimizer(config.optimizer)
  params = {'w': jnp.zeros(())}
  state = opt.init(params)
  updates, state = opt.update({'w': jnp.ones(())}, state, params)
  # Adam's first step is lr * sign(g); lr at step 0 of warmup is 0.
  assert float(updates['w']) == pytest.approx(0.0, abs=1e-6)
  for _ in range(10):
    updates, state = opt.update({'w': jnp.ones(())}, state, params)
  assert float(updates['w']) == pytest.approx(-1.0, rel=1e-3)


def test_schedule_cosine_decay_closed_form():
  config = ml_collections.ConfigDict(dict(
      lr=2.0, warmup_steps=10, decay_steps=110, end_lr_fraction=0.1))
  schedule = optimizer_lib.make_schedule(config)
  assert float(schedule(0)) == pytest.approx(0.0)
  assert float(schedule(5)) == pytest.approx(1.0)
  for t in (10, 35, 60, 85, 110, 200):
    frac = min(t - 10, 100) / 100
    cosine = 0.5 * (1 + np.cos(np.pi * frac))
    want = 2.0 * ((1 - 0.1) * cosine + 0.1)
    assert float(schedule(t)) == pytest.approx(want, rel=1e-5), t
  config.decay_steps = 0
  assert float(optimizer_lib.make_schedule(config)(1000)) == pytest.approx(2.0)


@pytest.mark.parametrize('bad', [dict(decay_steps=5),
                                 dict(end_lr_fraction=2.0)])
def test_schedule_bad_decay_raises(bad):
  config = ml_collections.ConfigDict(dict(
      lr=1.0, warmup_steps=10, decay_steps=100, end_lr_fraction=0.1))
  config.update(bad)
  with pytest.raises(ValueError, match='decay_steps'):
    optimizer_lib.make_schedule(config)


def test_teacher_dispatch_moves_nothing_between_host_and_device():
  """The source, the task ids and the state live on the device: a fused,
  vmapped teacher dispatch runs under a transfer guard."""
  source, _ = make_source()
  config = make_config()
  model, train_step, _ = build(config, source)
  init = teacher.make_init_fn(model, optimizer_lib.make_optimizer(
      config.optimizer), optimizer_lib.make_alpha_optimizer(config.entropy),
                              alpha=0.1)
  states = jax.jit(jax.vmap(init))(jax.random.split(jax.random.key(0), 2))
  update = jax.jit(jax.vmap(teacher.make_update_fn(
      train_step, batch_size=4, num_steps=2), in_axes=(0, None, 0)))
  tasks = jnp.arange(2, dtype=jnp.int32)
  states, _ = update(states, source, tasks)  # Compiles.
  with jax.transfer_guard('disallow'):
    states, metrics = update(states, source, tasks)
    jax.block_until_ready(metrics)
  np.testing.assert_array_equal(states.step, [4, 4])


def test_vmap_auto_is_one_by_one_on_cpu_and_bools_stay():
  """`teacher.vmap` 'auto' resolves by backend (here CPU: one by one)."""
  assert parallel.teacher_vmap('auto') is (jax.default_backend() != 'cpu')
  assert parallel.teacher_vmap(True) is True
  assert parallel.teacher_vmap(False) is False
  with pytest.raises(ValueError, match="config.teacher.vmap='yes'"):
    parallel.teacher_vmap('yes')
  # The default is 'auto', and the command line's True/False stay booleans.
  assert teachers_config.get_config().teacher.vmap == 'auto'
  for flag, want in (('False', False), ('True', True), ('auto', 'auto')):
    config = sweeps.resolve_config(TEACHERS_PY,
                                   [f'--config.teacher.vmap={flag}'])
    assert config.teacher.vmap == want and type(config.teacher.vmap) is type(
        want)
