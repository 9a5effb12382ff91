"""Curriculum selectors that score tasks beyond the probe divergences.

`rnd` scores each task by the novelty of its states for the student (the error
of a predictor trained to match a fixed random network on the states it was
shown, Burda et al. 2018); `bi_objective` scores each task by its divergence
plus the alignment of its gradient with the previous update. Both follow the
selector contract of `distill.optim.curriculum` (module docstring there).

Shape letters: T tasks, N probe examples per task, S observation features.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from distill.optim import curriculum
from distill.optim import surgery

_HIGHEST = jax.lax.Precision.HIGHEST
_PREFIX = 'distill.optim'


class RNDState(NamedTuple):
  """State of `rnd`: the common fields plus `scores` (the novelty of each
  task at the last call, before the predictor's step), `target` (the fixed
  random network) and `predictor` (the trained one), both dicts of arrays
  {'w1', 'b1', 'w2', 'b2'}."""

  choice: jax.Array
  weights: jax.Array
  counts: jax.Array
  scores: jax.Array
  target: dict[str, jax.Array]
  predictor: dict[str, jax.Array]


def _mlp_init(key, obs_dim, hidden, embed):
  key1, key2 = jax.random.split(key)
  return {
      'w1': jax.random.normal(key1, [obs_dim, hidden]) / jnp.sqrt(obs_dim),
      'b1': jnp.zeros([hidden]),
      'w2': jax.random.normal(key2, [hidden, embed]) / jnp.sqrt(hidden),
      'b2': jnp.zeros([embed]),
  }


def _mlp(net, obs_NxS):
  h_NxH = jax.nn.relu(jnp.dot(obs_NxS, net['w1'], precision=_HIGHEST)
                      + net['b1'])
  return jnp.dot(h_NxH, net['w2'], precision=_HIGHEST) + net['b2']


def _rnd_error(predictor, target, obs_NxS):
  diff_NxE = _mlp(predictor, obs_NxS) - _mlp(target, obs_NxS)
  return jnp.mean(jnp.square(diff_NxE))


def rnd(num_tasks: int, key: Any, obs_dim: int, *, hidden: int = 64,
        embed: int = 32,
        learning_rate: float = 1e-3) -> optax.GradientTransformationExtraArgs:
  """Chooses the task whose probe states are most novel (RND).

  Novelty of task k is the mean squared error between a trained predictor MLP
  and a fixed random target MLP (obs_dim -> hidden -> relu -> embed) on task
  k's probe states. The task of largest novelty is chosen, and the predictor
  takes one SGD step on that task's probe states, so states the student has
  been trained on lose their novelty. Feed normalized states (Burda et al.
  normalize observations); tasks with fewer features are zero-padded to S.

  Args:
    num_tasks: T.
    key: random key for the two networks' initialization.
    obs_dim: S, the number of state features.
    hidden: hidden width of both MLPs.
    embed: output width of both MLPs.
    learning_rate: SGD learning rate of the predictor, > 0.

  Returns:
    An `optax.GradientTransformationExtraArgs` with state `RNDState`; its
    update takes `task_states` [T, N, S] (keyword-only, required) and accepts
    and ignores `task_divergences`.

  Raises:
    ValueError: on num_tasks < 1 or non-positive sizes or learning rate.

  References:
    Burda et al., Exploration by Random Network Distillation, ICLR 2019
    (https://arxiv.org/abs/1810.12894).
  """
  curriculum.check_num_tasks('rnd', num_tasks)
  for name, value in (('obs_dim', obs_dim), ('hidden', hidden),
                      ('embed', embed), ('learning_rate', learning_rate)):
    if not value > 0:
      raise ValueError(f'{_PREFIX}.rnd: {name} must be > 0, got {value!r}.')

  def init_fn(params):
    del params
    target_key, predictor_key = jax.random.split(surgery.canonicalize_key(key))
    return RNDState(
        choice=jnp.zeros([], jnp.int32),
        weights=curriculum.one_hot(0, num_tasks),
        counts=jnp.zeros([num_tasks], jnp.int32),
        scores=jnp.zeros([num_tasks], jnp.float32),
        target=_mlp_init(target_key, obs_dim, hidden, embed),
        predictor=_mlp_init(predictor_key, obs_dim, hidden, embed))

  def update_fn(updates, state, params=None, *, task_states,
                task_divergences=None, **extra_args):
    del params, task_divergences, extra_args
    obs_TxNxS = jnp.asarray(task_states, jnp.float32)
    if obs_TxNxS.ndim != 3 or obs_TxNxS.shape[0] != num_tasks or (
        obs_TxNxS.shape[2] != obs_dim):
      raise ValueError(
          f'{_PREFIX}.rnd: task_states must have shape ({num_tasks}, N, '
          f'{obs_dim}), got {obs_TxNxS.shape}.')
    novelty_T = jax.vmap(_rnd_error, in_axes=(None, None, 0))(
        state.predictor, state.target, obs_TxNxS)
    choice = jnp.argmax(novelty_T).astype(jnp.int32)
    grads = jax.grad(_rnd_error)(state.predictor, state.target,
                                 obs_TxNxS[choice])
    predictor = jax.tree.map(lambda w, g: w - learning_rate * g,
                             state.predictor, grads)
    return updates, state._replace(
        choice=choice,
        weights=curriculum.one_hot(choice, num_tasks),
        counts=curriculum.count_choice(state.counts, choice),
        scores=novelty_T,
        predictor=predictor)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


class BiObjectiveState(NamedTuple):
  """State of `bi_objective`: the common fields plus `scores`
  (KL_k + lam * cos_k of the last call), `cos` (cos(g_k, p) per task),
  `count` (calls so far) and `reference` (p, the last output update)."""

  choice: jax.Array
  weights: jax.Array
  counts: jax.Array
  scores: jax.Array
  cos: jax.Array
  count: jax.Array
  reference: Any


def bi_objective(num_tasks: int, *,
                 lam: float = 1.0) -> optax.GradientTransformationExtraArgs:
  """Chooses the task of largest `KL_k + lam * cos(g_k, p)`; returns its update.

  Takes stacked per-task updates g_k (leaves [T, ...]) and the divergences,
  scores each task by its divergence plus lam times the cosine between its
  update and p, the previous output update (cos is 0 when p or g_k is zero,
  as on the first call), and returns the chosen task's update (leaves without
  the T axis), which becomes the new p. `init` takes the unstacked params.

  Args:
    num_tasks: T.
    lam: weight of the alignment term, finite and >= 0 (0 is greedy `max_kl`).

  Returns:
    An `optax.GradientTransformationExtraArgs` with state `BiObjectiveState`;
    its update takes `task_divergences` [T] (keyword-only, required).

  Raises:
    ValueError: on num_tasks < 1 or lam negative or not finite.
  """
  curriculum.check_num_tasks('bi_objective', num_tasks)
  if not 0.0 <= lam < float('inf'):
    raise ValueError(
        f'{_PREFIX}.bi_objective: lam must be finite and >= 0, got {lam!r}.')

  def init_fn(params):
    return BiObjectiveState(
        choice=jnp.zeros([], jnp.int32),
        weights=curriculum.one_hot(0, num_tasks),
        counts=jnp.zeros([num_tasks], jnp.int32),
        scores=jnp.zeros([num_tasks], jnp.float32),
        cos=jnp.zeros([num_tasks], jnp.float32),
        count=jnp.zeros([], jnp.int32),
        reference=optax.tree.zeros_like(params))

  def update_fn(updates_T, state, params=None, *, task_divergences,
                **extra_args):
    del params, extra_args
    kl_T = curriculum.task_vector('bi_objective', task_divergences, num_tasks)
    for leaf in jax.tree.leaves(updates_T):
      if leaf.ndim == 0 or leaf.shape[0] != num_tasks:
        raise ValueError(
            f'{_PREFIX}.bi_objective: needs stacked updates [{num_tasks}, ...] '
            f'on every leaf, got a leaf of shape {leaf.shape}.')

    def flat(g):
      return g.reshape(num_tasks, -1)

    def total(tree):
      leaves = jax.tree.leaves(tree)
      return sum(leaves[1:], leaves[0]).astype(jnp.float32)

    f32 = jnp.float32
    dot_T = total(jax.tree.map(
        lambda g, p: jnp.einsum('td,d->t', flat(g), p.reshape(-1),
                                precision=_HIGHEST,
                                preferred_element_type=f32),
        updates_T, state.reference))
    sq_T = total(jax.tree.map(
        lambda g: jnp.einsum('td,td->t', flat(g), flat(g), precision=_HIGHEST,
                             preferred_element_type=f32), updates_T))
    sq_p = jnp.asarray(optax.tree.vdot(state.reference, state.reference), f32)
    norms_T = jnp.sqrt(sq_T * sq_p)
    cos_T = jnp.where(norms_T > 0, dot_T / jnp.where(norms_T > 0, norms_T, 1.0),
                      0.0)
    scores_T = kl_T + lam * cos_T
    choice = jnp.argmax(scores_T).astype(jnp.int32)
    updates = jax.tree.map(lambda g: g[choice], updates_T)
    new_state = BiObjectiveState(
        choice=choice,
        weights=curriculum.one_hot(choice, num_tasks),
        counts=curriculum.count_choice(state.counts, choice),
        scores=scores_T,
        cos=cos_T.astype(jnp.float32),
        count=optax.safe_increment(state.count),
        reference=jax.tree.map(lambda r, u: u.astype(r.dtype),
                               state.reference, updates))
    return updates, new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
