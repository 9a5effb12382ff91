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

The layers run on the speed kernels of `distill.models.kernels` (same
parameters and function as flax's layers, dropout masks included); the
last token, which no output reads, is left out, and the last block computes
only the tokens read. With a PRNG whose bits the dropout kernel does not
reproduce (anything but jax's default partitionable threefry2x32; decided
at trace time from the dropout key, or from `jax_default_prng_impl` without
one) the model runs flax's own `LayerNorm`, `MultiHeadDotProductAttention`
and `Dropout` over every token instead: the same function, slower.

References:
  Chen et al. (2021), Decision Transformer: Reinforcement Learning via
  Sequence Modeling. arXiv:2106.01345.
  Zheng, Zhang & Grover (2022), Online Decision Transformer.
  arXiv:2202.05607 (tanh-Gaussian head with bounded log-std).
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from distill.models import heads
from distill.models import kernels

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
      qkv_BxLx3W = kernels.linear(
          h_BxLxW, jnp.concatenate([flat(wq), flat(wk), flat(wv)], axis=1),
          jnp.concatenate([bq, bk, bv]).reshape(-1))
      q_BxQxW, k_BxLxW, v_BxLxW = jnp.split(qkv_BxLx3W, 3, axis=-1)
    else:
      kv_BxLx2W = kernels.linear(h_BxLxW,
                         jnp.concatenate([flat(wk), flat(wv)], axis=1),
                         jnp.concatenate([bk, bv]).reshape(-1))
      k_BxLxW, v_BxLxW = jnp.split(kv_BxLx2W, 2, axis=-1)
      q_BxQxW = kernels.linear(h_BxLxW[:, rows], flat(wq), bq.reshape(-1))
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
      keep_1xQxL = kernels.bernoulli(self.make_rng('dropout'), keep_prob,
                                     (1, full_len, full_len))[
                                         :, q_rows, :n_tok]
      keep_1xQxL = (keep_1xQxL.astype(jnp.float32)
                    / jnp.asarray(keep_prob, jnp.float32))
    out_GxQxD = kernels.attend(q_GxQxD, heads(k_BxLxW), heads(v_BxLxW),
                       allowed_GxQxL, keep_1xQxL)
    out_BxQxW = out_GxQxD.reshape(b, nh, q, d).transpose(0, 2, 1, 3).reshape(
        b, q, w)
    return kernels.linear(out_BxQxW, wo.reshape(nh * d, w), bo)


class MLP(nn.Module):
  """GELU MLP, 4x wide, with dropout on its output."""

  width: int
  dropout: float

  @nn.compact
  def __call__(self, x_BxLxW, *, train: bool,
               full_shape: Sequence[int] | None = None,
               rows: slice = slice(None), fast: bool = True):
    # Dense on 2-D inputs (see `kernels.linear`).
    x_NxW = x_BxLxW.reshape(-1, x_BxLxW.shape[-1])
    h = nn.Dense(4 * self.width, kernel_init=_INIT)(x_NxW)
    h = nn.gelu(h, approximate=True)
    h = nn.Dense(self.width, kernel_init=_INIT)(h).reshape(x_BxLxW.shape)
    if not fast:
      return nn.Dropout(self.dropout)(h, deterministic=not train)
    return kernels.Dropout(self.dropout)(h, train=train,
                                         full_shape=full_shape, rows=rows)


class Block(nn.Module):
  """Pre-LayerNorm transformer block (GPT-2).

  With `rows`, only those tokens are updated and returned (all tokens
  still serve as keys and values): the last block computes just the
  tokens whose outputs are read. With `fast=False` it is flax's own
  layers (same parameters and function) over every token.
  """

  width: int
  num_heads: int
  dropout: float

  @nn.compact
  def __call__(self, x_BxLxW, allowed_BxQxL, *, train: bool,
               rows: slice | None = None, full_len: int | None = None,
               fast: bool = True):
    if not fast:
      h = nn.LayerNorm()(x_BxLxW)
      h = nn.MultiHeadDotProductAttention(
          num_heads=self.num_heads, dropout_rate=self.dropout,
          kernel_init=_INIT, deterministic=not train)(
              h, h, mask=allowed_BxQxL[:, None])
      x_BxLxW = x_BxLxW + nn.Dropout(self.dropout)(
          h, deterministic=not train)
      h = nn.LayerNorm()(x_BxLxW)
      return x_BxLxW + MLP(self.width, self.dropout)(h, train=train,
                                                     fast=False)
    b, n_tok, w = x_BxLxW.shape
    full_len = n_tok if full_len is None else full_len
    full_shape = (b, full_len, w)
    h = kernels.LayerNorm()(x_BxLxW)
    h = SelfAttention(self.num_heads, self.dropout,
                      name='MultiHeadDotProductAttention_0')(
                          h, allowed_BxQxL, train=train, rows=rows,
                          full_len=full_len)
    rows_or_all = slice(0, n_tok) if rows is None else rows
    x_BxQxW = x_BxLxW if rows is None else x_BxLxW[:, rows]
    x_BxQxW = x_BxQxW + kernels.Dropout(self.dropout)(
        h, train=train, full_shape=full_shape, rows=rows_or_all)
    h = kernels.LayerNorm()(x_BxQxW)
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
    # The kernels reproduce flax's dropout masks from threefry bits only;
    # with another PRNG the model is flax's own layers (slower, same
    # function). The key drawn here is this scope's own: the layers'
    # keys do not depend on it.
    drawn = train and self.dropout > 0.0 and self.has_rng('dropout')
    fast = kernels.supported(self.make_rng('dropout') if drawn else None)
    # The last token (the action of step K) is read by no output: causal
    # attention lets nothing before it see it, and actions are predicted
    # from state tokens. The kernels leave it out (L = 3K - 1 tokens);
    # flax's layers run all L = 3K.
    full_len = 3 * k
    n_tok = full_len - 1 if fast else full_len
    x_BxLxW = tokens_BxKx3xW.reshape(b, full_len, w)[:, :n_tok]
    if fast:
      x_BxLxW = kernels.LayerNorm(name='embed_ln')(x_BxLxW)
      x_BxLxW = kernels.Dropout(self.dropout)(x_BxLxW, train=train,
                                              full_shape=(b, full_len, w),
                                              rows=slice(0, n_tok))
    else:
      x_BxLxW = nn.LayerNorm(name='embed_ln')(x_BxLxW)
      x_BxLxW = nn.Dropout(self.dropout)(x_BxLxW, deterministic=not train)

    valid_BxL = jnp.repeat(mask_BxK > 0, 3, axis=1)[:, :n_tok]
    causal_LxL = jnp.tril(jnp.ones((n_tok, n_tok), bool))
    eye_LxL = jnp.eye(n_tok, dtype=bool)
    allowed_BxLxL = causal_LxL[None] & (valid_BxL[:, None, :] | eye_LxL[None])
    # Outputs are read at the state tokens (1, 4, ..., 3K - 2), or at the
    # last one only: with the kernels the last block computes those
    # queries alone.
    out_rows = (slice(full_len - 2, full_len - 1) if last_only
                else slice(1, full_len - 1, 3))
    for i in range(self.num_layers):
      last = fast and i == self.num_layers - 1
      x_BxLxW = Block(w, self.num_heads, self.dropout, name=f'block_{i}')(
          x_BxLxW, allowed_BxLxL[:, out_rows] if last else allowed_BxLxL,
          train=train, rows=out_rows if last else None, full_len=full_len,
          fast=fast)
    if self.num_layers == 0 or not fast:
      x_BxLxW = x_BxLxW[:, out_rows]
    norm = kernels.LayerNorm if fast else nn.LayerNorm
    h_BxKxW = norm(name='final_ln')(x_BxLxW)

    if self.head == 'tanh_gaussian':
      return heads.TanhGaussianHead(
          self.action_size, t, self.log_std_min, self.log_std_max,
          name='head'
      )(h_BxKxW, task_B)
    return heads.DeterministicHead(
        self.action_size, t, self.log_std_min, name='head'
    )(h_BxKxW, task_B)
