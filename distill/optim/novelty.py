"""Curriculum selectors that score tasks beyond the probe divergences.

`rnd` scores each task by the novelty of its states for the student (the error
of a predictor trained to match a fixed random network on the states it was
shown, Burda et al. 2018); `bi_objective` scores each task by its divergence
plus the alignment of its gradient with the previous update. Both follow the
selector contract of `distill.optim.curriculum` (module docstring there).

Shape letters: T tasks, N probe examples per task, S observation features,
H hidden units, E embedding features.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from distill.optim import _common


class RNDState(NamedTuple):
  """State of `rnd`.

  Attributes:
    choice: int32 [], the task chosen by the last call (0 before any).
    weights: float32 [T], one-hot of `choice`.
    counts: int32 [T], how often each task was chosen.
    scores: float32 [T], the novelty of each task at the last call (before
      the predictor's step).
    target: the fixed random network, a dict of float32 arrays `w1` [S, H],
      `b1` [H], `w2` [H, E], `b2` [E].
    predictor: the trained network, a dict of float32 arrays of the same
      shapes (`w1` [S, H], `b1` [H], `w2` [H, E], `b2` [E]).
  """

  choice: jax.Array
  weights: jax.Array
  counts: jax.Array
  scores: jax.Array
  target: dict[str, jax.Array]
  predictor: dict[str, jax.Array]


def _mlp_init(key, obs_dim, hidden, embed):
  key1, key2 = jax.random.split(key)
  f32 = jnp.float32
  return {
      'w1': jax.random.normal(key1, [obs_dim, hidden], f32) / (obs_dim**0.5),
      'b1': jnp.zeros([hidden], f32),
      'w2': jax.random.normal(key2, [hidden, embed], f32) / (hidden**0.5),
      'b2': jnp.zeros([embed], f32),
  }


def _mlp(net, obs_NxS):
  h_NxH = jax.nn.relu(jnp.dot(obs_NxS, net['w1'], precision=_common.HIGHEST)
                      + net['b1'])
  return jnp.dot(h_NxH, net['w2'], precision=_common.HIGHEST) + net['b2']


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
    key: random key (typed, raw uint32 data or an int seed) for the two
      networks' initialization.
    obs_dim: S, the number of state features.
    hidden: H, hidden width of both MLPs.
    embed: E, output width of both MLPs.
    learning_rate: SGD learning rate of the predictor, > 0; schedulable.

  Returns:
    An `optax.GradientTransformationExtraArgs` with state `RNDState`; its
    update passes `updates` through, takes `task_states` [T, N, S]
    (keyword-only, required) and accepts and ignores other extra arguments
    such as `task_divergences`.

  Raises:
    ValueError: on num_tasks < 1, non-positive sizes or learning rate, or a
      bad key.

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from distill import optim
    >>> select = optim.rnd(2, jax.random.key(0), obs_dim=3)
    >>> states = jnp.stack([jnp.zeros((4, 3)), jnp.ones((4, 3))])  # [T, N, S]
    >>> _, state = select.update(None, select.init(None), task_states=states)
    >>> print(state.choice)  # both networks map the zero state to zero
    1

  References:
    Burda et al., Exploration by Random Network Distillation, ICLR 2019
    (https://arxiv.org/abs/1810.12894).
  """
  size = _common.static_int('rnd', 'num_tasks', num_tasks)
  sizes = {arg: _common.static_int('rnd', arg, value)
           for arg, value in (('obs_dim', obs_dim), ('hidden', hidden),
                              ('embed', embed))}
  _common.check_float('rnd', 'learning_rate', learning_rate, low=0.0,
                      low_open=True)
  impl = _common.check_key('rnd', key)

  def init_fn(params):
    del params
    num_tasks = _common.require_static('rnd', 'num_tasks', size)
    dims = [_common.require_static('rnd', arg, value)
            for arg, value in sizes.items()]
    target_key, predictor_key = jax.random.split(
        _common.wrap_key(_common.key_data(key, impl), impl))
    return RNDState(
        **_common.first_choice(num_tasks),
        scores=jnp.zeros([num_tasks], jnp.float32),
        target=_mlp_init(target_key, *dims),
        predictor=_mlp_init(predictor_key, *dims))

  def update_fn(updates, state, params=None, *, task_states, **extra_args):
    del params, extra_args
    state = _common.as_arrays(state)
    num_tasks = state.counts.shape[0]
    num_features = state.target['w1'].shape[0]
    obs_TxNxS = jnp.asarray(task_states).astype(jnp.float32)
    if obs_TxNxS.ndim != 3 or obs_TxNxS.shape[0] != num_tasks or (
        obs_TxNxS.shape[2] != num_features):
      raise _common.error(
          'rnd', f'task_states must have shape ({num_tasks}, N, '
          f'{num_features}), got {obs_TxNxS.shape}.')
    novelty_T = jax.vmap(_rnd_error, in_axes=(None, None, 0))(
        state.predictor, state.target, obs_TxNxS)
    choice = jnp.argmax(novelty_T).astype(jnp.int32)
    grads = jax.grad(_rnd_error)(state.predictor, state.target,
                                 obs_TxNxS[choice])
    lr = jnp.asarray(learning_rate, jnp.float32)
    predictor = jax.tree.map(lambda w, g: (w - lr * g).astype(jnp.float32),
                             state.predictor, grads)
    return updates, state._replace(
        **_common.chosen(choice, state.counts),
        scores=novelty_T.astype(jnp.float32),
        predictor=predictor)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


class BiObjectiveState(NamedTuple):
  """State of `bi_objective`.

  Attributes:
    choice: int32 [], the task chosen by the last call (0 before any).
    weights: float32 [T], one-hot of `choice`.
    counts: int32 [T], how often each task was chosen.
    scores: float32 [T], `KL_k + lam * cos_k` of the last call.
    cos: float32 [T], cos(g_k, p) of the last call, per task.
    count: int32 [], number of calls so far.
    reference: p, the last output update: a tree of the params' structure,
      shapes and dtypes (zeros before the first call).
  """

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

  Takes stacked per-task updates g_k (leaves [T, *param.shape]) and the
  divergences, scores each task by its divergence plus lam times the cosine
  between its update and p, the previous output update (cos is 0 when p or
  g_k is zero, as on the first call), and returns the chosen task's update
  (leaves without the T axis), which becomes the new p. `init` takes the
  unstacked params; every update leaf is checked to be [T, *param.shape]
  against `params` when given, else against the state's `reference`.

  `bi_objective` cannot run inside `optax.MultiSteps` (which accumulates
  updates in the shape of params and so cannot hold per-task updates): the
  update refuses the unstacked updates it is then given, with that reason.

  Args:
    num_tasks: T.
    lam: weight of the alignment term, finite and >= 0 (0 is greedy `max_kl`);
      schedulable.

  Returns:
    An `optax.GradientTransformationExtraArgs` with state `BiObjectiveState`;
    its update takes stacked updates (not None) and `task_divergences` [T]
    (keyword-only, required).

  Raises:
    ValueError: on num_tasks < 1 or lam negative or not finite.

  Example:
    >>> import jax.numpy as jnp
    >>> from distill import optim
    >>> select = optim.bi_objective(2, lam=1.0)
    >>> params = {'w': jnp.zeros(2)}
    >>> state = select.init(params)
    >>> kl_T = jnp.array([1.0, 0.5])
    >>> g_T = {'w': jnp.array([[1.0, 0.0], [0.0, 1.0]])}
    >>> g, state = select.update(g_T, state, params, task_divergences=kl_T)
    >>> g_T = {'w': jnp.array([[-2.0, 0.0], [0.0, 3.0]])}  # g_0 opposes p
    >>> g, state = select.update(g_T, state, params, task_divergences=kl_T)
    >>> print(state.choice, state.scores, g['w'])
    1 [0.  0.5] [0. 3.]

  References:
    Yu et al., Gradient Surgery for Multi-Task Learning, NeurIPS 2020
    (https://arxiv.org/abs/2001.06782): conflicting gradients measured by
    their cosine; combining it with the KL curriculum is this project's
    variant (docs/design.md, section 3).
  """
  size = _common.static_int('bi_objective', 'num_tasks', num_tasks)
  _common.check_float('bi_objective', 'lam', lam, low=0.0,
                      high=float('inf'), high_open=True)

  def init_fn(params):
    num_tasks = _common.require_static('bi_objective', 'num_tasks', size)
    # One buffer per field, so that the state can be donated.
    return BiObjectiveState(
        **_common.first_choice(num_tasks),
        scores=jnp.zeros([num_tasks], jnp.float32),
        cos=jnp.zeros([num_tasks], jnp.float32),
        count=jnp.zeros([], jnp.int32),
        reference=optax.tree.zeros_like(params))

  def update_fn(updates_T, state, params=None, *, task_divergences,
                **extra_args):
    del extra_args
    state = _common.as_arrays(state)
    num_tasks = state.counts.shape[0]
    kl_T = _common.task_vector('bi_objective', 'task_divergences',
                               task_divergences, num_tasks)
    like = state.reference if params is None else params
    _common.check_stacked('bi_objective', updates_T, like, num_tasks)
    dtype = _common.accum_dtype(updates_T, state.reference)
    p = state.reference
    dot_T = _common.stacked_vdot(updates_T, p, dtype)
    sq_T = _common.stacked_sq_norms(updates_T, dtype)
    sq_p = _common.tree_vdot(p, p, dtype)
    norms_T = jnp.sqrt(sq_T) * jnp.sqrt(sq_p)
    cos_T = jnp.where(norms_T > 0, dot_T / jnp.where(norms_T > 0, norms_T, 1),
                      0).astype(jnp.float32)
    scores_T = kl_T + jnp.asarray(lam, jnp.float32) * cos_T
    choice = jnp.argmax(scores_T).astype(jnp.int32)
    updates = jax.tree.map(lambda g: g[choice], updates_T)
    new_state = BiObjectiveState(
        **_common.chosen(choice, state.counts),
        scores=scores_T.astype(jnp.float32),
        cos=cos_T,
        count=optax.safe_increment(state.count).astype(jnp.int32),
        reference=jax.tree.map(lambda r, u: u.astype(r.dtype), p, updates))
    return updates, new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
