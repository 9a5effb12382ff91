"""Helpers shared by the `distill.optim` transforms (private to the package).

Everything here is written so that the transforms keep working in the wrappings
that optax users put around them:

- Hyperparameters are checked when their value is known. Under
  `optax.inject_hyperparams` a factory is called again at every update with
  its numeric hyperparameters as (possibly traced) arrays; a traced value is
  used as given (it cannot be inspected), and a shape-setting integer is read
  from the state instead.
- Random keys are stored in states as raw uint32 key data, which every
  serializer accepts (msgpack, pickle, orbax), and wrapped into a typed key
  inside `update`.
- Inner products over pytrees multiply leaves elementwise and sum in a float
  type of at least 32 bits: no reshape or dot_general over a leaf, so
  parameters sharded over a mesh (`Auto` or `Explicit` axes) need no
  resharding, and bf16 leaves do not accumulate in bf16.
- States restored by a serializer may hold NumPy arrays; `as_arrays` turns
  them back into JAX arrays before the update indexes them.

Shape letters: T tasks.
"""

import math
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import optax

HIGHEST = jax.lax.Precision.HIGHEST
MODES = ('greedy', 'softmax', 'epsilon_greedy')
MULTISTEPS_HINT = (
    ' Unstacked updates in the shape of params reach this transform, for '
    'example, inside optax.MultiSteps, whose accumulator has the shape of '
    'params and so cannot hold per-task updates: apply the stacked-update '
    'transform outside MultiSteps (or accumulate per-task gradients yourself).')


def error(name: str, message: str) -> ValueError:
  """A ValueError whose message has the form `distill.optim.<name>: ...`.

  Args:
    name: the public transform or function that refuses.
    message: what is wrong and, where it helps, what to do instead.

  Returns:
    The exception (the caller raises it).
  """
  return ValueError(f'distill.optim.{name}: {message}')


def is_traced(x: Any) -> bool:
  """Whether `x` is a tracer (its value is unknown while tracing)."""
  return isinstance(x, jax.core.Tracer)


def static_int(name: str, arg: str, value: Any, *,
               minimum: int = 1) -> int | None:
  """Checks a shape-setting integer hyperparameter.

  Args:
    name: the transform, for the error message.
    arg: the argument's name.
    value: a Python or NumPy integer, or an integer array of shape () (what
      `optax.inject_hyperparams` passes), possibly traced.
    minimum: the smallest valid value.

  Returns:
    The value as a Python int, or None when it is traced (inside a jitted
    update under `optax.inject_hyperparams`); the transform then reads the
    size from its state.

  Raises:
    ValueError: on a non-integer, or a known value below `minimum`.
  """
  integral = isinstance(value, numbers.Integral) and not isinstance(
      value, bool)
  if not integral and hasattr(value, 'dtype') and hasattr(value, 'shape'):
    integral = (jnp.issubdtype(value.dtype, jnp.integer)
                and tuple(value.shape) == ())
  if not integral:
    raise error(name, f'{arg} must be an int >= {minimum}, got {value!r}.')
  if is_traced(value):
    return None
  value = int(value)
  if value < minimum:
    raise error(name, f'{arg} must be an int >= {minimum}, got {value}.')
  return value


def require_static(name: str, arg: str, value: int | None) -> int:
  """The value of a shape-setting integer that `init` needs.

  Args:
    name: the transform, for the error message.
    arg: the argument's name.
    value: from `static_int`.

  Returns:
    `value`.

  Raises:
    ValueError: when `value` is None, i.e. it was traced when init ran.
  """
  if value is None:
    raise error(
        name, f'{arg} sets the shapes of the state, so its value must be '
        'known when init runs; under optax.inject_hyperparams inside a jitted '
        f"init, pass static_args=('{arg}',).")
  return value


def check_float(name: str, arg: str, value: Any, *,
                low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False) -> Any:
  """Checks a float hyperparameter against an interval, when it is known.

  Args:
    name: the transform, for the error message.
    arg: the argument's name.
    value: a number or an array of shape () (concrete or traced).
    low: lower bound (None: unbounded).
    high: upper bound (None: unbounded).
    low_open: whether `low` itself is excluded.
    high_open: whether `high` itself is excluded.

  Returns:
    `value`, unchanged (a traced value is returned without a check: under
    `optax.inject_hyperparams` it is a schedule's output, known only at run
    time).

  Raises:
    ValueError: on a value that is not a real number of shape (), NaN, or
      outside the interval.
  """
  lo = '(' if low_open else '['
  hi = ')' if high_open else ']'
  interval = (f'{lo}{"-inf" if low is None else low}, '
              f'{"inf" if high is None else high}{hi}')
  if callable(value):
    raise error(
        name, f'{arg} must be a number in {interval}, got a callable; to '
        f'schedule {arg}, wrap the factory in optax.inject_hyperparams.')
  shape = getattr(value, 'shape', ())
  dtype = getattr(value, 'dtype', None)
  real = isinstance(value, numbers.Real) and not isinstance(value, bool)
  if dtype is not None:
    real = tuple(shape) == () and (jnp.issubdtype(dtype, jnp.floating)
                                   or jnp.issubdtype(dtype, jnp.integer))
  if not real:
    raise error(name, f'{arg} must be a number in {interval}, got {value!r}.')
  if is_traced(value):
    return value
  x = float(value)
  ok = not math.isnan(x)
  if low is not None:
    ok = ok and (x > low if low_open else x >= low)
  if high is not None:
    ok = ok and (x < high if high_open else x <= high)
  if not ok:
    raise error(name, f'{arg} must be in {interval}, got {value!r}.')
  return value


