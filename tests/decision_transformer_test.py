"""Tests of distill/models/decision_transformer.py and heads.py.

The kernels themselves are tested in kernels_test.py.
"""

import contextlib
import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill.models import decision_transformer as dt_lib
from distill.models import heads
from distill.models import kernels
from distill.models import model as model_lib

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
  assert model_lib.count_params(params) == sum(
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


class _FlaxBlock(nn.Module):
  """The block as flax's own layers compute it (the reference)."""

  width: int
  num_heads: int
  dropout: float

  @nn.compact
  def __call__(self, x, mask, *, train):
    h = nn.LayerNorm()(x)
    h = nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads, dropout_rate=self.dropout,
        kernel_init=nn.initializers.normal(0.02),
        deterministic=not train)(h, h, mask=mask)
    x = x + nn.Dropout(self.dropout)(h, deterministic=not train)
    h = nn.LayerNorm()(x)
    h = _FlaxMLP(self.width, self.dropout, name='MLP_0')(h, train=train)
    return x + h


class _FlaxMLP(nn.Module):
  width: int
  dropout: float

  @nn.compact
  def __call__(self, x, *, train):
    init = nn.initializers.normal(0.02)
    h = nn.gelu(nn.Dense(4 * self.width, kernel_init=init)(x),
                approximate=True)
    h = nn.Dense(self.width, kernel_init=init)(h)
    return nn.Dropout(self.dropout)(h, deterministic=not train)


class _FlaxDT(dt_lib.DecisionTransformer):
  """All 3K tokens through flax's attention and dropout layers."""

  @nn.compact
  def __call__(self, rtg, states, actions, timesteps, mask, task, *, train):
    b, k, _ = states.shape
    w = self.width
    init = nn.initializers.normal(0.02)
    time = nn.Embed(self.max_timestep + 1, w, embedding_init=init,
                    name='embed_timestep')(
                        jnp.clip(timesteps, 0, self.max_timestep))
    tokens = jnp.stack([
        nn.Dense(w, kernel_init=init, name='embed_return')(rtg),
        heads.TaskDense(w, 1, name='embed_state')(states, task),
        heads.TaskDense(w, 1, name='embed_action')(actions, task)],
                       axis=2) + time[:, :, None]
    x = nn.LayerNorm(name='embed_ln')(tokens.reshape(b, 3 * k, w))
    x = nn.Dropout(self.dropout)(x, deterministic=not train)
    valid = jnp.repeat(mask > 0, 3, axis=1)
    eye = jnp.eye(3 * k, dtype=bool)
    allowed = jnp.tril(jnp.ones((3 * k, 3 * k), bool))[None] & (
        valid[:, None, :] | eye[None])
    for i in range(self.num_layers):
      x = _FlaxBlock(w, self.num_heads, self.dropout, name=f'block_{i}')(
          x, allowed[:, None], train=train)
    h = nn.LayerNorm(name='final_ln')(x).reshape(b, k, 3, w)[:, :, 1]
    return heads.TanhGaussianHead(self.action_size, 1, self.log_std_min,
                                  self.log_std_max, name='head')(h, task)


@pytest.mark.parametrize('num_heads', [1, 2])
def test_same_function_and_parameters_as_flax_layers(num_heads):
  # Parameter names, shapes and initial values (old checkpoints load), the
  # outputs and the gradients, with the same dropout masks in training.
  kw = dict(obs_dims=(5,), act_dims=(2,), num_layers=2, width=16,
            num_heads=num_heads, dropout=0.3, context_len=K, max_timestep=50)
  model, ref = dt_lib.DecisionTransformer(**kw), _FlaxDT(**kw)
  x = _inputs(5, 2)
  x['mask_BxK'] = x['mask_BxK'].at[0, :2].set(0.0)
  args = tuple(x.values())
  params = jax.jit(lambda: model.init(jax.random.key(0), *args,
                                      train=False)['params'])()
  ref_params = jax.jit(lambda: ref.init(jax.random.key(0), *args,
                                        train=False)['params'])()
  chex.assert_trees_all_equal(params, ref_params)
  for train in (False, True):
    def loss(m, p):
      mean, log_std = m.apply({'params': p}, *args, train=train,
                              rngs={'dropout': jax.random.key(3)})
      return jnp.sum(jnp.tanh(mean) ** 2) + jnp.sum(log_std), (mean, log_std)

    (_, out), grads = jax.jit(jax.value_and_grad(
        lambda p: loss(model, p), has_aux=True))(params)
    (_, ref_out), ref_grads = jax.jit(jax.value_and_grad(
        lambda p: loss(ref, p), has_aux=True))(params)
    chex.assert_trees_all_close(out, ref_out, atol=2e-6)
    chex.assert_trees_all_close(grads, ref_grads, atol=2e-6, rtol=1e-4)


