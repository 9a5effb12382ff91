"""Tests of distill/losses.py."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from distill import losses

B, K, A = 3, 4, 5


def _rand(seed, shape=(B, K, A), scale=1.0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape) * scale,
                     jnp.float32)


def _mask(valid=3):
  return jnp.asarray(np.arange(A) < valid, jnp.float32)


def test_tanh_gaussian_log_prob_matches_scipy():
  mean, log_std = _rand(0), _rand(1, scale=0.3)
  action = jnp.tanh(_rand(2))
  action = action.at[0, 0, 0].set(1.0)  # On the bound: clipped, finite.
  got = jax.jit(losses.tanh_gaussian_log_prob)(mean, log_std, action, _mask())
  bound = np.float32(losses.ACTION_CLIP)  # The float32 bound the loss sees.
  a = np.clip(np.asarray(action), -bound, bound).astype(np.float64)
  u = np.arctanh(a)
  per_dim = (stats.norm.logpdf(u, np.asarray(mean), np.exp(np.asarray(log_std)))
             - np.log(1 - np.tanh(u) ** 2))
  want = (per_dim * np.asarray(_mask())).sum(-1)
  chex.assert_shape(got, (B, K))
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)


def test_sample_tanh_gaussian_matches_scipy_change_of_variables():
  mean, log_std = _rand(0), _rand(1, scale=0.3)
  key = jax.random.key(5)
  action, log_prob = jax.jit(losses.sample_tanh_gaussian)(key, mean, log_std)
  chex.assert_shape(action, (B, K, A))
  chex.assert_shape(log_prob, (B, K))
  eps = np.asarray(jax.random.normal(key, (B, K, A)), np.float64)
  u = np.asarray(mean, np.float64) + np.exp(np.asarray(log_std)) * eps
  np.testing.assert_allclose(action, np.tanh(u), rtol=1e-5, atol=1e-6)
  want = (stats.norm.logpdf(u, np.asarray(mean), np.exp(np.asarray(log_std)))
          - np.log1p(-np.tanh(u) ** 2)).sum(-1)
  np.testing.assert_allclose(log_prob, want, rtol=1e-4, atol=1e-3)
  # The same density as the loss evaluates on a dataset action.
  np.testing.assert_allclose(
      log_prob, losses.tanh_gaussian_log_prob(mean, log_std, action,
                                              jnp.ones(A)),
      rtol=1e-3, atol=1e-2)


def test_sample_tanh_gaussian_any_leading_shape_and_gradients():
  mean, log_std = _rand(0, (7, 2)), _rand(1, (7, 2), scale=0.3)
  action, log_prob = losses.sample_tanh_gaussian(jax.random.key(0), mean,
                                                 log_std)
  chex.assert_shape(action, (7, 2))
  chex.assert_shape(log_prob, (7,))
  assert np.all(np.abs(np.asarray(action)) <= 1.0)
  grads = jax.grad(lambda m, s: jnp.sum(losses.sample_tanh_gaussian(
      jax.random.key(0), m, s)[1]), argnums=(0, 1))(mean, log_std)
  chex.assert_tree_all_finite(grads)
  with pytest.raises(AssertionError):
    losses.sample_tanh_gaussian(jax.random.key(0), mean, log_std[:, :1])


def test_gaussian_entropy_matches_scipy():
  log_std = _rand(1, scale=0.3)
  got = losses.gaussian_entropy(log_std, _mask(2))
  want = (stats.norm.entropy(scale=np.exp(np.asarray(log_std)))
          * np.asarray(_mask(2))).sum(-1)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('temperature', [1.0, 0.5])
def test_kl_against_monte_carlo(temperature):
  tm, tl, sm, sl = _rand(0), _rand(1, scale=0.3), _rand(2), _rand(3, scale=0.3)
  got = jax.jit(lambda *a: losses.kl_diag_gaussian(
      *a, temperature=temperature))(tm, tl, sm, sl, _mask())
  n = 200_000
  r = np.random.default_rng(4)
  t_std = np.exp(np.asarray(tl, np.float64)) * temperature
  s_std = np.exp(np.asarray(sl, np.float64))
  x = np.asarray(tm)[None] + t_std[None] * r.normal(size=(n, B, K, A))
  log_ratio = (stats.norm.logpdf(x, np.asarray(tm), t_std)
               - stats.norm.logpdf(x, np.asarray(sm), s_std))
  want = (log_ratio.mean(0) * np.asarray(_mask())).sum(-1)
  chex.assert_shape(got, (B, K))
  np.testing.assert_allclose(got, want, rtol=0.05, atol=0.05)
  assert np.all(np.asarray(got) >= 0)
  # KL of a distribution to itself (temperature 1) is 0.
  np.testing.assert_allclose(losses.kl_diag_gaussian(tm, tl, tm, tl, _mask()),
                             0.0, atol=1e-6)


def test_kl_matches_the_textbook_closed_form_in_float64():
  tm, tl, sm, sl = _rand(0), _rand(1, scale=0.5), _rand(2), _rand(3, scale=0.5)
  got = losses.kl_diag_gaussian(tm, tl, sm, sl, _mask(4), temperature=0.7)

  def f64(x):
    return np.asarray(x, np.float64)

  s1, s2 = np.exp(f64(tl)) * 0.7, np.exp(f64(sl))
  per_dim = (np.log(s2 / s1) + (s1**2 + (f64(tm) - f64(sm))**2) / (2 * s2**2)
             - 0.5)
  want = (per_dim * np.asarray(_mask(4))).sum(-1)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_padded_dims_never_matter():
  mean, log_std, action = _rand(0), _rand(1), jnp.tanh(_rand(2))
  m = _mask(3)

  def junk(x):
    return x.at[..., 3:].set(1e3)

  for fn, args in [
      (losses.tanh_gaussian_log_prob, (mean, log_std, action)),
      (losses.kl_diag_gaussian, (mean, log_std, action, log_std)),
      (losses.mse, (mean, action)),
  ]:
    np.testing.assert_allclose(fn(*args, m), fn(*map(junk, args), m),
                               rtol=1e-6)


def test_mse_and_per_example_mask():
  pred, target = _rand(0), _rand(1)
  m_Bx1xA = jnp.asarray(np.arange(A)[None, None] < np.array([5, 3, 1])[
      :, None, None], jnp.float32)
  got = losses.mse(pred, target, m_Bx1xA)
  sq = np.square(np.asarray(pred) - np.asarray(target))
  for b, valid in enumerate([5, 3, 1]):
    np.testing.assert_allclose(got[b], sq[b, :, :valid].mean(-1), rtol=1e-5)


def test_masked_mean():
  x = jnp.asarray([[1.0, 2.0, jnp.nan], [4.0, 5.0, 6.0]])
  m = jnp.asarray([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
  np.testing.assert_allclose(losses.masked_mean(x, m), 8.0 / 3)
  assert float(losses.masked_mean(x, jnp.zeros_like(m))) == 0.0


def test_rank_checks():
  with pytest.raises(AssertionError):
    losses.tanh_gaussian_log_prob(jnp.zeros((B, A)), jnp.zeros((B, A)),
                                  jnp.zeros((B, A)), _mask())
  with pytest.raises(AssertionError):
    losses.mse(jnp.zeros((B, K, A)), jnp.zeros((B, K, A - 1)), 1.0)
