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
_PREFIX = 'distill.optim'


def check_num_tasks(name: str, num_tasks: int) -> None:
  if not isinstance(num_tasks, numbers.Integral) or num_tasks < 1:
    raise ValueError(
        f'{_PREFIX}.{name}: num_tasks must be an int >= 1, got {num_tasks!r}.')


def _check_sampling(name: str, mode: str, temperature: float, epsilon: float,
                    key: Any, modes=_MODES) -> None:
  if mode not in modes:
    raise ValueError(
        f'{_PREFIX}.{name}: mode must be one of {modes}, got {mode!r}.')
  if not temperature > 0:
    raise ValueError(
        f'{_PREFIX}.{name}: temperature must be > 0, got {temperature!r}.')
  if not 0.0 <= epsilon <= 1.0:
    raise ValueError(
        f'{_PREFIX}.{name}: epsilon must be in [0, 1], got {epsilon!r}.')
  if mode != 'greedy' and key is None:
    raise ValueError(f'{_PREFIX}.{name}: mode {mode!r} needs a random key.')


def task_vector(name: str, x: Any, num_tasks: int) -> jax.Array:
  """Checks the (static) shape of a per-task input and casts it to float32."""
  x = jnp.asarray(x, jnp.float32)
  if x.shape != (num_tasks,):
    raise ValueError(
        f'{_PREFIX}.{name}: task_divergences must have shape ({num_tasks},), '
        f'got {x.shape}.')
  return x


def one_hot(choice: jax.Array, num_tasks: int) -> jax.Array:
  return jax.nn.one_hot(choice, num_tasks, dtype=jnp.float32)


def count_choice(counts_T: jax.Array, choice: jax.Array) -> jax.Array:
  return counts_T.at[choice].set(optax.safe_increment(counts_T[choice]))


def _select(key, scores_T, mode, temperature, epsilon):
  """Chooses a task from scores: greedy, softmax or epsilon-greedy.

  Returns:
    (choice int32 scalar, probs_T float32: the selection probabilities).
  """
  num_tasks = scores_T.shape[0]
  best = jnp.argmax(scores_T).astype(jnp.int32)
  if mode == 'greedy':
    return best, one_hot(best, num_tasks)
  if mode == 'softmax':
    logits_T = scores_T / temperature
    choice = jax.random.categorical(key, logits_T).astype(jnp.int32)
    return choice, jax.nn.softmax(logits_T)
  explore_key, task_key = jax.random.split(key)
  explore = jax.random.uniform(explore_key) < epsilon
  other = jax.random.randint(task_key, [], 0, num_tasks, dtype=jnp.int32)
  probs_T = epsilon / num_tasks + (1.0 - epsilon) * one_hot(best, num_tasks)
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
  check_num_tasks('max_kl', num_tasks)
  _check_sampling('max_kl', mode, temperature, epsilon, key)

  def init_fn(params):
    del params
    return MaxKLState(
        choice=jnp.zeros([], jnp.int32),
        weights=one_hot(0, num_tasks),
        counts=jnp.zeros([num_tasks], jnp.int32),
        scores=jnp.zeros([num_tasks], jnp.float32),
        probs=jnp.full([num_tasks], 1.0 / num_tasks, jnp.float32),
        key=surgery.canonicalize_key(0 if key is None else key))

  def update_fn(updates, state, params=None, *, task_divergences,
                **extra_args):
    del params, extra_args
    kl_T = task_vector('max_kl', task_divergences, num_tasks)
    next_key, step_key = jax.random.split(state.key)
    choice, probs_T = _select(step_key, kl_T, mode, temperature, epsilon)
    return updates, MaxKLState(
        choice=choice,
        weights=one_hot(choice, num_tasks),
        counts=count_choice(state.counts, choice),
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
  check_num_tasks('round_robin', num_tasks)

  def init_fn(params):
    del params
    return RoundRobinState(
        choice=jnp.zeros([], jnp.int32),
        weights=one_hot(0, num_tasks),
        counts=jnp.zeros([num_tasks], jnp.int32),
        count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None, *, task_divergences=None,
                **extra_args):
    del params, task_divergences, extra_args
    choice = (state.count % num_tasks).astype(jnp.int32)
    return updates, RoundRobinState(
        choice=choice,
        weights=one_hot(choice, num_tasks),
        counts=count_choice(state.counts, choice),
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
  check_num_tasks('uniform', num_tasks)

  def init_fn(params):
    del params
    return UniformState(
        choice=jnp.zeros([], jnp.int32),
        weights=one_hot(0, num_tasks),
        counts=jnp.zeros([num_tasks], jnp.int32),
        key=surgery.canonicalize_key(key))

  def update_fn(updates, state, params=None, *, task_divergences=None,
                **extra_args):
    del params, task_divergences, extra_args
    next_key, step_key = jax.random.split(state.key)
    choice = jax.random.randint(step_key, [], 0, num_tasks, dtype=jnp.int32)
    return updates, UniformState(
        choice=choice,
        weights=one_hot(choice, num_tasks),
        counts=count_choice(state.counts, choice),
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
  check_num_tasks('mixture', num_tasks)

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
  check_num_tasks('learning_progress', num_tasks)
  _check_sampling('learning_progress', mode, temperature, epsilon, key)
  if not 0.0 < step_size <= 1.0:
    raise ValueError(
        f'{_PREFIX}.learning_progress: step_size must be in (0, 1], got '
        f'{step_size!r}.')

  def init_fn(params):
    del params
    return LearningProgressState(
        choice=jnp.zeros([], jnp.int32),
        weights=one_hot(0, num_tasks),
        counts=jnp.zeros([num_tasks], jnp.int32),
        scores=jnp.zeros([num_tasks], jnp.float32),
        probs=jnp.full([num_tasks], 1.0 / num_tasks, jnp.float32),
        last_divergences=jnp.zeros([num_tasks], jnp.float32),
        count=jnp.zeros([], jnp.int32),
        key=surgery.canonicalize_key(key))

  def update_fn(updates, state, params=None, *, task_divergences,
                **extra_args):
    del params, extra_args
    kl_T = task_vector('learning_progress', task_divergences, num_tasks)
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
    probs_T = jnp.where(trying, one_hot(first_untried, num_tasks), probs_T)
    return updates, LearningProgressState(
        choice=choice,
        weights=one_hot(choice, num_tasks),
        counts=count_choice(state.counts, choice),
        scores=scores_T,
        probs=probs_T.astype(jnp.float32),
        last_divergences=kl_T,
        count=optax.safe_increment(state.count),
        key=next_key)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
