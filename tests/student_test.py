"""Tests of the distillation step (distill/train/student.py)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import mt_distill
from distill import losses
from distill.data import segments
from distill.models import model as model_lib
from distill.train import student as student_lib

OBS_DIMS = (5, 3)
ACT_DIMS = (2, 1)
K = 4


def _config(curriculum='max_kl', surgery='previous', loss='kl'):
  """The smoke config, with the step's sizes for these tiny datasets."""
  c = mt_distill.get_config('smoke')
  c.student.update_from_flattened_dict({
      'batch_size': 8, 'probe_size': 4, 'probe_pool': 16, 'loss': loss,
      'model.width': 16, 'model.num_layers': 1,
      'optimizer.lr': 3e-3, 'optimizer.warmup_steps': 0,
      'optimizer.weight_decay': 0.0})
  c.curriculum.name = curriculum
  c.surgery.name = surgery
  return c


@pytest.fixture(scope='module')
def setup(fake_dataset):
  data = [fake_dataset(60, o, a, seed=i)
          for i, (o, a) in enumerate(zip(OBS_DIMS, ACT_DIMS))]
  source = segments.make_segment_source(data, context_len=K, rtg_scale=10.0,
                                        max_timestep=100)
  teacher = model_lib.make_model(
      _config().teacher.model.copy_and_resolve_references(),
      obs_dims=(max(OBS_DIMS),), act_dims=(max(ACT_DIMS),), context_len=K,
      max_timestep=100)
  keys = jax.random.split(jax.random.key(1), len(OBS_DIMS))
  # Jitted: a vmapped init run op by op compiles every op on its own.
  teacher_params_T = jax.jit(jax.vmap(
      lambda k: model_lib.init_params(teacher, k)))(keys)
  return source, teacher, teacher_params_T


def _build(config, setup):
  source, teacher, teacher_params_T = setup
  student_lib.check_config(config)
  student = model_lib.make_model(config.student.model, obs_dims=OBS_DIMS,
                                 act_dims=ACT_DIMS, context_len=K,
                                 max_timestep=100)
  key = jax.random.key(3)
  selector = student_lib.make_selector(config.curriculum, len(OBS_DIMS),
                                       max(OBS_DIMS), key)
  optimizer = student_lib.make_optimizer(config, key)
  pool = student_lib.make_probe_pool(source, teacher, teacher_params_T, key,
                                     config.student.probe_pool)
  step = student_lib.make_distill_step(config, student, teacher, selector,
                                       optimizer)
  state = student_lib.init_state(student, selector, optimizer,
                                 jax.random.key(4))
  return student, step, state, pool


@pytest.mark.slow
@pytest.mark.parametrize('curriculum,surgery', [
    ('max_kl', 'previous'), ('max_kl', 'none'), ('round_robin', 'previous'),
    ('uniform', 'none'), ('learning_progress', 'previous'), ('rnd', 'none'),
    ('mixture', 'none'), ('mixture', 'pcgrad'), ('bi_objective', 'previous'),
    ('scratch', 'previous'),
])
def test_every_curriculum_and_surgery_runs_compiled_once(setup, curriculum,
                                                         surgery):
  chex.clear_trace_counter()
  config = _config(curriculum, surgery)
  _, step, state, pool = _build(config, setup)
  step = jax.jit(chex.assert_max_traces(step, n=1))
  source, _, teacher_params_T = setup
  choices = []
  for _ in range(4):
    state, metrics = step(state, teacher_params_T, source, pool)
    choices.append(int(metrics['curriculum/choice']))
    chex.assert_tree_all_finite(metrics)
    chex.assert_shape(metrics['distill/kl'], (len(OBS_DIMS),))
  assert int(state.step) == 4
  if curriculum == 'round_robin':
    assert choices == [0, 1, 0, 1]
  if curriculum in ('mixture', 'scratch'):
    assert choices == [-1] * 4
  np.testing.assert_array_equal(
      metrics['curriculum/counts'], state.curriculum_state.counts)


def test_max_kl_picks_the_largest_probe_divergence(setup):
  config = _config('max_kl', 'none')
  _, step, state, pool = _build(config, setup)
  source, _, teacher_params_T = setup
  _, metrics = jax.jit(step)(state, teacher_params_T, source, pool)
  assert int(metrics['curriculum/choice']) == int(
      np.argmax(metrics['distill/kl']))


def test_probe_divergence_matches_direct_kl(setup):
  """The probe KL equals KL(teacher || student) computed from scratch."""
  config = _config('max_kl', 'none')
  config.student.probe_size = 16  # Every pool entry (with repeats) is used.
  student, step, state, pool = _build(config, setup)
  source, teacher, teacher_params_T = setup
  _, metrics = jax.jit(step)(state, teacher_params_T, source, pool)
  # Recompute with the probe indices the step drew.
  rng = jax.random.fold_in(state.rng, state.step)
  k_probe = jax.random.split(rng, 3)[0]
  idx = jax.random.randint(k_probe, (2, 16), 0, 16)
  for t in range(2):
    b = jax.tree.map(lambda x: x[t][idx[t]], pool.batch)
    tb = b._replace(task=jnp.zeros_like(b.task))
    p_t = jax.tree.map(lambda x: x[t], teacher_params_T)
    tm, tl = model_lib.apply(teacher, p_t, tb)
    sm, sl = model_lib.apply(student, state.params, b)
    a = ACT_DIMS[t]
    var_t, var_s = np.exp(2 * tl[..., :a]), np.exp(2 * sl[..., :a])
    kl = 0.5 * (var_t / var_s + (sm[..., :a] - tm[..., :a]) ** 2 / var_s - 1
                + 2 * (sl[..., :a] - tl[..., :a])).sum(-1)
    expected = (kl * b.mask).sum() / b.mask.sum()
    np.testing.assert_allclose(metrics['distill/kl'][t], expected, rtol=1e-4)


