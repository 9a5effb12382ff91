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


class MLP(nn.Module):
  """GELU MLP, 4x wide, with dropout on its output."""

  width: int
  dropout: float

  @nn.compact
  def __call__(self, x_BxLxW, *, train: bool):
    h = nn.Dense(4 * self.width, kernel_init=_INIT)(x_BxLxW)
    h = nn.gelu(h, approximate=True)
    h = nn.Dense(self.width, kernel_init=_INIT)(h)
    return nn.Dropout(self.dropout)(h, deterministic=not train)


class Block(nn.Module):
  """Pre-LayerNorm transformer block (GPT-2)."""

  width: int
  num_heads: int
  dropout: float

  @nn.compact
  def __call__(self, x_BxLxW, mask_Bx1xLxL, *, train: bool):
    h = nn.LayerNorm()(x_BxLxW)
    h = nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads,
        dropout_rate=self.dropout,
        kernel_init=_INIT,
        deterministic=not train,
    )(h, h, mask=mask_Bx1xLxL)
    x_BxLxW = x_BxLxW + nn.Dropout(self.dropout)(h, deterministic=not train)
    h = nn.LayerNorm()(x_BxLxW)
    return x_BxLxW + MLP(self.width, self.dropout)(h, train=train)


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

    Returns:
      (mean_BxKxA, log_std_BxKxA): pre-tanh Gaussian parameters per step.
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
    x_BxLxW = tokens_BxKx3xW.reshape(b, 3 * k, w)
    x_BxLxW = nn.LayerNorm(name='embed_ln')(x_BxLxW)
    x_BxLxW = nn.Dropout(self.dropout)(x_BxLxW, deterministic=not train)

    valid_BxL = jnp.repeat(mask_BxK > 0, 3, axis=1)
    causal_LxL = jnp.tril(jnp.ones((3 * k, 3 * k), bool))
    eye_LxL = jnp.eye(3 * k, dtype=bool)
    attn_BxLxL = causal_LxL[None] & (valid_BxL[:, None, :] | eye_LxL[None])
    for i in range(self.num_layers):
      x_BxLxW = Block(w, self.num_heads, self.dropout, name=f'block_{i}')(
          x_BxLxW, attn_BxLxL[:, None], train=train
      )
    x_BxLxW = nn.LayerNorm(name='final_ln')(x_BxLxW)
    h_BxKxW = x_BxLxW.reshape(b, k, 3, w)[:, :, 1]

    if self.head == 'tanh_gaussian':
      return heads.TanhGaussianHead(
          self.action_size, t, self.log_std_min, self.log_std_max,
          name='head'
      )(h_BxKxW, task_B)
    return heads.DeterministicHead(
        self.action_size, t, self.log_std_min, name='head'
    )(h_BxKxW, task_B)
