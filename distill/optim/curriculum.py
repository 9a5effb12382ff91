"""Curriculum selectors as optax transforms: which task to learn from next.

Shape letters: T tasks, N probe examples per task, S observation features.

Contract. A selector is an `optax.GradientTransformationExtraArgs` whose

  update_fn(updates, state, params=None, *, task_divergences, **extra_args)

passes `updates` through unchanged (any pytree, or None; except
`bi_objective`, which takes stacked per-task updates [T, ...] and returns the
chosen task's update) and writes into its state:

  choice   int32 []: the task to learn from, chosen from the inputs of THIS
           call (-1 for `mixture`, which uses all tasks);
  weights  float32 [T]: one-hot of `choice`, or the mixture weights;
  counts   int32 [T]: how often each task was chosen so far (every task counts
           at every call for `mixture`);

plus the selector's per-task estimates (`scores` [T], ...). Before the first
update `choice` is 0 (-1 for `mixture`) and `counts` are zero.

Two ways to use one. Measure the divergences on small probe batches (forward
passes only), call `selector.update(None, state, task_divergences=kl_T)`, read
`state.choice`, and compute the one gradient on that task's batch. Or chain it
in front of an optimizer,

  tx = optax.chain(max_kl(T), optax.adam(1e-3))
  updates, opt_state = tx.update(grads, opt_state, params,
                                 task_divergences=kl_T)

and take `opt_state[0].choice` as the task of the next step. `task_divergences`
is keyword-only and required by the selectors that use it (a call without it
raises TypeError); the others accept and ignore it, so selectors swap without
changing the call. Every selector's state keeps its structure, shapes, dtypes
and weak types across updates (also with `jax_enable_x64`), so a jitted step
compiles once and the state can be a `lax.scan` or `lax.cond` carry.

Random selectors take `key` (a typed `jax.random.key`, raw uint32 key data or
an int seed) as the argument after `num_tasks`; the state holds the key's raw
uint32 data (serializable with msgpack, pickle and orbax) and splits it at
every update. Float hyperparameters can be scheduled with
`optax.inject_hyperparams`; `num_tasks` is a shape (under a jitted init, pass
`static_args=('num_tasks',)`).
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from distill.optim import _common


class MaxKLState(NamedTuple):
  """State of `max_kl`.

  Attributes:
    choice: int32 [], the task chosen by the last call (0 before any).
    weights: float32 [T], one-hot of `choice`.
    counts: int32 [T], how often each task was chosen.
    scores: float32 [T], the divergences of the last call.
    probs: float32 [T], the selection probabilities of the last call.
    key: uint32 [2], raw data of the random key (split at every call).
  """

  choice: jax.Array
  weights: jax.Array
  counts: jax.Array
  scores: jax.Array
  probs: jax.Array
  key: jax.Array


def max_kl(num_tasks: int, key: Any = None, *, mode: str = 'greedy',
           temperature: float = 1.0,
           epsilon: float = 0.1) -> optax.GradientTransformationExtraArgs:
  """Chooses the task whose divergence is largest (the least known teacher).

  Args:
    num_tasks: T.
    key: random key (typed, raw uint32 data or an int seed); required unless
      `mode` is 'greedy'.
    mode: 'greedy' (argmax of the divergences), 'softmax' (sample from
      softmax(divergences / temperature)) or 'epsilon_greedy' (a uniformly
      random task with probability epsilon, else the argmax).
    temperature: softmax temperature, > 0; schedulable.
    epsilon: exploration probability, in [0, 1]; schedulable.

  Returns:
    An `optax.GradientTransformationExtraArgs` with state `MaxKLState`; its
    update passes `updates` through and takes `task_divergences` [T]
    (keyword-only, required).

  Raises:
    ValueError: on num_tasks < 1, an unknown mode, temperature <= 0, epsilon
      outside [0, 1], a bad key, or a random mode without a key.

  Example:
    >>> import jax.numpy as jnp
    >>> from distill import optim
    >>> select = optim.max_kl(num_tasks=3)
    >>> state = select.init(None)
    >>> kl_T = jnp.array([0.1, 0.5, 0.2])
    >>> _, state = select.update(None, state, task_divergences=kl_T)
    >>> print(state.choice, state.counts)
    1 [0 1 0]

  References:
    Rusu et al., Policy Distillation, ICLR 2016
    (https://arxiv.org/abs/1511.06295): the KL to the teacher (with a
    temperature) as the distillation loss; choosing the task of largest KL is
    this project's curriculum (docs/design.md, section 3).
  """
  size = _common.static_int('max_kl', 'num_tasks', num_tasks)
  _common.check_sampling('max_kl', mode, temperature, epsilon, key)
  impl = None if key is None else _common.check_key('max_kl', key)

  def init_fn(params):
    del params
    num_tasks = _common.require_static('max_kl', 'num_tasks', size)
    return MaxKLState(
        **_common.first_choice(num_tasks),
        scores=jnp.zeros([num_tasks], jnp.float32),
        probs=jnp.full([num_tasks], 1.0 / num_tasks, jnp.float32),
        key=_common.init_key(key, impl))

  def update_fn(updates, state, params=None, *, task_divergences,
                **extra_args):
    del params, extra_args
    state = _common.as_arrays(state)
    num_tasks = state.counts.shape[0]
    kl_T = _common.task_vector('max_kl', 'task_divergences', task_divergences,
                               num_tasks)
    next_key, step_key = _common.split_key(state.key, impl)
    choice, probs_T = _common.select_task(step_key, kl_T, mode, temperature,
                                          epsilon)
    return updates, MaxKLState(
        **_common.chosen(choice, state.counts),
        scores=kl_T,
        probs=probs_T,
        key=next_key)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


class RoundRobinState(NamedTuple):
  """State of `round_robin`.

  Attributes:
    choice: int32 [], the task chosen by the last call (0 before any).
    weights: float32 [T], one-hot of `choice`.
    counts: int32 [T], how often each task was chosen.
    count: int32 [], number of calls so far.
  """

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
    its update passes `updates` through and accepts and ignores extra
    arguments such as `task_divergences`.

  Raises:
    ValueError: on num_tasks < 1.

  Example:
    >>> from distill import optim
    >>> select = optim.round_robin(3)
    >>> state = select.init(None)
    >>> for _ in range(4):
    ...   _, state = select.update(None, state)
    ...   print(state.choice, end=' ')
    0 1 2 0

  References:
    Rusu et al., Policy Distillation, ICLR 2016
    (https://arxiv.org/abs/1511.06295): multi-task distillation cycling over
    the teachers.
  """
  size = _common.static_int('round_robin', 'num_tasks', num_tasks)

  def init_fn(params):
    del params
    num_tasks = _common.require_static('round_robin', 'num_tasks', size)
    return RoundRobinState(
        **_common.first_choice(num_tasks),
        count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    state = _common.as_arrays(state)
    num_tasks = state.counts.shape[0]
    choice = (state.count % num_tasks).astype(jnp.int32)
    return updates, RoundRobinState(
        **_common.chosen(choice, state.counts),
        count=optax.safe_increment(state.count).astype(jnp.int32))

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


class UniformState(NamedTuple):
  """State of `uniform`.

  Attributes:
    choice: int32 [], the task chosen by the last call (0 before any).
    weights: float32 [T], one-hot of `choice`.
    counts: int32 [T], how often each task was chosen.
    key: uint32 [2], raw data of the random key (split at every call).
  """

  choice: jax.Array
  weights: jax.Array
  counts: jax.Array
  key: jax.Array


def uniform(num_tasks: int, key: Any) -> optax.GradientTransformationExtraArgs:
  """Chooses one task uniformly at random at every call.

  Args:
    num_tasks: T.
    key: random key (typed, raw uint32 data or an int seed).

  Returns:
    An `optax.GradientTransformationExtraArgs` with state `UniformState`; its
    update passes `updates` through and accepts and ignores extra arguments
    such as `task_divergences`.

  Raises:
    ValueError: on num_tasks < 1 or a bad key.

  Example:
    >>> import jax
    >>> from distill import optim
    >>> select = optim.uniform(3, jax.random.key(0))
    >>> state = select.init(None)
    >>> for _ in range(30):
    ...   _, state = select.update(None, state)
    >>> print(state.counts.sum(), bool((state.counts > 0).all()))
    30 True

  References:
    Graves et al., Automated Curriculum Learning for Neural Networks, ICML
    2017 (https://arxiv.org/abs/1704.03003): the uniform baseline curriculum.
  """
  size = _common.static_int('uniform', 'num_tasks', num_tasks)
  impl = _common.check_key('uniform', key)

  def init_fn(params):
    del params
    num_tasks = _common.require_static('uniform', 'num_tasks', size)
    return UniformState(
        **_common.first_choice(num_tasks),
        key=_common.init_key(key, impl))

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    state = _common.as_arrays(state)
    num_tasks = state.counts.shape[0]
    next_key, step_key = _common.split_key(state.key, impl)
    choice = jax.random.randint(step_key, [], 0, num_tasks, dtype=jnp.int32)
    return updates, UniformState(
        **_common.chosen(choice, state.counts),
        key=next_key)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


class MixtureState(NamedTuple):
  """State of `mixture`.

  Attributes:
    choice: int32 [], always -1 (every task is used).
    weights: float32 [T], 1/T each.
    counts: int32 [T], number of calls, for every task.
  """

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
    every call; its update passes `updates` through and accepts and ignores
    extra arguments such as `task_divergences`.

  Raises:
    ValueError: on num_tasks < 1.

  Example:
    >>> from distill import optim
    >>> select = optim.mixture(2)
    >>> _, state = select.update(None, select.init(None))
    >>> print(state.choice, state.weights, state.counts)
    -1 [0.5 0.5] [1 1]

  References:
    Tseng et al., Offline Multi-Agent Reinforcement Learning with Knowledge
    Distillation, NeurIPS 2022: all teachers' data mixed in every batch.
  """
  size = _common.static_int('mixture', 'num_tasks', num_tasks)

  def init_fn(params):
    del params
    num_tasks = _common.require_static('mixture', 'num_tasks', size)
    return MixtureState(
        choice=jnp.full([], -1, jnp.int32),
        weights=jnp.full([num_tasks], 1.0 / num_tasks, jnp.float32),
        counts=jnp.zeros([num_tasks], jnp.int32))

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    state = _common.as_arrays(state)
    return updates, state._replace(
        counts=optax.safe_increment(state.counts).astype(jnp.int32))

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


class LearningProgressState(NamedTuple):
  """State of `learning_progress`.

  Attributes:
    choice: int32 [], the task chosen by the last call (0 before any).
    weights: float32 [T], one-hot of `choice`.
    counts: int32 [T], how often each task was chosen.
    scores: float32 [T], the learning-progress estimate of each task.
    probs: float32 [T], the selection probabilities of the last call.
    last_divergences: float32 [T], the divergences of the last call.
    count: int32 [], number of calls so far.
    key: uint32 [2], raw data of the random key (split at every call).
  """

  choice: jax.Array
  weights: jax.Array
  counts: jax.Array
  scores: jax.Array
  probs: jax.Array
  last_divergences: jax.Array
  count: jax.Array
  key: jax.Array


def learning_progress(
    num_tasks: int, key: Any = None, *, step_size: float = 0.1,
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
  tried once (in index order); afterwards the choice is epsilon-greedy, a
  softmax over the estimates, or greedy.

  Args:
    num_tasks: T.
    key: random key (typed, raw uint32 data or an int seed); required unless
      `mode` is 'greedy'.
    step_size: exponential-average rate of the estimates, in (0, 1];
      schedulable.
    mode: 'epsilon_greedy', 'softmax' or 'greedy'.
    temperature: softmax temperature, > 0 (in units of divergence decrease);
      schedulable.
    epsilon: exploration probability, in [0, 1]; schedulable.
    absolute: reward |decrease| instead of the signed decrease.

  Returns:
    An `optax.GradientTransformationExtraArgs` with state
    `LearningProgressState`; its update passes `updates` through and takes
    `task_divergences` [T] (keyword-only, required).

  Raises:
    ValueError: on num_tasks < 1, step_size outside (0, 1], an unknown mode,
      temperature <= 0, epsilon outside [0, 1], a bad key, or a random mode
      without a key.

  Example:
    >>> import jax.numpy as jnp
    >>> from distill import optim
    >>> select = optim.learning_progress(2, mode='greedy')
    >>> state = select.init(None)
    >>> for kl in ([1.0, 1.0], [0.5, 1.0], [0.25, 0.75]):
    ...   _, state = select.update(None, state,
    ...                            task_divergences=jnp.array(kl))
    >>> print(state.choice, state.scores)  # tasks 0, 1 dropped by 0.5, 0.25
    0 [0.5  0.25]

  References:
    Graves et al., Automated Curriculum Learning for Neural Networks, ICML
    2017 (https://arxiv.org/abs/1704.03003).
  """
  name = 'learning_progress'
  size = _common.static_int(name, 'num_tasks', num_tasks)
  _common.check_sampling(name, mode, temperature, epsilon, key)
  _common.check_float(name, 'step_size', step_size, low=0.0, high=1.0,
                      low_open=True)
  impl = None if key is None else _common.check_key(name, key)

  def init_fn(params):
    del params
    num_tasks = _common.require_static(name, 'num_tasks', size)
    # One buffer per field: a state whose fields share a buffer cannot be
    # donated to a jitted step ("donate the same buffer twice").
    return LearningProgressState(
        **_common.first_choice(num_tasks),
        scores=jnp.zeros([num_tasks], jnp.float32),
        probs=jnp.full([num_tasks], 1.0 / num_tasks, jnp.float32),
        last_divergences=jnp.zeros([num_tasks], jnp.float32),
        count=jnp.zeros([], jnp.int32),
        key=_common.init_key(key, impl))

  def update_fn(updates, state, params=None, *, task_divergences,
                **extra_args):
    del params, extra_args
    state = _common.as_arrays(state)
    num_tasks = state.counts.shape[0]
    kl_T = _common.task_vector(name, 'task_divergences', task_divergences,
                               num_tasks)
    prev = state.choice
    reward = state.last_divergences[prev] - kl_T[prev]
    if absolute:
      reward = jnp.abs(reward)
    # counts[prev] == 1: this is the first reward of the previous choice.
    rate = jnp.where(state.counts[prev] == 1, 1.0,
                     jnp.asarray(step_size, jnp.float32))
    rate = jnp.where(state.count > 0, rate, 0.0).astype(jnp.float32)
    scores_T = state.scores.at[prev].add(rate * (reward - state.scores[prev]))
    next_key, step_key = _common.split_key(state.key, impl)
    choice, probs_T = _common.select_task(step_key, scores_T, mode,
                                          temperature, epsilon)
    untried_T = state.counts == 0
    first_untried = jnp.argmax(untried_T).astype(jnp.int32)
    trying = jnp.any(untried_T)
    choice = jnp.where(trying, first_untried, choice)
    probs_T = jnp.where(trying, _common.one_hot(first_untried, num_tasks),
                        probs_T)
    return updates, LearningProgressState(
        **_common.chosen(choice, state.counts),
        scores=scores_T.astype(jnp.float32),
        probs=probs_T.astype(jnp.float32),
        last_divergences=kl_T,
        count=optax.safe_increment(state.count).astype(jnp.int32),
        key=next_key)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
