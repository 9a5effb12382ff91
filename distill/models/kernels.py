"""Speed kernels of the Decision Transformer, and when they may be used.

Each kernel computes the function of a flax layer (or a jax primitive) in a
way XLA:CPU runs faster, with the same parameters:

- `bernoulli` / `Dropout`: jax's threefry bits hashed by an unrolled
  `threefry2x32` that fuses into its consumer; bit for bit
  `jax.random.bernoulli` / `flax.linen.Dropout` with the same key.
- `attend`: attention on [batch x heads, tokens, head size] with its
  backward pass written out (`flax.linen.MultiHeadDotProductAttention`'s
  function).
- `layer_norm` / `LayerNorm`: `flax.linen.LayerNorm` with its backward
  pass written out.
- `linear`: a dense layer as one 2-D matmul.

The dropout kernel reproduces one bit layout: the threefry2x32 PRNG with
partitionable bits (jax's default). `supported` says whether a key (or,
without one, the default PRNG) has it; where it does not, the model uses
flax's own layers instead (`decision_transformer.DecisionTransformer`), so
its function never depends on which PRNG the user configured.

Letters in shape suffixes: G batch x heads, Q queries, L keys, D head size
(or input width), F output width, B batch, N flattened rows.
"""

from collections.abc import Sequence
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def _rotate_left(x, d: int):
  return (x << np.uint32(d)) | (x >> np.uint32(32 - d))


def threefry2x32(k1, k2, x0, x1):
  """The Threefry-2x32 hash (20 rounds), unrolled into elementwise ops.

  The same function as jax's `threefry2x32_p`, whose CPU lowering is a
  rolled loop that XLA cannot fuse: every random word is written to memory
  and copied once per round. Unrolled, the hash fuses into the op that uses
  its bits (and only the elements a slice keeps are computed).

  Args:
    k1: uint32 key word 1 (broadcastable against x0).
    k2: uint32 key word 2.
    x0: uint32 counter words 1.
    x1: uint32 counter words 2.

  Returns:
    The two uint32 output words.

  References:
    Salmon et al. (2011), Parallel random numbers: as easy as 1, 2, 3.
  """
  ks = (k1, k2, k1 ^ k2 ^ np.uint32(0x1BD11BDA))
  x0, x1 = x0 + ks[0], x1 + ks[1]
  for i in range(5):
    for r in _ROTATIONS[i % 2]:
      x0 = x0 + x1
      x1 = x0 ^ _rotate_left(x1, r)
    x0 = x0 + ks[(i + 1) % 3]
    x1 = x1 + ks[(i + 2) % 3] + np.uint32(i + 1)
  return x0, x1


_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def linear(x_BxLxD, kernel_DxF, bias_F):
  """`x @ kernel + bias` over the last axis, as one 2-D matmul.

  Flattening the leading axes first matters on CPU: the kernel gradient is
  then a plain [D, N] x [N, F] contraction that the GEMM reads in place,
  whereas contracting two leading axes makes XLA copy a transposed
  cotangent for every layer.

  Args:
    x_BxLxD: inputs, any leading axes.
    kernel_DxF: the kernel.
    bias_F: the bias.

  Returns:
    [..., F].
  """
  lead = x_BxLxD.shape[:-1]
  y_NxF = x_BxLxD.reshape(-1, x_BxLxD.shape[-1]) @ kernel_DxF + bias_F
  return y_NxF.reshape(*lead, kernel_DxF.shape[-1])


def _threefry_key_data(key) -> jax.Array | None:
  """The uint32[..., 2] data of a key whose bits `bernoulli` reproduces.

  That is a threefry2x32 key while jax draws partitionable threefry bits
  (`jax_threefry_partitionable`, the default since jax 0.5); None for any
  other PRNG, or for threefry's older bit layout.
  """
  if not jax.config.jax_threefry_partitionable:
    return None
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    if str(jax.random.key_impl(key)) != 'threefry2x32':
      return None
    return jax.random.key_data(key)
  if (key.dtype != jnp.uint32 or key.shape[-1:] != (2,)
      or jax.config.jax_default_prng_impl != 'threefry2x32'):
    return None
  return key


