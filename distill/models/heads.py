"""Per-task dense layers and the action heads of the Decision Transformer.

Letters in shape suffixes: B batch, K context steps, T tasks, D input
features, W width, A action dims.

Both heads return `(mean_BxKxA, log_std_BxKxA)` so callers have one
signature: the Gaussian head predicts a pre-tanh mean and a bounded log-std;
the deterministic head predicts the pre-tanh mean only and returns the
constant `log_std_min` as its log-std (the narrowest Gaussian the Gaussian
head could express, so a KL to it degrades to a scaled squared error).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

HEADS = ('tanh_gaussian', 'deterministic')


def squash_log_std(raw, log_std_min: float, log_std_max: float):
  """Soft-clamps a raw log-std into [log_std_min, log_std_max].

  Args:
    raw: unconstrained network output.
    log_std_min: lower bound.
    log_std_max: upper bound.

  Returns:
    `log_std_min + (log_std_max - log_std_min) * (tanh(raw) + 1) / 2`.

  References:
    Zheng, Zhang & Grover (2022), Online Decision Transformer (their
    `DiagGaussianActor` rescales `tanh` the same way).
  """
  return log_std_min + 0.5 * (log_std_max - log_std_min) * (jnp.tanh(raw) + 1)


class TaskDense(nn.Module):
  """A dense layer with one weight matrix per task, chosen per example.

  With `num_tasks == 1` it is a plain `nn.Dense` (kernel [D, F]); otherwise
  the kernels are stacked [T, D, F] (biases [T, F]) and gathered by the task
  id of each example.

  Attributes:
    features: output size F.
    num_tasks: number of tasks T.
    kernel_init: initializer of one task's kernel.
  """

  features: int
  num_tasks: int = 1
  kernel_init: nn.initializers.Initializer = nn.initializers.normal(0.02)

  @nn.compact
  def __call__(self, x_BxKxD, task_B):
    if self.num_tasks == 1:
      return nn.Dense(self.features, kernel_init=self.kernel_init)(x_BxKxD)
    in_dim = x_BxKxD.shape[-1]

    def init_stacked(key, shape, dtype=jnp.float32):
      keys = jax.random.split(key, shape[0])
      return jax.vmap(lambda k: self.kernel_init(k, shape[1:], dtype))(keys)

    kernel_TxDxF = self.param(
        'kernel', init_stacked, (self.num_tasks, in_dim, self.features)
    )
    bias_TxF = self.param(
        'bias', nn.initializers.zeros, (self.num_tasks, self.features)
    )
    kernel_BxDxF = kernel_TxDxF[task_B]
    return (
        jnp.einsum('bkd,bdf->bkf', x_BxKxD, kernel_BxDxF)
        + bias_TxF[task_B][:, None, :]
    )


class TanhGaussianHead(nn.Module):
  """Diagonal Gaussian over pre-tanh actions with a soft-clamped log-std.

  Attributes:
    action_dim: A.
    num_tasks: T (per-task output adapters [T, W, 2A] when T > 1).
    log_std_min: lower bound of the log-std.
    log_std_max: upper bound of the log-std.
  """

  action_dim: int
  num_tasks: int = 1
  log_std_min: float = -5.0
  log_std_max: float = 2.0

  @nn.compact
  def __call__(self, h_BxKxW, task_B):
    out_BxKx2A = TaskDense(2 * self.action_dim, self.num_tasks, name='out')(
        h_BxKxW, task_B
    )
    mean_BxKxA, raw_BxKxA = jnp.split(out_BxKx2A, 2, axis=-1)
    return mean_BxKxA, squash_log_std(
        raw_BxKxA, self.log_std_min, self.log_std_max
    )


class DeterministicHead(nn.Module):
  """Pre-tanh action mean only (the original DT); log-std is a constant.

  Attributes:
    action_dim: A.
    num_tasks: T (per-task output adapters [T, W, A] when T > 1).
    log_std_min: the constant log-std returned beside the mean.
  """

  action_dim: int
  num_tasks: int = 1
  log_std_min: float = -5.0

  @nn.compact
  def __call__(self, h_BxKxW, task_B):
    mean_BxKxA = TaskDense(self.action_dim, self.num_tasks, name='out')(
        h_BxKxW, task_B
    )
    return mean_BxKxA, jnp.full_like(mean_BxKxA, self.log_std_min)
