"""Decision Transformer (Chen et al. 2021), single- or multi-task, flax linen.

Letters in shape suffixes: B batch, K context steps, L = 3K tokens, T tasks,
S padded state size (max over tasks), A padded action size, W width, H heads.

Per step three tokens are embedded, return-to-go, state and action, and
interleaved (R_1, s_1, a_1, R_2, s_2, a_2, ...); a learned timestep
embedding is added to each token, then a LayerNorm, then a GPT-style causal
transformer (pre-LayerNorm blocks, GELU MLP 4x wide, dropout on the
embeddings, attention weights and residual branches) and a final LayerNorm.
The action at step t is predicted from the state token of step t, which sees
R_1..R_t, s_1..s_t and a_1..a_{t-1}.

With several tasks (`len(obs_dims) > 1`) a learned task embedding is added to
every token and the state/action embeddings and the output head are per-task
adapters (stacked weights gathered by task id). With one task it is exactly a
plain DT (no task embedding, plain dense layers).

Padding: segments are left-padded (valid steps right-aligned). The attention
mask is causal AND key-valid, plus each token always sees itself, so a padded
query row is never empty (no NaN) and valid tokens never see padded ones.

References:
  Chen et al. (2021), Decision Transformer: Reinforcement Learning via
  Sequence Modeling. arXiv:2106.01345.
  Zheng, Zhang & Grover (2022), Online Decision Transformer.
  arXiv:2202.05607 (tanh-Gaussian head with bounded log-std).
"""

from collections.abc import Sequence
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from distill.models import heads

_INIT = nn.initializers.normal(0.02)


def action_mask(act_dims: Sequence[int]) -> jax.Array:
  """Masks of the valid action dims per task.

  Args:
    act_dims: action size of each task.

  Returns:
    [T, A] float32, 1 for the first `act_dims[t]` entries of row t, where
    A = max(act_dims).
  """
  act_dims = np.asarray(act_dims, np.int32)
  a = int(act_dims.max())
  return jnp.asarray(np.arange(a)[None, :] < act_dims[:, None], jnp.float32)


def obs_mask(obs_dims: Sequence[int]) -> jax.Array:
  """Masks of the valid state features per task ([T, S] float32)."""
  return action_mask(obs_dims)


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
  """The uint32[..., 2] data of a threefry key, None for other PRNGs."""
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    if str(jax.random.key_impl(key)) != 'threefry2x32':
      return None
    return jax.random.key_data(key)
  if (key.dtype != jnp.uint32 or key.shape[-1:] != (2,)
      or jax.config.jax_default_prng_impl != 'threefry2x32'):
    return None
  return key


