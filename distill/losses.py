"""Pure per-example losses for Decision Transformer policies.

Letters in shape suffixes: B batch, K context steps, A (padded) action dims.

Every function takes an action-dim mask `act_mask` broadcastable to [B, K, A]
(e.g. [A], or [B, 1, A] gathered per example from
`decision_transformer.action_mask(act_dims)[task_B][:, None]`) and returns
one value per step [B, K]; padded action dims contribute nothing. Reduce over
steps with `masked_mean(x_BxK, mask_BxK)`.

Policies are tanh-squashed diagonal Gaussians given by the pre-tanh
`(mean, log_std)`; `sample_tanh_gaussian` draws from one (any leading shape,
no mask), for the behavior policies and stochastic evaluation.
"""

import math

import chex
import jax
import jax.numpy as jnp

_HALF_LOG_2PI_E = 0.5 * math.log(2 * math.pi * math.e)
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
ACTION_CLIP = 1.0 - 1e-6


def _check(mean, others, act_mask):
  chex.assert_rank(mean, 3)
  chex.assert_equal_shape([mean, *others])
  if jnp.ndim(act_mask) > 3:
    raise ValueError(
        f'distill/losses.py: act_mask must broadcast to {mean.shape}, got'
        f' shape {jnp.shape(act_mask)}'
    )
  jnp.broadcast_shapes(jnp.shape(act_mask), mean.shape)


def _masked_sum(x_BxKxA, act_mask):
  # `where`, not a product: a huge or non-finite value in a padded dim
  # (e.g. an unbounded log-std there) must not turn into NaN.
  act_mask = jnp.broadcast_to(act_mask, x_BxKxA.shape)
  return jnp.sum(jnp.where(act_mask > 0, x_BxKxA * act_mask, 0.0), axis=-1)


def _log1m_tanh_sq(u):
  # log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)), stable for large |u|.
  return 2.0 * (math.log(2.0) - u - jax.nn.softplus(-2.0 * u))


def _log_normal(z, log_std):
  # log N(u; mean, std) with z = (u - mean) / std.
  return -0.5 * jnp.square(z) - log_std - _HALF_LOG_2PI


def sample_tanh_gaussian(key, mean, log_std):
  """Samples a tanh-squashed diagonal Gaussian, with its log-likelihood.

  Reparameterized, a = tanh(mean + std * eps) with eps ~ N(0, I), so the
  log-likelihood has gradients through the sample. It is computed from eps
  and the pre-tanh sample, not from atanh(a) as in `tanh_gaussian_log_prob`,
  so it stays exact where tanh rounds to +-1.

  Args:
    key: typed PRNG key.
    mean: [..., A] pre-tanh means.
    log_std: [..., A] pre-tanh log-stds.

  Returns:
    (action [..., A] in [-1, 1], log_prob [...] summed over A).

  References:
    Haarnoja et al. (2018), Soft Actor-Critic, appendix C (the tanh
    change of variables). arXiv:1801.01290.
  """
  chex.assert_equal_shape([mean, log_std])
  eps = jax.random.normal(key, mean.shape, mean.dtype)
  pre_tanh = mean + jnp.exp(log_std) * eps
  log_prob = jnp.sum(_log_normal(eps, log_std) - _log1m_tanh_sq(pre_tanh),
                     axis=-1)
  return jnp.tanh(pre_tanh), log_prob


def tanh_gaussian_log_prob(mean, log_std, action, act_mask):
  """Log-likelihood of actions under a tanh-squashed diagonal Gaussian.

  log pi(a) = sum_i [ log N(u_i; mean_i, std_i) - log(1 - tanh(u_i)^2) ],
  u = atanh(a), with `a` clipped to +-(1 - 1e-6) first (dataset actions
  can sit on the bounds).

  Args:
    mean: [B, K, A] pre-tanh means.
    log_std: [B, K, A] pre-tanh log-stds.
    action: [B, K, A] actions in [-1, 1].
    act_mask: broadcastable to [B, K, A]; 1 for valid action dims.

  Returns:
    [B, K] log-likelihood summed over valid action dims.
  """
  _check(mean, (log_std, action), act_mask)
  u = jnp.arctanh(jnp.clip(action, -ACTION_CLIP, ACTION_CLIP))
  z = (u - mean) * jnp.exp(-log_std)
  return _masked_sum(_log_normal(z, log_std) - _log1m_tanh_sq(u), act_mask)


