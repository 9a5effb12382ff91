"""Tests for the distillation step (distill/train/distill.py)."""

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import pytest

from distill.data import segments
from distill.models import decision_transformer as dt
from distill.train import distill

OBS_DIMS = (5, 3)
ACT_DIMS = (2, 1)
K = 4


def _dataset(rng, n, obs_dim, act_dim):
  terminals = np.zeros(n, bool)
  terminals[n // 3] = True
  timeouts = np.zeros(n, bool)
  timeouts[2 * n // 3] = True
  return {
      'observations': rng.normal(size=(n, obs_dim)).astype(np.float32),
      'actions': rng.uniform(-1, 1, size=(n, act_dim)).astype(np.float32),
      'rewards': rng.normal(size=n).astype(np.float32),
      'terminals': terminals,
      'timeouts': timeouts,
  }


def _config(curriculum='max_kl', surgery='previous', loss='kl'):
  c = ml_collections.ConfigDict()
  c.tasks = ('a', 'b')
  c.student = ml_collections.ConfigDict(dict(
      batch_size=8, probe_size=4, probe_pool=16, loss=loss, temperature=1.0,
      model=dict(num_layers=1, width=16, num_heads=1, dropout=0.0,
                 head='tanh_gaussian', log_std_min=-5.0, log_std_max=2.0),
      optimizer=dict(lr=3e-3, warmup_steps=0, grad_clip=1.0,
                     weight_decay=0.0, b1=0.9, b2=0.999)))
  c.curriculum = ml_collections.ConfigDict(dict(
      name=curriculum, mode='greedy', temperature=1.0, epsilon=0.1, lam=1.0))
  c.surgery = ml_collections.ConfigDict(dict(name=surgery, decay=0.0,
                                             reduction='sum'))
  return c


@pytest.fixture(scope='module')
def setup():
  rng = np.random.default_rng(0)
  data = [_dataset(rng, 60, o, a) for o, a in zip(OBS_DIMS, ACT_DIMS)]
  source = segments.make_segment_source(data, context_len=K, rtg_scale=10.0,
                                        max_timestep=100)
  teacher = dt.DecisionTransformer(obs_dims=(max(OBS_DIMS),),
                                   act_dims=(max(ACT_DIMS),), num_layers=1,
                                   width=24, num_heads=1, dropout=0.0,
                                   context_len=K, max_timestep=100)
  b = segments.sample_task_batch(source, jax.random.key(0), 0, 2)
  keys = jax.random.split(jax.random.key(1), len(OBS_DIMS))
  teacher_params_T = jax.vmap(lambda k: teacher.init(
      k, b.rtg, b.states, b.actions, b.timesteps, b.mask, b.task,
      train=False)['params'])(keys)
  return source, teacher, teacher_params_T


def _build(config, setup):
  source, teacher, teacher_params_T = setup
  distill.check_config(config)
  student = distill.make_student(config.student.model, OBS_DIMS, ACT_DIMS,
                                 context_len=K, max_timestep=100)
  key = jax.random.key(3)
  selector = distill.make_selector(config.curriculum, len(OBS_DIMS),
                                   max(OBS_DIMS), key)
  optimizer = distill.make_optimizer(config, len(OBS_DIMS), key)
  pool = distill.make_probe_pool(source, teacher, teacher_params_T, key,
                                 config.student.probe_pool)
  step = distill.make_distill_step(config, student, teacher, selector,
                                   optimizer)
  state = distill.init_state(config, student, source, selector, optimizer,
                             jax.random.key(4))
  return student, step, state, pool


@pytest.mark.slow
@pytest.mark.parametrize('curriculum,surgery', [
    ('max_kl', 'previous'), ('max_kl', 'none'), ('round_robin', 'previous'),
    ('uniform', 'none'), ('learning_progress', 'previous'), ('rnd', 'none'),
    ('mixture', 'none'), ('mixture', 'pcgrad'), ('bi_objective', 'previous'),
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
  if curriculum == 'mixture':
    assert choices == [-1] * 4


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
    tm, tl = teacher.apply({'params': p_t}, tb.rtg, tb.states, tb.actions,
                           tb.timesteps, tb.mask, tb.task, train=False)
    sm, sl = student.apply({'params': state.params}, b.rtg, b.states,
                           b.actions, b.timesteps, b.mask, b.task, train=False)
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
  multi = jax.jit(distill.make_multi_step(step, 20), donate_argnums=0)
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
  sm, sl = student.apply({'params': state.params}, b.rtg, b.states, b.actions,
                         b.timesteps, b.mask, b.task, train=False)
  mask_BxA = dt.action_mask(ACT_DIMS)[b.task]
  base = distill._divergence_BxK(config.student, tm, tl, sm, sl, mask_BxA)
  moved = distill._divergence_BxK(config.student, tm, tl,
                                  sm.at[..., 1].add(5.0), sl.at[..., 1].add(1.),
                                  mask_BxA)
  np.testing.assert_allclose(base, moved)


def test_bad_combinations_name_the_flag():
  with pytest.raises(ValueError, match='curriculum.name=mixture'):
    distill.check_config(_config('max_kl', 'pcgrad'))
  with pytest.raises(ValueError, match='curriculum.name'):
    distill.check_config(_config('nope', 'none'))
  with pytest.raises(ValueError, match='surgery.name'):
    distill.check_config(_config('max_kl', 'sideways'))
  config = _config('max_kl', 'none')
  config.student.probe_size = 0
  with pytest.raises(ValueError, match='probe_size'):
    distill.check_config(config)


def test_mse_loss_option_runs(setup):
  config = _config('round_robin', 'none', loss='mse')
  _, step, state, pool = _build(config, setup)
  source, _, teacher_params_T = setup
  state, metrics = jax.jit(step)(state, teacher_params_T, source, pool)
  assert np.isfinite(metrics['train/loss'])