def test_last_only_is_the_last_step():
  model = _model()
  x = _inputs(5, 2)
  x['mask_BxK'] = x['mask_BxK'].at[1, :4].set(0.0)
  params = _init(model, x)
  full = _apply(model, params, x)
  last = jax.jit(lambda p: model.apply(p, **x, train=False, last_only=True))(
      params)
  chex.assert_shape(last, (B, 1, 2))
  chex.assert_trees_all_close([o[:, 0] for o in last],
                              [o[:, -1] for o in full], atol=1e-6)


@pytest.mark.parametrize('prng', ['rbg_key', 'rbg_default',
                                  'threefry_not_partitionable'])
def test_other_prngs_run_flax_layers(prng, monkeypatch):
  # With bits the dropout kernel does not reproduce, the model is flax's
  # own layers: equal to the reference in training (the same masks) and
  # in evaluation, and no kernel runs. (An rbg dropout key under the
  # default threefry config decides training only: evaluation draws no
  # key and keeps the kernels.)
  kernels_allowed = [False]

  def guard(fn):
    def guarded(*args, **kwargs):
      assert kernels_allowed[0], 'a kernel ran with an unsupported PRNG'
      return fn(*args, **kwargs)
    return guarded

  for name in ('layer_norm', 'attend'):
    monkeypatch.setattr(kernels, name, guard(getattr(kernels, name)))
  kw = dict(obs_dims=(5,), act_dims=(2,), num_layers=2, width=16,
            num_heads=2, dropout=0.3, context_len=K, max_timestep=50)
  model, ref = dt_lib.DecisionTransformer(**kw), _FlaxDT(**kw)
  x = _inputs(5, 2)
  x['mask_BxK'] = x['mask_BxK'].at[0, :2].set(0.0)
  args = tuple(x.values())
  if prng == 'rbg_key':
    context, key = contextlib.nullcontext(), jax.random.key(3, impl='rbg')
  elif prng == 'rbg_default':
    context, key = jax.default_prng_impl('rbg'), None
  else:
    context, key = jax.threefry_partitionable(False), None
  with context:
    key = jax.random.key(3) if key is None else key
    kernels_allowed[0] = prng == 'rbg_key'
    params = jax.jit(lambda: model.init(jax.random.key(0), *args,
                                        train=False)['params'])()
    outs = {}
    for train in (False, True):
      kernels_allowed[0] = not train and prng == 'rbg_key'

      def loss(m, p):
        mean, log_std = m.apply({'params': p}, *args, train=train,
                                rngs={'dropout': key})
        return jnp.sum(jnp.tanh(mean) ** 2) + jnp.sum(log_std), (mean,
                                                                 log_std)

      (_, outs[train]), grads = jax.jit(jax.value_and_grad(
          lambda p: loss(model, p), has_aux=True))(params)
      (_, ref_out), ref_grads = jax.jit(jax.value_and_grad(
          lambda p: loss(ref, p), has_aux=True))(params)
      chex.assert_trees_all_close(outs[train], ref_out, atol=2e-6)
      chex.assert_trees_all_close(grads, ref_grads, atol=2e-6, rtol=1e-4)
    kernels_allowed[0] = prng == 'rbg_key'
    last = jax.jit(lambda p: model.apply({'params': p}, *args, train=False,
                                         last_only=True))(params)
    chex.assert_trees_all_close([o[:, 0] for o in last],
                                [o[:, -1] for o in outs[False]], atol=1e-6)