def supported(key: jax.Array | None = None) -> bool:
  """Whether the kernels may stand in for flax's layers with this PRNG.

  Checked at trace time. The dropout kernel draws jax's partitionable
  threefry bits (see `bernoulli`); with any other PRNG the model runs
  flax's own layers, whose masks then come from `jax.random` itself.

  Args:
    key: the dropout key (typed or raw); None checks the default PRNG
      (`jax_default_prng_impl`), e.g. when no key is drawn.

  Returns:
    True for threefry2x32 keys with partitionable bits.
  """
  if key is None:
    return (jax.config.jax_default_prng_impl == 'threefry2x32'
            and bool(jax.config.jax_threefry_partitionable))
  return _threefry_key_data(key) is not None


def bernoulli(key, p: float, shape: Sequence[int]) -> jax.Array:
  """`jax.random.bernoulli(key, p, shape)`, bit for bit, fusable.

  For a threefry key (jax's default) the bits are jax's partitionable
  threefry bits of each element's flat index, hashed by the unrolled
  `threefry2x32`, and compared as integers: `uniform < p` with jax's
  23-bit uniforms is `bits < ceil(float32(p) * 2**23) * 2**9`. Any other
  PRNG (see `supported`) falls back to `jax.random.bernoulli`.

  Args:
    key: a PRNG key (typed or raw).
    p: probability of True, in (0, 1).
    shape: output shape (fewer than 2**32 elements).

  Returns:
    A bool array of `shape`.
  """
  data = _threefry_key_data(key)
  if data is None:
    return jax.random.bernoulli(key, p, shape)
  size = int(np.prod(shape))
  if size >= 2**32 or not 0.0 < p < 1.0:
    return jax.random.bernoulli(key, p, shape)
  counts = jnp.arange(size, dtype=jnp.uint32).reshape(shape)
  x0, x1 = threefry2x32(data[..., 0], data[..., 1],
                        jnp.zeros_like(counts), counts)
  threshold = int(np.ceil(np.float64(np.float32(p)) * 2.0**23)) << 9
  return (x0 ^ x1) < np.uint32(threshold)


class Dropout(nn.Module):
  """Inverted dropout, equal to `flax.linen.Dropout` with the same key.

  The mask is drawn for the whole `full_shape` (the token axis of every
  layer is the full 3K) and `rows` picks the tokens this call holds, so
  layers that skip tokens nobody reads draw the very same mask entries
  for the tokens they keep.

  Attributes:
    rate: probability of zeroing an element.
  """

  rate: float

  @nn.compact
  def __call__(self, x_BxQxW, *, train: bool,
               full_shape: Sequence[int] | None = None,
               rows: slice = slice(None)):
    if not train or self.rate == 0.0:
      return x_BxQxW
    if self.rate == 1.0:
      return jnp.zeros_like(x_BxQxW)
    keep_prob = 1.0 - self.rate
    shape = x_BxQxW.shape if full_shape is None else full_shape
    keep_BxQxW = bernoulli(self.make_rng('dropout'), keep_prob, shape)[
        :, rows]
    return jnp.where(keep_BxQxW, x_BxQxW / keep_prob,
                     jnp.zeros_like(x_BxQxW))


def _attend_forward(q_GxQxD, k_GxLxD, v_GxLxD, allowed_GxQxL, keep_1xQxL):
  logits_GxQxL = jnp.einsum('gqd,gkd->gqk', q_GxQxD, k_GxLxD)
  logits_GxQxL = jnp.where(allowed_GxQxL, logits_GxQxL,
                           jnp.finfo(jnp.float32).min)
  probs_GxQxL = jax.nn.softmax(logits_GxQxL)
  weights_GxQxL = (probs_GxQxL if keep_1xQxL is None
                   else probs_GxQxL * keep_1xQxL)
  out_GxQxD = jnp.einsum('gqk,gkd->gqd', weights_GxQxL, v_GxLxD)
  return out_GxQxD, probs_GxQxL


