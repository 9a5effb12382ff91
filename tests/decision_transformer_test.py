"""Tests of distill/models/decision_transformer.py and heads.py."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill.models import decision_transformer as dt_lib
from distill.models import heads

B, K = 3, 6


def _inputs(s, a, key=0, task=None):
  r = np.random.default_rng(key)
  return dict(
      rtg_BxKx1=jnp.asarray(r.normal(size=(B, K, 1)), jnp.float32),
      states_BxKxS=jnp.asarray(r.normal(size=(B, K, s)), jnp.float32),
      actions_BxKxA=jnp.asarray(r.uniform(-1, 1, size=(B, K, a)), jnp.float32),
      timesteps_BxK=jnp.asarray(np.arange(K)[None].repeat(B, 0) + 3),
      mask_BxK=jnp.ones((B, K)),
      task_B=jnp.zeros((B,), jnp.int32) if task is None else task,
  )


def _model(**kw):
  base = dict(obs_dims=(5,), act_dims=(2,), num_layers=2, width=16,
              num_heads=2, dropout=0.1, context_len=K, max_timestep=50)
  base.update(kw)
  return dt_lib.DecisionTransformer(**base)


@functools.cache
def _jitted(model, train):
  # One compilation per (model, train) across tests: jitting op by op or
  # re-jitting a fresh lambda per call dominates these tests' time on CPU.
  return jax.jit(lambda p, x: model.apply(
      p, **x, train=train, rngs={'dropout': jax.random.key(1)}))


def _apply(model, params, inputs, train=False):
  return _jitted(model, train)(params, inputs)


def _init(model, inputs):
  return jax.jit(lambda x: model.init(jax.random.key(0), **x, train=False))(
      inputs)


@pytest.mark.parametrize('head', heads.HEADS)
def test_shapes_and_log_std_bounds(head):
  model = _model(head=head, log_std_min=-4.0, log_std_max=1.0)
  x = _inputs(5, 2)
  params = _init(model, x)
  mean, log_std = _apply(model, params, x, train=True)
  chex.assert_shape([mean, log_std], (B, K, 2))
  chex.assert_tree_all_finite((mean, log_std))
  assert float(log_std.min()) >= -4.0 and float(log_std.max()) <= 1.0
  if head == 'deterministic':
    np.testing.assert_allclose(log_std, -4.0)


def test_single_task_is_plain_dt():
  model = _model()
  x = _inputs(5, 2)
  params = _init(model, x)['params']
  assert 'embed_task' not in params
  assert params['embed_state']['Dense_0']['kernel'].shape == (5, 16)
  assert dt_lib.count_params(params) == sum(
      np.size(p) for p in jax.tree.leaves(params))


@pytest.mark.parametrize('field,kind', [
    ('actions_BxKxA', 'action'), ('states_BxKxS', 'state'),
    ('rtg_BxKx1', 'rtg'), ('timesteps_BxK', 'time')])
def test_causal(field, kind):
  model = _model()
  x = _inputs(5, 2)
  params = _init(model, x)
  mean, log_std = _apply(model, params, x)
  t = 3
  y = dict(x)
  if kind == 'time':
    y[field] = x[field].at[:, t].add(7)
  else:
    y[field] = x[field].at[:, t].add(5.0)
  mean2, log_std2 = _apply(model, params, y)
  # The action at t does not influence the prediction at t (predicted from
  # the state token); state, rtg and timestep at t do.
  first_changed = t + 1 if kind == 'action' else t
  np.testing.assert_allclose(mean2[:, :first_changed], mean[:, :first_changed],
                             atol=1e-6)
  np.testing.assert_allclose(log_std2[:, :first_changed],
                             log_std[:, :first_changed], atol=1e-6)
  assert np.abs(mean2[:, first_changed:] - mean[:, first_changed:]).max() > 1e-5


def test_padding_mask_left_padded():
  model = _model()
  x = _inputs(5, 2)
  pad = 2
  x['mask_BxK'] = jnp.ones((B, K)).at[:, :pad].set(0.0)
  params = _init(model, x)
  mean, log_std = _apply(model, params, x)
  chex.assert_tree_all_finite((mean, log_std))
  y = dict(x)
  for f in ('rtg_BxKx1', 'states_BxKxS', 'actions_BxKxA'):
    y[f] = x[f].at[:, :pad].set(123.0)
  y['timesteps_BxK'] = x['timesteps_BxK'].at[:, :pad].set(40)
  mean2, log_std2 = _apply(model, params, y)
  np.testing.assert_allclose(mean2[:, pad:], mean[:, pad:], atol=1e-5)
  np.testing.assert_allclose(log_std2[:, pad:], log_std[:, pad:], atol=1e-5)
  # A fully padded row gives finite (ignored) outputs.
  x['mask_BxK'] = jnp.zeros((B, K))
  chex.assert_tree_all_finite(_apply(model, params, x))


def test_multitask_mixed_ids():
  model = _model(obs_dims=(5, 3, 4), act_dims=(2, 1, 2))
  task = jnp.asarray([0, 1, 2], jnp.int32)
  x = _inputs(5, 2, task=task)
  params = _init(model, x)
  p = params['params']
  assert p['embed_state']['kernel'].shape == (3, 5, 16)
  assert p['embed_action']['kernel'].shape == (3, 2, 16)
  assert p['head']['out']['kernel'].shape == (3, 16, 4)
  assert p['embed_task']['embedding'].shape == (3, 16)
  mean, _ = _apply(model, params, x)
  chex.assert_shape(mean, (B, K, 2))
  # Each example equals the same example run alone with its task id.
  for i in range(B):
    xi = {k: v[i:i + 1] for k, v in x.items()}
    mi, _ = _apply(model, params, xi)
    np.testing.assert_allclose(mi[0], mean[i], atol=1e-5)
  # Padded input dims of a smaller task are ignored.
  y = dict(x)
  y['states_BxKxS'] = x['states_BxKxS'].at[1, :, 3:].set(9.0)
  y['actions_BxKxA'] = x['actions_BxKxA'].at[1, :, 1:].set(9.0)
  mean2, _ = _apply(model, params, y)
  np.testing.assert_allclose(mean2, mean, atol=1e-5)
  # The task id matters.
  z = dict(x, task_B=jnp.asarray([0, 0, 0], jnp.int32))
  assert np.abs(_apply(model, params, z)[0][1:] - mean[1:]).max() > 1e-4


def test_action_mask():
  np.testing.assert_array_equal(
      dt_lib.action_mask((6, 3)),
      np.array([[1] * 6, [1, 1, 1, 0, 0, 0]], np.float32))
  assert dt_lib.action_mask((6, 3)).dtype == jnp.float32


def test_dropout_train_vs_eval():
  model = _model(dropout=0.5)
  x = _inputs(5, 2)
  params = _init(model, x)
  a, _ = _apply(model, params, x, train=False)
  b, _ = _apply(model, params, x, train=False)
  c, _ = _apply(model, params, x, train=True)
  np.testing.assert_array_equal(a, b)
  assert np.abs(a - c).max() > 1e-4


def test_squash_log_std():
  raw = jnp.asarray([-100.0, 0.0, 100.0])
  np.testing.assert_allclose(heads.squash_log_std(raw, -5.0, 2.0),
                             [-5.0, -1.5, 2.0], atol=1e-6)


def test_bad_shapes_raise():
  model = _model()
  x = _inputs(4, 2)
  with pytest.raises(ValueError, match='expected states'):
    _init(model, x)
