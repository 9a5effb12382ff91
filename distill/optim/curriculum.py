"""Curriculum selectors as optax transforms: which task to learn from next.

Shape letters: T tasks, N probe examples per task, S observation features.

Contract. A selector is an `optax.GradientTransformationExtraArgs` whose

  update_fn(updates, state, params=None, *, task_divergences, **extra_args)

passes `updates` through unchanged (except `bi_objective`, which takes stacked
per-task updates [T, ...] and returns the chosen task's update) and writes into
its state:

  choice   int32 scalar: the task to learn from, chosen from the inputs of THIS
           call (-1 for `mixture`, which uses all tasks);
  weights  float32 [T]: one-hot of `choice`, or the mixture weights;
  counts   int32 [T]: how often each task was chosen so far (every task counts
           at every call for `mixture`);

plus the selector's per-task estimates (`scores` [T], ...). Before the first
update `choice` is 0 (-1 for `mixture`) and `counts` are zero.

Two ways to use one. Measure the divergences on small probe batches (forward
passes only), call `selector.update(zeros_or_updates, state,
task_divergences=kl_T)`, read `state.choice`, and compute the one gradient on
that task's batch. Or chain it in front of an optimizer,

  tx = optax.chain(max_kl(T), optax.adam(1e-3))
  updates, opt_state = tx.update(grads, opt_state, params,
                                 task_divergences=kl_T)

and take `opt_state[0].choice` as the task of the next step. `task_divergences`
is keyword-only and required by the selectors that use it (a call without it
raises TypeError); the others accept and ignore it. Every selector's state keeps
its structure, shapes and dtypes across updates, so a jitted step compiles once.
Random keys live in the state and are split at every update.
"""

import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from distill.optim import surgery

_HIGHEST = jax.lax.Precision.HIGHEST
_MODES = ('greedy', 'softmax', 'epsilon_greedy')
_FILE = 'distill/optim/curriculum.py'


def _check_num_tasks(name: str, num_tasks: int) -> None:
  if not isinstance(num_tasks, numbers.Integral) or num_tasks < 1:
    raise ValueError(
        f'{_FILE}: {name} num_tasks must be an int >= 1, got {num_tasks!r}.')


def _check_sampling(name: str, mode: str, temperature: float, epsilon: float,
                    key: Any, modes=_MODES) -> None:
  if mode not in modes:
    raise ValueError(
        f'{_FILE}: {name} mode must be one of {modes}, got {mode!r}.')
  if not temperature > 0:
    raise ValueError(
        f'{_FILE}: {name} temperature must be > 0, got {temperature!r}.')
  if not 0.0 <= epsilon <= 1.0:
    raise ValueError(
        f'{_FILE}: {name} epsilon must be in [0, 1], got {epsilon!r}.')
  if mode != 'greedy' and key is None:
    raise ValueError(f'{_FILE}: {name} mode {mode!r} needs a random key.')


def _task_vector(name: str, x: Any, num_tasks: int) -> jax.Array:
  """Checks the (static) shape of a per-task input and casts it to float32."""
  x = jnp.asarray(x, jnp.float32)
  if x.shape != (num_tasks,):
    raise ValueError(
        f'{_FILE}: {name} task_divergences must have shape ({num_tasks},), '
        f'got {x.shape}.')
  return x


def _one_hot(choice: jax.Array, num_tasks: int) -> jax.Array:
  return jax.nn.one_hot(choice, num_tasks, dtype=jnp.float32)


def _count(counts_T: jax.Array, choice: jax.Array) -> jax.Array:
  return counts_T.at[choice].set(optax.safe_increment(counts_T[choice]))


def _select(key, scores_T, mode, temperature, epsilon):
  """Chooses a task from scores: greedy, softmax or epsilon-greedy.

  Returns:
    (choice int32 scalar, probs_T float32: the selection probabilities).
  """
  num_tasks = scores_T.shape[0]
  best = jnp.argmax(scores_T).astype(jnp.int32)
  if mode == 'greedy':
    return best, _one_hot(best, num_tasks)
  if mode == 'softmax':
    logits_T = scores_T / temperature
    choice = jax.random.categorical(key, logits_T).astype(jnp.int32)
    return choice, jax.nn.softmax(logits_T)
  explore_key, task_key = jax.random.split(key)
  explore = jax.random.uniform(explore_key) < epsilon
  other = jax.random.randint(task_key, [], 0, num_tasks, dtype=jnp.int32)
  probs_T = epsilon / num_tasks + (1.0 - epsilon) * _one_hot(best, num_tasks)
  return jnp.where(explore, other, best), probs_T