def check_mode(name: str, mode: str, key: Any, modes=MODES) -> None:
  """Checks a task-sampling mode and that the random modes have a key."""
  if mode not in modes:
    raise error(name, f'mode must be one of {modes}, got {mode!r}.')
  if mode != 'greedy' and key is None:
    raise error(name, f'mode {mode!r} samples tasks, so it needs a random '
                'key (key=jax.random.key(seed), raw key data or an int seed).')


def check_sampling(name: str, mode: str, temperature: Any, epsilon: Any,
                   key: Any) -> None:
  """Checks the task-sampling hyperparameters of a selector.

  Raises:
    ValueError: on an unknown mode, a random mode without a key, a known
      temperature <= 0 or a known epsilon outside [0, 1].
  """
  check_mode(name, mode, key)
  check_float(name, 'temperature', temperature, low=0.0, low_open=True)
  check_float(name, 'epsilon', epsilon, low=0.0, high=1.0)


def select_task(key: jax.Array, scores_T: jax.Array, mode: str,
                temperature: Any, epsilon: Any) -> tuple[jax.Array, jax.Array]:
  """Chooses a task from scores: greedy, softmax or epsilon-greedy.

  Args:
    key: typed key for this step (unused when greedy).
    scores_T: float32 [T].
    mode: one of `MODES`.
    temperature: softmax temperature (may be traced).
    epsilon: exploration probability (may be traced).

  Returns:
    (choice int32 [], probs_T float32 [T]: the selection probabilities).
  """
  num_tasks = scores_T.shape[0]
  best = jnp.argmax(scores_T).astype(jnp.int32)
  if mode == 'greedy':
    return best, one_hot(best, num_tasks)
  if mode == 'softmax':
    logits_T = scores_T / jnp.asarray(temperature, jnp.float32)
    choice = jax.random.categorical(key, logits_T).astype(jnp.int32)
    return choice, jax.nn.softmax(logits_T).astype(jnp.float32)
  epsilon = jnp.asarray(epsilon, jnp.float32)
  explore_key, task_key = jax.random.split(key)
  explore = jax.random.uniform(explore_key, dtype=jnp.float32) < epsilon
  other = jax.random.randint(task_key, [], 0, num_tasks, dtype=jnp.int32)
  probs_T = epsilon / num_tasks + (1 - epsilon) * one_hot(best, num_tasks)
  return jnp.where(explore, other, best), probs_T.astype(jnp.float32)


# --- random keys --------------------------------------------------------------


def check_key(name: str, key: Any) -> str | None:
  """Checks a random key given to a factory.

  Args:
    name: the transform, for the error message.
    key: a typed key (`jax.random.key`), raw uint32 key data
      (`jax.random.PRNGKey`), or an integer seed (Python, NumPy or an integer
      array of shape ()); concrete or traced.

  Returns:
    The name of the key's implementation for a typed key, else None (the
    default implementation).

  Raises:
    ValueError: on anything else, e.g. a batch of keys.
  """
  if isinstance(key, numbers.Integral) and not isinstance(key, bool):
    return None
  dtype = getattr(key, 'dtype', None)
  shape = tuple(getattr(key, 'shape', ()))
  if dtype is not None:
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key) and shape == ():
      return str(jax.random.key_impl(key))
    if jnp.issubdtype(dtype, jnp.integer) and shape == ():
      return None
    if dtype == jnp.uint32:
      try:
        jax.eval_shape(jax.random.wrap_key_data,
                       jax.ShapeDtypeStruct(shape, dtype))
      except (TypeError, ValueError):
        pass
      else:
        return None
  raise error(
      name, 'key must be one random key: jax.random.key(seed), raw uint32 '
      f'key data (jax.random.PRNGKey(seed)) or an int seed, got {key!r}.')


def key_data(key: Any, impl: str | None) -> jax.Array:
  """The raw uint32 data of a key accepted by `check_key` (for a state)."""
  dtype = getattr(key, 'dtype', None)
  if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
    return jax.random.key_data(key)
  if dtype is None or jnp.ndim(key) == 0:  # An integer seed.
    return jax.random.key_data(jax.random.key(key, impl=impl))
  return jnp.asarray(key, jnp.uint32)