def test_distillation_lowers_every_divergence(setup):
  config = _config('max_kl', 'previous')
  _, step, state, pool = _build(config, setup)
  source, _, teacher_params_T = setup
  multi = jax.jit(student_lib.make_multi_step(step, 20), donate_argnums=0)
  state, first = multi(state, teacher_params_T, source, pool)
  for _ in range(5):
    state, last = multi(state, teacher_params_T, source, pool)
  kl_before = first['distill/kl'][:3].mean(0)
  kl_after = last['distill/kl'][-3:].mean(0)
  assert (kl_after < kl_before).all(), (kl_before, kl_after)
  # The greedy curriculum visited both teachers.
  counts = np.asarray(state.curriculum_state.counts)
  assert (counts > 0).all()


def test_padded_action_dims_never_reach_the_loss(setup):
  """Changing the student's outputs in padded action dims changes nothing."""
  config = _config('round_robin', 'none')
  student, _, state, pool = _build(config, setup)
  b = jax.tree.map(lambda x: x[1][:4], pool.batch)  # Task b: 1 action dim.
  tm, tl = pool.teacher_mean[1][:4], pool.teacher_log_std[1][:4]
  sm, sl = model_lib.apply(student, state.params, b)
  m = model_lib.action_mask(ACT_DIMS)[b.task][:, None, :]
  for loss in student_lib.LOSSES.values():
    base = loss(tm, tl, sm, sl, m, 1.0)
    moved = loss(tm, tl, sm.at[..., 1].add(5.0), sl.at[..., 1].add(1.), m,
                 1.0)
    np.testing.assert_allclose(base, moved)


def test_bad_combinations_name_the_flag():
  with pytest.raises(ValueError, match='curriculum.name=mixture'):
    student_lib.check_config(_config('max_kl', 'pcgrad'))
  with pytest.raises(ValueError, match='curriculum.name'):
    student_lib.check_config(_config('nope', 'none'))
  with pytest.raises(ValueError, match='surgery.name'):
    student_lib.check_config(_config('max_kl', 'sideways'))
  config = _config('max_kl', 'none')
  config.student.probe_size = 0
  with pytest.raises(ValueError, match='probe_size'):
    student_lib.check_config(config)


def test_mse_loss_option_runs(setup):
  config = _config('round_robin', 'none', loss='mse')
  _, step, state, pool = _build(config, setup)
  source, _, teacher_params_T = setup
  state, metrics = jax.jit(step)(state, teacher_params_T, source, pool)
  assert np.isfinite(metrics['train/loss'])



def test_scratch_baseline_learns_the_dataset_actions_without_teachers(setup):
  """`scratch` never reads a teacher: its update is the same with any
  teacher parameters, and its loss is the actions' negative log-likelihood."""
  config = _config('scratch', 'none')
  student, step, state, pool = _build(config, setup)
  source, _, teacher_params_T = setup
  step = jax.jit(step)
  a, metrics = step(state, teacher_params_T, source, pool)
  zeros = jax.tree.map(jnp.zeros_like, teacher_params_T)
  b, _ = step(state, zeros, source, pool)
  chex.assert_trees_all_close(a.params, b.params)
  # The same loss recomputed from the batch the step drew.
  k_batch = jax.random.split(jax.random.fold_in(state.rng, state.step), 3)[1]
  keys = jax.random.split(k_batch, 2)
  batch = jax.tree.map(lambda *x: jnp.concatenate(x), *[
      segments.sample_task_batch(source, keys[t], t, 4) for t in range(2)])
  mean, log_std = model_lib.apply(student, state.params, batch)
  m = model_lib.action_mask(ACT_DIMS)[batch.task][:, None, :]
  nll = -losses.masked_mean(losses.tanh_gaussian_log_prob(
      mean, log_std, batch.actions, m), batch.mask)
  np.testing.assert_allclose(metrics['train/loss'], nll, rtol=1e-5)
  multi = jax.jit(student_lib.make_multi_step(step, 30))
  _, history = multi(state, teacher_params_T, source, pool)
  assert history['train/loss'][-5:].mean() < history['train/loss'][:5].mean()


def test_dispatch_moves_nothing_between_host_and_device(setup):
  """Datasets, teacher parameters, the pool and the state are on the device
  before the loop: a fused dispatch runs under a transfer guard."""
  config = _config('max_kl', 'previous')
  _, step, state, pool = _build(config, setup)
  source, _, teacher_params_T = setup
  multi = jax.jit(student_lib.make_multi_step(step, 3), donate_argnums=0)
  state, _ = multi(state, teacher_params_T, source, pool)  # Compiles.
  with jax.transfer_guard('disallow'):
    state, metrics = multi(state, teacher_params_T, source, pool)
    jax.block_until_ready(metrics)
  assert int(state.step) == 6


def test_every_table_entry_builds_a_transform():
  """The tables are complete: each record builds an optax transform."""
  key = jax.random.key(0)
  config = _config()
  for name, record in student_lib.CURRICULA.items():
    selector = record.make(config.curriculum, 2, 5, key)
    assert isinstance(selector, optax.GradientTransformationExtraArgs), name
    assert set(record.extra_args) <= {'task_divergences', 'task_states'}
  for name, record in student_lib.SURGERIES.items():
    tx = record.make(config.surgery, key)
    state = tx.init({'w': jnp.zeros(3)})
    assert set(record.metrics(state)) == {'surgery/cos_prev',
                                          'surgery/projected'}, name