class MaxKLState(NamedTuple):
  """State of `max_kl`: the common fields plus `scores` (the divergences of
  the last call), `probs` (its selection probabilities) and `key`."""

  choice: jax.Array
  weights: jax.Array
  counts: jax.Array
  scores: jax.Array
  probs: jax.Array
  key: jax.Array


def max_kl(num_tasks: int, *, mode: str = 'greedy', temperature: float = 1.0,
           epsilon: float = 0.1,
           key: Any = None) -> optax.GradientTransformationExtraArgs:
  """Chooses the task whose divergence is largest (the least known teacher).

  Args:
    num_tasks: T.
    mode: 'greedy' (argmax of the divergences), 'softmax' (sample from
      softmax(divergences / temperature)) or 'epsilon_greedy' (a uniformly
      random task with probability epsilon, else the argmax).
    temperature: softmax temperature, > 0.
    epsilon: exploration probability, in [0, 1].
    key: random key (typed, raw uint32 or int seed); required unless greedy.

  Returns:
    An `optax.GradientTransformationExtraArgs` with state `MaxKLState`; its
    update takes `task_divergences` [T] (keyword-only, required).

  Raises:
    ValueError: on num_tasks < 1, an unknown mode, temperature <= 0, epsilon
      outside [0, 1], or a random mode without a key.
  """
  _check_num_tasks('max_kl', num_tasks)
  _check_sampling('max_kl', mode, temperature, epsilon, key)

  def init_fn(params):
    del params
    return MaxKLState(
        choice=jnp.zeros([], jnp.int32),
        weights=_one_hot(0, num_tasks),
        counts=jnp.zeros([num_tasks], jnp.int32),
        scores=jnp.zeros([num_tasks], jnp.float32),
        probs=jnp.full([num_tasks], 1.0 / num_tasks, jnp.float32),
        key=surgery.canonicalize_key(0 if key is None else key))

  def update_fn(updates, state, params=None, *, task_divergences,
                **extra_args):
    del params, extra_args
    kl_T = _task_vector('max_kl', task_divergences, num_tasks)
    next_key, step_key = jax.random.split(state.key)
    choice, probs_T = _select(step_key, kl_T, mode, temperature, epsilon)
    return updates, MaxKLState(
        choice=choice,
        weights=_one_hot(choice, num_tasks),
        counts=_count(state.counts, choice),
        scores=kl_T,
        probs=probs_T.astype(jnp.float32),
        key=next_key)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


class RoundRobinState(NamedTuple):
  """State of `round_robin`: the common fields plus `count` (calls so far)."""

  choice: jax.Array
  weights: jax.Array
  counts: jax.Array
  count: jax.Array


def round_robin(num_tasks: int) -> optax.GradientTransformationExtraArgs:
  """Cycles over the tasks: the n-th call (from 0) chooses task n mod T.

  Args:
    num_tasks: T.

  Returns:
    An `optax.GradientTransformationExtraArgs` with state `RoundRobinState`;
    `task_divergences` is accepted and ignored.

  Raises:
    ValueError: on num_tasks < 1.

  References:
    Rusu et al., Policy Distillation, ICLR 2016
    (https://arxiv.org/abs/1511.06295).
  """
  _check_num_tasks('round_robin', num_tasks)

  def init_fn(params):
    del params
    return RoundRobinState(
        choice=jnp.zeros([], jnp.int32),
        weights=_one_hot(0, num_tasks),
        counts=jnp.zeros([num_tasks], jnp.int32),
        count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None, *, task_divergences=None,
                **extra_args):
    del params, task_divergences, extra_args
    choice = (state.count % num_tasks).astype(jnp.int32)
    return updates, RoundRobinState(
        choice=choice,
        weights=_one_hot(choice, num_tasks),
        counts=_count(state.counts, choice),
        count=optax.safe_increment(state.count))

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


class UniformState(NamedTuple):
  """State of `uniform`: the common fields plus `key`."""

  choice: jax.Array
  weights: jax.Array
  counts: jax.Array
  key: jax.Array