def init_key(key: Any, impl: str | None) -> jax.Array:
  """The raw key data a selector's state starts with.

  A greedy selector may have no key; its state keeps one of seed 0 so that
  every mode has the same state structure. The data is a copy: the state
  owns its buffer, so donating the state never deletes the caller's key.
  """
  return jnp.array(key_data(0 if key is None else key, impl), copy=True)


def wrap_key(data: jax.Array, impl: str | None) -> jax.Array:
  """The typed key whose raw data a state holds."""
  return jax.random.wrap_key_data(jnp.asarray(data, jnp.uint32), impl=impl)


def split_key(data: jax.Array, impl: str | None) -> tuple[jax.Array,
                                                          jax.Array]:
  """(raw data of the next state key, a typed key for this step)."""
  next_key, step_key = jax.random.split(wrap_key(data, impl))
  return jax.random.key_data(next_key), step_key


# --- states -------------------------------------------------------------------


def as_arrays(state: Any) -> Any:
  """The state with every leaf a JAX array (restored leaves may be NumPy)."""
  return jax.tree.map(jnp.asarray, state)


def one_hot(choice: jax.Array, num_tasks: int) -> jax.Array:
  """float32 [T] one-hot of a task index."""
  return jax.nn.one_hot(choice, num_tasks, dtype=jnp.float32)


def count_choice(counts_T: jax.Array, choice: jax.Array) -> jax.Array:
  """int32 [T] counts with the chosen task's count incremented (saturating)."""
  return counts_T.at[choice].set(optax.safe_increment(counts_T[choice]))


def first_choice(num_tasks: int) -> dict[str, jax.Array]:
  """A selector state's `choice`, `weights`, `counts` before any call."""
  return dict(choice=jnp.zeros([], jnp.int32), weights=one_hot(0, num_tasks),
              counts=jnp.zeros([num_tasks], jnp.int32))


def chosen(choice: jax.Array, counts_T: jax.Array) -> dict[str, jax.Array]:
  """A selector state's `choice`, `weights`, `counts` after `choice`."""
  return dict(choice=choice, weights=one_hot(choice, counts_T.shape[0]),
              counts=count_choice(counts_T, choice))


def task_vector(name: str, arg: str, x: Any, num_tasks: int) -> jax.Array:
  """Checks the static shape of a per-task input and casts it to float32.

  Args:
    name: the transform, for the error message.
    arg: the extra argument's name.
    x: array-like [T].
    num_tasks: T.

  Returns:
    float32 [T].

  Raises:
    ValueError: on a shape other than [T].
  """
  x = jnp.asarray(x)
  if x.shape != (num_tasks,):
    raise error(name, f'{arg} must have shape ({num_tasks},), got {x.shape}.')
  return x.astype(jnp.float32)


# --- pytree arithmetic --------------------------------------------------------


def accum_dtype(*trees: Any) -> jnp.dtype:
  """The dtype for sums over the leaves: their common float type, >= 32 bit."""
  dtype = jnp.dtype(jnp.float32)
  for leaf in jax.tree.leaves(trees):
    dtype = jnp.promote_types(dtype, leaf.dtype)
  return dtype


def _leaf_sum(parts: list[jax.Array], shape: tuple[int, ...],
              dtype: jnp.dtype) -> jax.Array:
  return sum(parts, jnp.zeros(shape, dtype))


def tree_vdot(x: Any, y: Any, dtype: jnp.dtype) -> jax.Array:
  """Pytree inner product <x, y> as a scalar of `dtype`.

  Each leaf pair is multiplied elementwise and summed (XLA fuses the two), so
  a leaf is never reshaped and its sharding needs no output annotation.

  Args:
    x: pytree.
    y: pytree of the same structure and shapes.
    dtype: accumulation dtype (from `accum_dtype`).

  Returns:
    A scalar of `dtype`.
  """
  parts = jax.tree.leaves(jax.tree.map(
      lambda a, b: jnp.sum(a.astype(dtype) * b.astype(dtype)), x, y))
  return _leaf_sum(parts, (), dtype)


def stacked_vdot(x_T: Any, y: Any, dtype: jnp.dtype) -> jax.Array:
  """Per-task inner products <x_t, y> of stacked x_T ([T, ...] leaves) and y.

  Returns:
    [T] of `dtype`.
  """
  def leaf(a, b):
    axes = tuple(range(1, a.ndim))
    return jnp.sum(a.astype(dtype) * b.astype(dtype)[None], axis=axes)

  parts = jax.tree.leaves(jax.tree.map(leaf, x_T, y))
  return _leaf_sum(parts, parts[0].shape, dtype)


