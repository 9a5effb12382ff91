"""The one way to build, initialize, apply and describe a policy model.

Teachers, the student, checkpoints, evaluation, the report and the benchmarks
all go through these functions, so a model is built from a config in one
place, applied to a batch in one place, turned into an acting policy in one
place, and described for a checkpoint in one place.

    model = make_model(config.student.model, obs_dims=(11, 17),
                       act_dims=(3, 6), context_len=20, max_timestep=1000)
    params = init_params(model, jax.random.key(0))
    mean_BxKxA, log_std_BxKxA = apply(model, params, batch)
    act = make_policy_fn(model)        # pure; jit it or export it
    actions_NxA = act(params, rtg, states, actions, timesteps, mask, task, key)
    meta = model_meta(model); same = from_meta(meta)

`batch` is anything with the fields of `distill.data.segments.SegmentBatch`
(rtg, states, actions, timesteps, mask, task); this module does not import
the data package.

Letters in shape suffixes: B batch, N environments, K context, S/A the
model's (padded) state/action size.
"""

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from distill.models import decision_transformer

DecisionTransformer = decision_transformer.DecisionTransformer
action_mask = decision_transformer.action_mask

# Model fields that are tuples (JSON turns them into lists).
_TUPLE_FIELDS = ('obs_dims', 'act_dims')

# policy_fn(params, rtg_NxKx1, states_NxKxS, actions_NxKxA, timesteps_NxK,
#           mask_NxK, task_N, key) -> actions_NxA in [-1, 1].
PolicyFn = Callable[..., jax.Array]


def make_model(config: ml_collections.ConfigDict, *, obs_dims: Sequence[int],
               act_dims: Sequence[int], context_len: int,
               max_timestep: int) -> DecisionTransformer:
  """Builds a Decision Transformer from a model sub-config.

  Args:
    config: `config.teacher.model` or `config.student.model` (num_layers,
      width, num_heads, dropout, head, log_std_min, log_std_max).
    obs_dims: state size of each task (one entry: a single-task model, e.g.
      a teacher over the padded size S).
    act_dims: action size of each task.
    context_len: K.
    max_timestep: largest timestep embedded.

  Returns:
    The module.
  """
  return DecisionTransformer(
      obs_dims=tuple(int(x) for x in obs_dims),
      act_dims=tuple(int(x) for x in act_dims),
      num_layers=int(config.num_layers), width=int(config.width),
      num_heads=int(config.num_heads), dropout=float(config.dropout),
      context_len=int(context_len), max_timestep=int(max_timestep),
      head=config.head, log_std_min=float(config.log_std_min),
      log_std_max=float(config.log_std_max))


def dummy_inputs(model: DecisionTransformer, batch_size: int = 1
                 ) -> tuple[jax.Array, ...]:
  """Zero inputs of the model's shapes: (rtg, states, actions, timesteps,
  mask, task), with the mask all ones."""
  b, k = batch_size, model.context_len
  return (jnp.zeros((b, k, 1), jnp.float32),
          jnp.zeros((b, k, model.state_size), jnp.float32),
          jnp.zeros((b, k, model.action_size), jnp.float32),
          jnp.zeros((b, k), jnp.int32), jnp.ones((b, k), jnp.float32),
          jnp.zeros((b,), jnp.int32))


def init_params(model: DecisionTransformer, key: jax.Array) -> Any:
  """Initial parameters (for inputs of the model's shapes).

  Flax's `lazy_init`: the initializers run op by op as in `init`, so the
  values are the same bits, but the forward pass on the inputs (only
  their shapes are given) is traced, not run: op by op, each of its
  operations would compile alone, about half of a process's init time.

  Args:
    model: from `make_model`.
    key: a `jax.random.key`.

  Returns:
    The parameter pytree.
  """
  shapes = [jax.ShapeDtypeStruct(x.shape, x.dtype)
            for x in dummy_inputs(model)]
  return model.lazy_init(key, *shapes, train=False)['params']


def apply(model: DecisionTransformer, params: Any, batch: Any, *,
          train: bool = False, rng: jax.Array | None = None
          ) -> tuple[jax.Array, jax.Array]:
  """Applies the model to a segment batch.

  Args:
    model: from `make_model`.
    params: its parameters.
    batch: a `SegmentBatch` (or anything with its fields).
    train: enables dropout; needs `rng`.
    rng: the dropout key.

  Returns:
    (mean_BxKxA, log_std_BxKxA): pre-tanh Gaussian parameters per step.
  """
  rngs = {'dropout': rng} if train else None
  return model.apply({'params': params}, batch.rtg, batch.states,
                     batch.actions, batch.timesteps, batch.mask, batch.task,
                     train=train, rngs=rngs)


def make_policy_fn(model: DecisionTransformer, *,
                   deterministic: bool = True) -> PolicyFn:
  """The acting policy as a pure function (jit it, vmap it, export it).

  Args:
    model: from `make_model`.
    deterministic: act with tanh(mean); otherwise sample from the
      tanh-squashed Gaussian with `key`.

  Returns:
    `policy_fn(params, rtg_NxKx1, states_NxKxS, actions_NxKxA,
    timesteps_NxK, mask_NxK, task_N, key) -> actions_NxA`: the action at the
    last context position of each of the N rows, in [-1, 1].
  """

  def policy_fn(params, rtg, states, actions, timesteps, mask, task, key):
    # last_only: the last block computes the one query that is read.
    mean_Nx1xA, log_std_Nx1xA = model.apply(
        {'params': params}, rtg, states, actions, timesteps, mask,
        jnp.asarray(task, jnp.int32), train=False, last_only=True)
    mean_NxA = mean_Nx1xA[:, 0]
    if deterministic:
      return jnp.tanh(mean_NxA)
    noise = jax.random.normal(key, mean_NxA.shape, mean_NxA.dtype)
    return jnp.tanh(mean_NxA + jnp.exp(log_std_Nx1xA[:, 0]) * noise)

  return policy_fn


def model_meta(model: DecisionTransformer) -> dict[str, Any]:
  """The constructor arguments of a model, JSON-serializable."""
  return {
      f: getattr(model, f)
      for f in model.__dataclass_fields__
      if f not in ('parent', 'name')
  }


def from_meta(meta: dict[str, Any]) -> DecisionTransformer:
  """Rebuilds a model from `model_meta` output (e.g. read from JSON)."""
  kwargs = dict(meta)
  for f in _TUPLE_FIELDS:
    kwargs[f] = tuple(int(x) for x in kwargs[f])
  return DecisionTransformer(**kwargs)


def count_params(params: Any) -> int:
  """Number of scalars in a parameter pytree."""
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))