def bernoulli(key, p: float, shape: Sequence[int]) -> jax.Array:
  """`jax.random.bernoulli(key, p, shape)`, bit for bit, fusable.

  For a threefry key (jax's default) the bits are jax's partitionable
  threefry bits of each element's flat index, hashed by the unrolled
  `threefry2x32`, and compared as integers: `uniform < p` with jax's
  23-bit uniforms is `bits < ceil(float32(p) * 2**23) * 2**9`. Any other
  PRNG implementation falls back to `jax.random.bernoulli`.

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


class _LinearParams(nn.Module):
  """The kernel and bias of a `flax.linen.DenseGeneral` (same names,
  shapes and initialization), for layers applied by hand."""

  kernel_shape: tuple[int, ...]
  bias_shape: tuple[int, ...]
  num_in: int  # Leading kernel axes that are contracted.

  @nn.compact
  def __call__(self):
    def kernel_init(key, shape, dtype=jnp.float32):
      flat = (int(np.prod(shape[:self.num_in])),
              int(np.prod(shape[self.num_in:])))
      return _INIT(key, flat, dtype).reshape(shape)

    kernel = self.param('kernel', kernel_init, self.kernel_shape)
    bias = self.param('bias', nn.initializers.zeros, self.bias_shape)
    return kernel, bias


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


class SelfAttention(nn.Module):
  """Causal self-attention with the parameters and function of
  `flax.linen.MultiHeadDotProductAttention` (query/key/value/out kernels
  [W, H, D] and [H, D, W]; masked logits set to the float32 minimum;
  attention-weight dropout broadcast over batch and heads), computed with
  one fused QKV matmul and, optionally, queries for some tokens only.

  Attributes:
    num_heads: H.
    dropout: dropout rate of the attention weights.
  """

  num_heads: int
  dropout: float

  @nn.compact
  def __call__(self, h_BxLxW, allowed_BxQxL, *, train: bool,
               rows: slice | None, full_len: int):
    b, n_tok, w = h_BxLxW.shape
    nh = self.num_heads
    d = w // nh
    names = ('query', 'key', 'value')
    (wq, bq), (wk, bk), (wv, bv) = (
        _LinearParams((w, nh, d), (nh, d), 1, name=n)() for n in names)
    wo, bo = _LinearParams((nh, d, w), (w,), 2, name='out')()
    flat = lambda k: k.reshape(w, nh * d)
    if rows is None:  # Every token queries: one [W, 3W] matmul.
      qkv_BxLx3W = linear(
          h_BxLxW, jnp.concatenate([flat(wq), flat(wk), flat(wv)], axis=1),
          jnp.concatenate([bq, bk, bv]).reshape(-1))
      q_BxQxW, k_BxLxW, v_BxLxW = jnp.split(qkv_BxLx3W, 3, axis=-1)
    else:
      kv_BxLx2W = linear(h_BxLxW,
                         jnp.concatenate([flat(wk), flat(wv)], axis=1),
                         jnp.concatenate([bk, bv]).reshape(-1))
      k_BxLxW, v_BxLxW = jnp.split(kv_BxLx2W, 2, axis=-1)
      q_BxQxW = linear(h_BxLxW[:, rows], flat(wq), bq.reshape(-1))
    q = q_BxQxW.shape[1]
    # Heads folded into the batch: [B, N, H*D] -> [B*H, N, D].
    heads = lambda x: x.reshape(b, x.shape[1], nh, d).transpose(
        0, 2, 1, 3).reshape(b * nh, x.shape[1], d)
    q_GxQxD = heads(q_BxQxW) / jnp.sqrt(d).astype(jnp.float32)
    allowed_GxQxL = jnp.broadcast_to(
        allowed_BxQxL[:, None], (b, nh, q, n_tok)).reshape(b * nh, q, n_tok)
    keep_1xQxL = None
    if train and self.dropout > 0.0:
      keep_prob = 1.0 - self.dropout
      q_rows = slice(0, n_tok) if rows is None else rows
      keep_1xQxL = bernoulli(self.make_rng('dropout'), keep_prob,
                             (1, full_len, full_len))[:, q_rows, :n_tok]
      keep_1xQxL = (keep_1xQxL.astype(jnp.float32)
                    / jnp.asarray(keep_prob, jnp.float32))
    out_GxQxD = attend(q_GxQxD, heads(k_BxLxW), heads(v_BxLxW),
                       allowed_GxQxL, keep_1xQxL)
    out_BxQxW = out_GxQxD.reshape(b, nh, q, d).transpose(0, 2, 1, 3).reshape(
        b, q, w)
    return linear(out_BxQxW, wo.reshape(nh * d, w), bo)


class MLP(nn.Module):
  """GELU MLP, 4x wide, with dropout on its output."""

  width: int
  dropout: float

  @nn.compact
  def __call__(self, x_BxLxW, *, train: bool,
               full_shape: Sequence[int] | None = None,
               rows: slice = slice(None)):
    # Dense on 2-D inputs (see `linear`).
    x_NxW = x_BxLxW.reshape(-1, x_BxLxW.shape[-1])
    h = nn.Dense(4 * self.width, kernel_init=_INIT)(x_NxW)
    h = nn.gelu(h, approximate=True)
    h = nn.Dense(self.width, kernel_init=_INIT)(h).reshape(x_BxLxW.shape)
    return Dropout(self.dropout)(h, train=train, full_shape=full_shape,
                                 rows=rows)


class Block(nn.Module):
  """Pre-LayerNorm transformer block (GPT-2).

  With `rows`, only those tokens are updated and returned (all tokens
  still serve as keys and values): the last block computes just the
  tokens whose outputs are read.
  """

  width: int
  num_heads: int
  dropout: float

  @nn.compact
  def __call__(self, x_BxLxW, allowed_BxQxL, *, train: bool,
               rows: slice | None = None, full_len: int | None = None):
    b, n_tok, w = x_BxLxW.shape
    full_len = n_tok if full_len is None else full_len
    full_shape = (b, full_len, w)
    h = LayerNorm()(x_BxLxW)
    h = SelfAttention(self.num_heads, self.dropout,
                      name='MultiHeadDotProductAttention_0')(
                          h, allowed_BxQxL, train=train, rows=rows,
                          full_len=full_len)
    rows_or_all = slice(0, n_tok) if rows is None else rows
    x_BxQxW = x_BxLxW if rows is None else x_BxLxW[:, rows]
    x_BxQxW = x_BxQxW + Dropout(self.dropout)(
        h, train=train, full_shape=full_shape, rows=rows_or_all)
    h = LayerNorm()(x_BxQxW)
    return x_BxQxW + MLP(self.width, self.dropout)(
        h, train=train, full_shape=full_shape, rows=rows_or_all)


class DecisionTransformer(nn.Module):
  """Decision Transformer returning pre-tanh action means and log-stds.

  Attributes:
    obs_dims: state size of each task (one entry per task).
    act_dims: action size of each task.
    num_layers: transformer blocks.
    width: embedding width W.
    num_heads: attention heads (W must be divisible by it).
    dropout: dropout rate (embeddings, attention weights, residuals).
    context_len: K, steps per segment (the model accepts any K <= this).
    max_timestep: timesteps are clipped into [0, max_timestep].
    head: 'tanh_gaussian' or 'deterministic'.
    log_std_min: lower log-std bound (and the deterministic head's log-std).
    log_std_max: upper log-std bound.
  """

  obs_dims: tuple[int, ...]
  act_dims: tuple[int, ...]
  num_layers: int = 3
  width: int = 128
  num_heads: int = 1
  dropout: float = 0.1
  context_len: int = 20
  max_timestep: int = 1000
  head: str = 'tanh_gaussian'
  log_std_min: float = -5.0
  log_std_max: float = 2.0

  @property
  def num_tasks(self) -> int:
    return len(self.obs_dims)

  @property
  def state_size(self) -> int:
    return max(self.obs_dims)

  @property
  def action_size(self) -> int:
    return max(self.act_dims)

  @nn.compact
  def __call__(
      self,
      rtg_BxKx1,
      states_BxKxS,
      actions_BxKxA,
      timesteps_BxK,
      mask_BxK,
      task_B,
      *,
      train: bool,
      last_only: bool = False,
  ):
    """Predicts the action distribution at every step.

    Args:
      rtg_BxKx1: scaled returns-to-go.
      states_BxKxS: normalized states, zero-padded to S = max(obs_dims).
      actions_BxKxA: actions, zero-padded to A = max(act_dims).
      timesteps_BxK: int timesteps within the episode.
      mask_BxK: 1 for real steps, 0 for (left) padding.
      task_B: int task id of each example (ignored with one task).
      train: enables dropout (needs a 'dropout' rng).
      last_only: predict the last step only (acting): K becomes 1 in the
        outputs, and the last block computes one query.

    Returns:
      (mean_BxKxA, log_std_BxKxA): pre-tanh Gaussian parameters per step
      (K = 1 with `last_only`).
    """
    if len(self.obs_dims) != len(self.act_dims):
      raise ValueError(
          'DecisionTransformer: obs_dims and act_dims need one entry per task,'
          f' got {self.obs_dims} and {self.act_dims}'
      )
    if self.head not in heads.HEADS:
      raise ValueError(
          f'DecisionTransformer: head must be one of {heads.HEADS}, got'
          f' {self.head!r}'
      )
    b, k, s = states_BxKxS.shape
    a = actions_BxKxA.shape[-1]
    if s != self.state_size or a != self.action_size or k > self.context_len:
      raise ValueError(
          'DecisionTransformer: expected states [B, K<=%d, %d] and actions'
          ' [B, K, %d], got %s and %s'
          % (self.context_len, self.state_size, self.action_size,
             states_BxKxS.shape, actions_BxKxA.shape)
      )
    t = self.num_tasks
    w = self.width
    task_B = jnp.asarray(task_B, jnp.int32)
    # Padded input features are zero by contract; masking again keeps a
    # caller's non-zero padding from reaching the per-task weights.
    if t > 1:
      states_BxKxS = states_BxKxS * obs_mask(self.obs_dims)[task_B][:, None]
      actions_BxKxA = actions_BxKxA * action_mask(self.act_dims)[task_B][
          :, None
      ]

    time_BxKxW = nn.Embed(self.max_timestep + 1, w, embedding_init=_INIT,
                          name='embed_timestep')(
        jnp.clip(timesteps_BxK, 0, self.max_timestep)
    )
    rtg_BxKxW = nn.Dense(w, kernel_init=_INIT, name='embed_return')(rtg_BxKx1)
    state_BxKxW = heads.TaskDense(w, t, name='embed_state')(
        states_BxKxS, task_B
    )
    action_BxKxW = heads.TaskDense(w, t, name='embed_action')(
        actions_BxKxA, task_B
    )
    tokens_BxKx3xW = (
        jnp.stack([rtg_BxKxW, state_BxKxW, action_BxKxW], axis=2)
        + time_BxKxW[:, :, None, :]
    )
    if t > 1:
      task_BxW = nn.Embed(t, w, embedding_init=_INIT, name='embed_task')(
          task_B
      )
      tokens_BxKx3xW = tokens_BxKx3xW + task_BxW[:, None, None, :]
    # The last token (the action of step K) is read by no output: causal
    # attention lets nothing before it see it, and actions are predicted
    # from state tokens. It is left out; L = 3K - 1 tokens remain.
    full_len, n_tok = 3 * k, 3 * k - 1
    x_BxLxW = tokens_BxKx3xW.reshape(b, full_len, w)[:, :n_tok]
    x_BxLxW = LayerNorm(name='embed_ln')(x_BxLxW)
    x_BxLxW = Dropout(self.dropout)(x_BxLxW, train=train,
                                    full_shape=(b, full_len, w),
                                    rows=slice(0, n_tok))

    valid_BxL = jnp.repeat(mask_BxK > 0, 3, axis=1)[:, :n_tok]
    causal_LxL = jnp.tril(jnp.ones((n_tok, n_tok), bool))
    eye_LxL = jnp.eye(n_tok, dtype=bool)
    allowed_BxLxL = causal_LxL[None] & (valid_BxL[:, None, :] | eye_LxL[None])
    # Outputs are read at the state tokens (1, 4, ..., 3K - 2), or at the
    # last one only: the last block computes those queries alone.
    out_rows = slice(n_tok - 1, n_tok) if last_only else slice(1, n_tok, 3)
    for i in range(self.num_layers):
      last = i == self.num_layers - 1
      x_BxLxW = Block(w, self.num_heads, self.dropout, name=f'block_{i}')(
          x_BxLxW, allowed_BxLxL[:, out_rows] if last else allowed_BxLxL,
          train=train, rows=out_rows if last else None, full_len=full_len)
    if self.num_layers == 0:
      x_BxLxW = x_BxLxW[:, out_rows]
    h_BxKxW = LayerNorm(name='final_ln')(x_BxLxW)

    if self.head == 'tanh_gaussian':
      return heads.TanhGaussianHead(
          self.action_size, t, self.log_std_min, self.log_std_max,
          name='head'
      )(h_BxKxW, task_B)
    return heads.DeterministicHead(
        self.action_size, t, self.log_std_min, name='head'
    )(h_BxKxW, task_B)
