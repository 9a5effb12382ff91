"""Tests of distill/models/kernels.py against jax and flax's own layers.

Each kernel must compute what it stands in for: `bernoulli` jax's masks bit
for bit (typed, raw and batched keys), `attend` and `layer_norm` their
forward functions with written-out gradients equal to autodiff's, and
`supported` must turn the kernels off for any PRNG whose bits `bernoulli`
does not reproduce.
"""

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill.models import kernels


@pytest.mark.parametrize('shape,p', [((7, 13, 5), 0.9), ((1, 1, 60, 60), 0.9),
                                     ((64, 60, 128), 0.5), ((3,), 0.3)])
def test_bernoulli_matches_jax_bit_for_bit(shape, p):
  for seed in range(3):
    key = jax.random.fold_in(jax.random.key(seed), 5)
    np.testing.assert_array_equal(
        jax.jit(lambda k: kernels.bernoulli(k, p, shape))(key),
        jax.random.bernoulli(key, p, shape))
  raw = jax.random.PRNGKey(4)  # legacy uint32 keys too
  np.testing.assert_array_equal(kernels.bernoulli(raw, p, shape),
                                jax.random.bernoulli(raw, p, shape))
  # Batched keys (teachers are vmapped).
  keys = jax.random.split(jax.random.key(9), 2)
  np.testing.assert_array_equal(
      jax.vmap(lambda k: kernels.bernoulli(k, p, shape))(keys),
      jax.vmap(lambda k: jax.random.bernoulli(k, p, shape))(keys))


def test_bernoulli_other_prng_falls_back():
  key = jax.random.key(0, impl='rbg')
  np.testing.assert_array_equal(kernels.bernoulli(key, 0.7, (5, 4)),
                                jax.random.bernoulli(key, 0.7, (5, 4)))


def test_bernoulli_falls_back_without_partitionable_threefry_bits():
  # jax's older threefry layout draws other bits for the same key.
  key = jax.random.key(2)
  with jax.threefry_partitionable(False):
    assert not kernels.supported(key) and not kernels.supported()
    np.testing.assert_array_equal(kernels.bernoulli(key, 0.7, (6, 5)),
                                  jax.random.bernoulli(key, 0.7, (6, 5)))


def test_supported_only_for_partitionable_threefry():
  assert kernels.supported()
  assert kernels.supported(jax.random.key(0))
  assert kernels.supported(jax.random.PRNGKey(0))
  assert not kernels.supported(jax.random.key(0, impl='rbg'))
  assert not kernels.supported(jax.random.key(0, impl='unsafe_rbg'))
  with jax.default_prng_impl('rbg'):
    assert not kernels.supported()
    assert not kernels.supported(jax.random.PRNGKey(0))
    assert kernels.supported(jax.random.key(0, impl='threefry2x32'))


@pytest.mark.parametrize('dropout', [False, True])
def test_attend_gradients_equal_autodiff(dropout):
  # The written-out backward of `attend` against autodiff of the same
  # forward, with padded keys (masked entries) and dropout multipliers.
  g, q, n, d = 4, 5, 7, 3
  r = np.random.default_rng(0)
  args = [jnp.asarray(r.normal(size=s), jnp.float32)
          for s in ((g, q, d), (g, n, d), (g, n, d))]
  allowed = jnp.asarray(r.uniform(size=(g, q, n)) < 0.6) | jnp.eye(
      q, n, k=n - q, dtype=bool)[None]
  allowed = allowed.at[0, :, 0].set(False)  # A key nobody in row 0 sees.
  keep = (jnp.asarray(r.uniform(size=(1, q, n)) < 0.8, jnp.float32) / 0.8
          if dropout else None)
  cot = jnp.asarray(r.normal(size=(g, q, d)), jnp.float32)

  def loss(fn, *x):
    return jnp.sum(fn(*x, allowed, keep) * cot)

  reference = lambda *x: kernels._attend_forward(*x)[0]
  out = kernels.attend(*args, allowed, keep)
  chex.assert_trees_all_equal(out, reference(*args, allowed, keep))
  grads = jax.jit(jax.grad(functools.partial(loss, kernels.attend),
                           argnums=(0, 1, 2)))(*args)
  ref_grads = jax.jit(jax.grad(functools.partial(loss, reference),
                               argnums=(0, 1, 2)))(*args)
  chex.assert_trees_all_close(grads, ref_grads, atol=1e-6, rtol=1e-5)
  # The key nobody sees gets no gradient, exactly; the others do.
  assert float(jnp.abs(grads[1][0, 0]).max()) == 0.0
  assert float(jnp.abs(grads[2][0, 0]).max()) == 0.0
  assert float(jnp.abs(grads[1]).max()) > 0.0


def test_layer_norm_equals_flax():
  x = jnp.asarray(np.random.default_rng(1).normal(3.0, 2.0, size=(4, 9, 8)),
                  jnp.float32)
  ours, ref = kernels.LayerNorm(), nn.LayerNorm()
  params = ref.init(jax.random.key(0), x)
  params = jax.tree.map(
      lambda p: p + jnp.asarray(np.random.default_rng(2).normal(
          size=p.shape), jnp.float32), params)
  chex.assert_trees_all_equal(
      jax.tree.map(jnp.shape, ours.init(jax.random.key(0), x)),
      jax.tree.map(jnp.shape, params))
  cot = jnp.asarray(np.random.default_rng(3).normal(size=x.shape),
                    jnp.float32)

  def loss(model, p, x):
    return jnp.sum(model.apply(p, x) * cot)

  chex.assert_trees_all_close(ours.apply(params, x), ref.apply(params, x),
                              atol=1e-6)
  grads = jax.jit(jax.grad(functools.partial(loss, ours), argnums=(0, 1)))(
      params, x)
  ref_grads = jax.jit(jax.grad(functools.partial(loss, ref),
                               argnums=(0, 1)))(params, x)
  chex.assert_trees_all_close(grads, ref_grads, atol=2e-5, rtol=1e-5)