def stacked_sq_norms(x_T: Any, dtype: jnp.dtype) -> jax.Array:
  """Per-task squared norms ||x_t||^2 of stacked x_T ([T, ...] leaves).

  Returns:
    [T] of `dtype`.
  """
  def leaf(a):
    a = a.astype(dtype)
    return jnp.sum(a * a, axis=tuple(range(1, a.ndim)))

  parts = jax.tree.leaves(jax.tree.map(leaf, x_T))
  return _leaf_sum(parts, parts[0].shape, dtype)


def gram(x_T: Any, dtype: jnp.dtype) -> jax.Array:
  """Gram matrix <x_i, x_j> of stacked per-task trees ([T, ...] leaves).

  Returns:
    [T, T] of `dtype`.
  """
  def leaf(a):
    a = a.astype(dtype)
    return jnp.sum(a[:, None] * a[None], axis=tuple(range(2, a.ndim + 1)))

  parts = jax.tree.leaves(jax.tree.map(leaf, x_T))
  return _leaf_sum(parts, parts[0].shape, dtype)


def task_sum(weights_T: jax.Array, x_T: Any) -> Any:
  """sum_t weights_T[t] * x_T[t], leaf-wise, in each leaf's dtype."""
  def leaf(a):
    dtype = accum_dtype(a)
    w = weights_T.astype(dtype).reshape((-1,) + (1,) * (a.ndim - 1))
    return jnp.sum(w * a.astype(dtype), axis=0).astype(a.dtype)

  return jax.tree.map(leaf, x_T)


def _path_str(path) -> str:
  return jax.tree_util.keystr(path) or '<root>'


def check_like(name: str, updates: Any, like: Any, what: str) -> None:
  """Checks that `updates` has the structure and shapes of `like`.

  Raises:
    ValueError: naming the first mismatch.
  """
  if updates is None:
    raise error(name, f'needs updates with the structure of {what}, got None.')
  if jax.tree.structure(updates) != jax.tree.structure(like):
    raise error(
        name, f'updates must have the structure of {what}: got '
        f'{jax.tree.structure(updates)}, expected {jax.tree.structure(like)}.')
  for (path, u), r in zip(jax.tree_util.tree_leaves_with_path(updates),
                          jax.tree.leaves(like)):
    if jnp.shape(u) != jnp.shape(r):
      raise error(
          name, f'updates{_path_str(path)} has shape {jnp.shape(u)}, expected '
          f'{jnp.shape(r)} (the shape of {what}).')


def check_stacked(name: str, updates_T: Any, like: Any = None,
                  num_tasks: int | None = None) -> int:
  """Checks stacked per-task updates and returns T.

  Every leaf must be [T, *shape] with one T for all leaves. With `like` (the
  params, or a params-shaped state field) each leaf's trailing shape must be
  that of the matching leaf of `like`, so that a tree whose leaves merely
  happen to start with T is refused.

  Args:
    name: the transform, for the error message.
    updates_T: the stacked updates.
    like: None, or a pytree of the unstacked shapes.
    num_tasks: None, or the T that the leading axis must have.

  Returns:
    T.

  Raises:
    ValueError: naming the offending leaf.
  """
  if updates_T is None or not jax.tree.leaves(updates_T):
    raise error(name, 'needs stacked per-task updates (leaves [T, ...]), '
                f'got {updates_T!r}.')
  leaves = jax.tree_util.tree_leaves_with_path(updates_T)
  if like is not None:
    if jax.tree.structure(updates_T) != jax.tree.structure(like):
      raise error(
          name, 'stacked updates must have the structure of params: got '
          f'{jax.tree.structure(updates_T)}, expected '
          f'{jax.tree.structure(like)}.')
    sizes = set()
    for (path, u), p in zip(leaves, jax.tree.leaves(like)):
      u_shape, p_shape = jnp.shape(u), jnp.shape(p)
      if len(u_shape) != len(p_shape) + 1 or u_shape[1:] != p_shape:
        hint = MULTISTEPS_HINT if u_shape == p_shape else ''
        raise error(
            name, f'stacked updates need leaves [T, *param.shape]; '
            f'updates{_path_str(path)} has shape {u_shape} for a parameter '
            f'of shape {p_shape}.{hint}')
      sizes.add(u_shape[0])
  else:
    sizes = {jnp.shape(u)[0] if jnp.ndim(u) else None for _, u in leaves}
  if len(sizes) != 1 or None in sizes:
    raise error(
        name, 'stacked updates need the same leading task axis [T, ...] on '
        f'every leaf, got leading sizes {sorted(map(str, sizes))}.')
  size = sizes.pop()
  if num_tasks is not None and size != num_tasks:
    raise error(name, f'stacked updates need leaves [{num_tasks}, ...] (T = '
                f'num_tasks), got a leading axis of {size}.')
  return size