def gaussian_entropy(log_std, act_mask):
  """Entropy of the pre-tanh diagonal Gaussian.

  This is the entropy of the Gaussian before the tanh (closed form,
  sum_i 0.5 log(2 pi e) + log_std_i), not of the squashed distribution, whose
  entropy has no closed form; it upper-bounds the squashed entropy and, being
  deterministic, adds no sampling noise to the loss. (Online DT estimates the
  squashed entropy by sampling instead.)

  Args:
    log_std: [B, K, A] pre-tanh log-stds.
    act_mask: broadcastable to [B, K, A].

  Returns:
    [B, K] entropy summed over valid action dims.
  """
  _check(log_std, (), act_mask)
  return _masked_sum(_HALF_LOG_2PI_E + log_std, act_mask)


def kl_diag_gaussian(
    teacher_mean,
    teacher_log_std,
    student_mean,
    student_log_std,
    act_mask,
    *,
    temperature: float = 1.0,
):
  """KL(teacher || student) between pre-tanh diagonal Gaussians.

  The tanh is a bijection, so this is also the KL between the squashed
  policies. The teacher's std is multiplied by `temperature` (< 1 sharpens
  the teacher, as Rusu et al. do for policy distillation). Per action dim,
  in closed form, with d = log s_t - log s_s:

    KL = (m_t - m_s)^2 / (2 s_s^2) + (exp(2 d) - 1) / 2 - d.

  Args:
    teacher_mean: [B, K, A].
    teacher_log_std: [B, K, A].
    student_mean: [B, K, A].
    student_log_std: [B, K, A].
    act_mask: broadcastable to [B, K, A].
    temperature: positive scale of the teacher's std.

  Returns:
    [B, K] KL summed over valid action dims.

  References:
    Rusu et al. (2016), Policy Distillation. arXiv:1511.06295.
  """
  _check(teacher_mean, (teacher_log_std, student_mean, student_log_std),
         act_mask)
  # The stds are formed and their logs taken again, as distrax's Normal KL
  # did, so results match earlier runs bit for bit.
  teacher_std = jnp.exp(teacher_log_std) * temperature
  student_std = jnp.exp(student_log_std)
  diff_log_std = jnp.log(teacher_std) - jnp.log(student_std)
  kl = (0.5 * jnp.square(teacher_mean / student_std
                         - student_mean / student_std)
        + 0.5 * jnp.expm1(2.0 * diff_log_std) - diff_log_std)
  return _masked_sum(kl, act_mask)


def mse(pred, target, act_mask):
  """Mean squared error over the valid action dims.

  Args:
    pred: [B, K, A] predicted actions (e.g. tanh of a deterministic mean).
    target: [B, K, A] dataset actions.
    act_mask: broadcastable to [B, K, A].

  Returns:
    [B, K] mean over valid action dims of the squared error.
  """
  _check(pred, (target,), act_mask)
  act_mask = jnp.broadcast_to(act_mask, pred.shape)
  sq = _masked_sum(jnp.square(pred - target), act_mask)
  return sq / jnp.maximum(jnp.sum(act_mask, axis=-1), 1.0)


def masked_mean(x_BxK, mask_BxK):
  """Mean of `x` over the steps where `mask` is 1 (0 when none is).

  Args:
    x_BxK: per-step values.
    mask_BxK: 1 for valid steps.

  Returns:
    Scalar mean over valid steps.
  """
  chex.assert_equal_shape([x_BxK, mask_BxK])
  mask_BxK = mask_BxK.astype(x_BxK.dtype)
  # `where`, not a product, so a non-finite value on a padded step is dropped.
  total = jnp.sum(jnp.where(mask_BxK > 0, x_BxK * mask_BxK, 0.0))
  return total / jnp.maximum(jnp.sum(mask_BxK), 1.0)