def uniform(num_tasks: int, key: Any) -> optax.GradientTransformationExtraArgs:
  """Chooses one task uniformly at random at every call.

  Args:
    num_tasks: T.
    key: random key (typed, raw uint32 or int seed).

  Returns:
    An `optax.GradientTransformationExtraArgs` with state `UniformState`;
    `task_divergences` is accepted and ignored.

  Raises:
    ValueError: on num_tasks < 1.
  """
  _check_num_tasks('uniform', num_tasks)

  def init_fn(params):
    del params
    return UniformState(
        choice=jnp.zeros([], jnp.int32),
        weights=_one_hot(0, num_tasks),
        counts=jnp.zeros([num_tasks], jnp.int32),
        key=surgery.canonicalize_key(key))

  def update_fn(updates, state, params=None, *, task_divergences=None,
                **extra_args):
    del params, task_divergences, extra_args
    next_key, step_key = jax.random.split(state.key)
    choice = jax.random.randint(step_key, [], 0, num_tasks, dtype=jnp.int32)
    return updates, UniformState(
        choice=choice,
        weights=_one_hot(choice, num_tasks),
        counts=_count(state.counts, choice),
        key=next_key)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


class MixtureState(NamedTuple):
  """State of `mixture`: choice is always -1, weights 1/T each."""

  choice: jax.Array
  weights: jax.Array
  counts: jax.Array


def mixture(num_tasks: int) -> optax.GradientTransformationExtraArgs:
  """All tasks in every batch, with equal weights.

  Args:
    num_tasks: T.

  Returns:
    An `optax.GradientTransformationExtraArgs` with state `MixtureState`:
    `choice` -1, `weights` 1/T each, `counts` incremented for every task at
    every call; `task_divergences` is accepted and ignored.

  Raises:
    ValueError: on num_tasks < 1.

  References:
    Tseng et al., Offline Multi-Agent Reinforcement Learning with Knowledge
    Distillation, NeurIPS 2022.
  """
  _check_num_tasks('mixture', num_tasks)

  def init_fn(params):
    del params
    return MixtureState(
        choice=jnp.full([], -1, jnp.int32),
        weights=jnp.full([num_tasks], 1.0 / num_tasks, jnp.float32),
        counts=jnp.zeros([num_tasks], jnp.int32))

  def update_fn(updates, state, params=None, *, task_divergences=None,
                **extra_args):
    del params, task_divergences, extra_args
    return updates, state._replace(
        counts=optax.safe_increment(state.counts))

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


class LearningProgressState(NamedTuple):
  """State of `learning_progress`: the common fields plus `scores` (the
  learning-progress estimate of each task), `probs` (the last selection
  probabilities), `last_divergences` (the divergences of the last call),
  `count` (calls so far) and `key`."""

  choice: jax.Array
  weights: jax.Array
  counts: jax.Array
  scores: jax.Array
  probs: jax.Array
  last_divergences: jax.Array
  count: jax.Array
  key: jax.Array