@jax.custom_vjp
def attend(q_GxQxD, k_GxLxD, v_GxLxD, allowed_GxQxL, keep_1xQxL):
  """`softmax(q k^T where allowed) * keep @ v` for G = batch x heads.

  Three-dimensional (heads folded into the batch axis): XLA:CPU runs these
  batched matmuls without the transposed copies a [B, Q, H, D] einsum
  makes. The backward pass is written out: the softmax's row sums
  `sum_k dP_k P_k` are taken as `sum_d dO_d O_d` (the same quantity, since
  `O = (P * keep) @ v`), a reduction over the head size instead of over
  the L keys, and no gradient flows through the mask's `where`.

  Args:
    q_GxQxD: queries, already scaled by 1/sqrt(D).
    k_GxLxD: keys.
    v_GxLxD: values.
    allowed_GxQxL: bool, which keys each query sees (each row has one).
    keep_1xQxL: dropout multipliers of the weights (0 or 1/keep_prob),
      or None.

  Returns:
    [G, Q, D].
  """
  return _attend_forward(q_GxQxD, k_GxLxD, v_GxLxD, allowed_GxQxL,
                         keep_1xQxL)[0]


def _attend_fwd(q, k, v, allowed, keep):
  out, probs = _attend_forward(q, k, v, allowed, keep)
  return out, (q, k, v, keep, probs, out)


def _attend_bwd(res, d_out_GxQxD):
  q, k, v, keep, probs_GxQxL, out_GxQxD = res
  weights = probs_GxQxL if keep is None else probs_GxQxL * keep
  d_weights_GxQxL = jnp.einsum('gqd,gkd->gqk', d_out_GxQxD, v)
  d_v = jnp.einsum('gqk,gqd->gkd', weights, d_out_GxQxD)
  d_probs = d_weights_GxQxL if keep is None else d_weights_GxQxL * keep
  row_GxQ = jnp.sum(d_out_GxQxD * out_GxQxD, axis=-1)
  d_logits = probs_GxQxL * (d_probs - row_GxQ[..., None])
  d_q = jnp.einsum('gqk,gkd->gqd', d_logits, k)
  d_k = jnp.einsum('gqk,gqd->gkd', d_logits, q)
  return d_q, d_k, d_v, None, None


attend.defvjp(_attend_fwd, _attend_bwd)


def _layer_norm_forward(x, scale, bias, epsilon):
  mean = jnp.mean(x, axis=-1, keepdims=True)
  mean2 = jnp.mean(jnp.square(x), axis=-1, keepdims=True)
  var = jnp.maximum(0.0, mean2 - jnp.square(mean))
  rstd = jax.lax.rsqrt(var + epsilon)
  return (x - mean) * (rstd * scale) + bias, rstd


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def layer_norm(x, scale, bias, epsilon):
  """`flax.linen.LayerNorm`'s function over the last axis (epsilon inside
  the square root, the fast variance E[x^2] - E[x]^2 clipped at 0), with
  its backward pass written out: `dx = rstd * (g - mean(g) - xhat *
  mean(g * xhat))` for `g = dy * scale`, one fusion instead of autodiff's
  chain of reductions. (Where the variance is clipped, a constant row,
  autodiff would differ; the model's rows never are.)"""
  return _layer_norm_forward(x, scale, bias, epsilon)[0]


def _layer_norm_fwd(x, scale, bias, epsilon):
  y, rstd = _layer_norm_forward(x, scale, bias, epsilon)
  return y, (x, scale, rstd)


def _layer_norm_bwd(epsilon, res, dy):
  del epsilon
  x, scale, rstd = res
  xhat = (x - jnp.mean(x, axis=-1, keepdims=True)) * rstd
  lead = tuple(range(x.ndim - 1))
  d_bias = jnp.sum(dy, axis=lead)
  d_scale = jnp.sum(dy * xhat, axis=lead)
  g = dy * scale
  dx = rstd * (g - jnp.mean(g, axis=-1, keepdims=True)
               - xhat * jnp.mean(g * xhat, axis=-1, keepdims=True))
  return dx, d_scale, d_bias


layer_norm.defvjp(_layer_norm_fwd, _layer_norm_bwd)


class LayerNorm(nn.Module):
  """`flax.linen.LayerNorm` (same parameters, names and function)."""

  epsilon: float = 1e-6

  @nn.compact
  def __call__(self, x):
    w = x.shape[-1]
    scale = self.param('scale', nn.initializers.ones, (w,))
    bias = self.param('bias', nn.initializers.zeros, (w,))
    return layer_norm(x, scale, bias, self.epsilon)