def learning_progress(
    num_tasks: int, key: Any, *, step_size: float = 0.1,
    mode: str = 'epsilon_greedy', temperature: float = 1.0,
    epsilon: float = 0.1,
    absolute: bool = False) -> optax.GradientTransformationExtraArgs:
  """A bandit that chooses the task whose divergence has been dropping fastest.

  At each call the reward of the previously chosen task c is its learning
  progress `KL_c(last call) - KL_c(this call)`: the decrease of its divergence
  since it was last measured, i.e. over the step trained on c (with
  `absolute=True`, `|KL_c(last) - KL_c(now)|`, which also rewards forgetting).
  Its estimate becomes that reward the first time, then an exponential
  average, `score_c += step_size * (reward - score_c)`. Each task is first
  tried once (in index order); afterwards the choice is epsilon-greedy or a
  softmax over the estimates.

  Args:
    num_tasks: T.
    key: random key (typed, raw uint32 or int seed).
    step_size: exponential-average rate of the estimates, in (0, 1].
    mode: 'epsilon_greedy', 'softmax' or 'greedy'.
    temperature: softmax temperature, > 0 (in units of divergence decrease).
    epsilon: exploration probability, in [0, 1].
    absolute: reward |decrease| instead of the signed decrease.

  Returns:
    An `optax.GradientTransformationExtraArgs` with state
    `LearningProgressState`; its update takes `task_divergences` [T]
    (keyword-only, required).

  Raises:
    ValueError: on num_tasks < 1, step_size outside (0, 1], an unknown mode,
      temperature <= 0 or epsilon outside [0, 1].

  References:
    Graves et al., Automated Curriculum Learning for Neural Networks, ICML
    2017 (https://arxiv.org/abs/1704.03003).
  """
  _check_num_tasks('learning_progress', num_tasks)
  _check_sampling('learning_progress', mode, temperature, epsilon, key)
  if not 0.0 < step_size <= 1.0:
    raise ValueError(
        f'{_FILE}: learning_progress step_size must be in (0, 1], got '
        f'{step_size!r}.')

  def init_fn(params):
    del params
    return LearningProgressState(
        choice=jnp.zeros([], jnp.int32),
        weights=_one_hot(0, num_tasks),
        counts=jnp.zeros([num_tasks], jnp.int32),
        scores=jnp.zeros([num_tasks], jnp.float32),
        probs=jnp.full([num_tasks], 1.0 / num_tasks, jnp.float32),
        last_divergences=jnp.zeros([num_tasks], jnp.float32),
        count=jnp.zeros([], jnp.int32),
        key=surgery.canonicalize_key(key))

  def update_fn(updates, state, params=None, *, task_divergences,
                **extra_args):
    del params, extra_args
    kl_T = _task_vector('learning_progress', task_divergences, num_tasks)
    prev = state.choice
    reward = state.last_divergences[prev] - kl_T[prev]
    if absolute:
      reward = jnp.abs(reward)
    # counts[prev] == 1: this is the first reward of the previous choice.
    rate = jnp.where(state.counts[prev] == 1, 1.0, step_size)
    rate = jnp.where(state.count > 0, rate, 0.0)
    scores_T = state.scores.at[prev].add(rate * (reward - state.scores[prev]))
    next_key, step_key = jax.random.split(state.key)
    choice, probs_T = _select(step_key, scores_T, mode, temperature, epsilon)
    untried_T = state.counts == 0
    first_untried = jnp.argmax(untried_T).astype(jnp.int32)
    trying = jnp.any(untried_T)
    choice = jnp.where(trying, first_untried, choice)
    probs_T = jnp.where(trying, _one_hot(first_untried, num_tasks), probs_T)
    return updates, LearningProgressState(
        choice=choice,
        weights=_one_hot(choice, num_tasks),
        counts=_count(state.counts, choice),
        scores=scores_T,
        probs=probs_T.astype(jnp.float32),
        last_divergences=kl_T,
        count=optax.safe_increment(state.count),
        key=next_key)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


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
  _check_num_tasks('rnd', num_tasks)
  for name, value in (('obs_dim', obs_dim), ('hidden', hidden),
                      ('embed', embed), ('learning_rate', learning_rate)):
    if not value > 0:
      raise ValueError(f'{_FILE}: rnd {name} must be > 0, got {value!r}.')

  def init_fn(params):
    del params
    target_key, predictor_key = jax.random.split(surgery.canonicalize_key(key))
    return RNDState(
        choice=jnp.zeros([], jnp.int32),
        weights=_one_hot(0, num_tasks),
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
          f'{_FILE}: rnd task_states must have shape ({num_tasks}, N, '
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
        weights=_one_hot(choice, num_tasks),
        counts=_count(state.counts, choice),
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
  _check_num_tasks('bi_objective', num_tasks)
  if not 0.0 <= lam < float('inf'):
    raise ValueError(
        f'{_FILE}: bi_objective lam must be finite and >= 0, got {lam!r}.')

  def init_fn(params):
    return BiObjectiveState(
        choice=jnp.zeros([], jnp.int32),
        weights=_one_hot(0, num_tasks),
        counts=jnp.zeros([num_tasks], jnp.int32),
        scores=jnp.zeros([num_tasks], jnp.float32),
        cos=jnp.zeros([num_tasks], jnp.float32),
        count=jnp.zeros([], jnp.int32),
        reference=optax.tree.zeros_like(params))

  def update_fn(updates_T, state, params=None, *, task_divergences,
                **extra_args):
    del params, extra_args
    kl_T = _task_vector('bi_objective', task_divergences, num_tasks)
    for leaf in jax.tree.leaves(updates_T):
      if leaf.ndim == 0 or leaf.shape[0] != num_tasks:
        raise ValueError(
            f'{_FILE}: bi_objective needs stacked updates [{num_tasks}, ...] '
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
        weights=_one_hot(choice, num_tasks),
        counts=_count(state.counts, choice),
        scores=scores_T,
        cos=cos_T.astype(jnp.float32),
        count=optax.safe_increment(state.count),
        reference=jax.tree.map(lambda r, u: u.astype(r.dtype),
                               state.reference, updates))
    return updates, new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
