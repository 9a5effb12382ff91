"""Gradient surgery as optax transforms.

`project_conflicting` removes from each update the component that conflicts
with a reference direction kept in its state (the previous output update, or an
exponential moving average of past outputs). `pcgrad` combines per-task updates
with PCGrad (Yu et al. 2020).

Shape letters: T tasks (the leading axis of stacked per-task updates).

Inner products over a pytree are sums of per-leaf elementwise products (no
`ravel_pytree`, no reshape of a leaf), so the transforms keep working on
parameters sharded over a mesh, and they accumulate in float32 (float64 for
float64 parameters).
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from distill.optim import _common


class ProjectConflictingState(NamedTuple):
  """State of `project_conflicting`.

  Attributes:
    count: int32 [], number of updates seen.
    reference: the reference direction p, a tree of the params' structure,
      shapes and dtypes: the last output update, or an exponential moving
      average of past outputs (zeros before the first update).
    cos: float32 [], cosine between the last incoming update and p (0 on the
      first update or when either is zero); for logging.
    projected: float32 [], 1.0 when the last update conflicted with p and was
      projected, else 0.0; for logging (its mean is the projected fraction).
  """

  count: jax.Array
  reference: Any
  cos: jax.Array
  projected: jax.Array


def project_conflicting(decay: float = 0.0) -> optax.GradientTransformation:
  """Projects each update off the previous update when the two conflict.

  With g the incoming update and p the reference direction,

    g' = g - min(0, <g, p>) / ||p||^2 * p,

  so g passes unchanged unless <g, p> < 0, in which case g' is orthogonal to p.
  The first update passes through. With `decay = 0`, p is the previous output
  update g'; with `decay > 0`, p is an exponential moving average of outputs,
  p <- decay * p + (1 - decay) * g', started at the first output (no bias from
  a zero initialization). Chain it in front of an optimizer:
  `optax.chain(project_conflicting(), optax.adamw(1e-4))`.

  Args:
    decay: EMA decay of the reference direction, in [0, 1); 0 keeps exactly
      the previous output. Schedulable with `optax.inject_hyperparams`.

  Returns:
    An `optax.GradientTransformation` (it takes no extra arguments) with state
    `ProjectConflictingState`. Its update takes updates with the params'
    structure and shapes.

  Raises:
    ValueError: if `decay` is outside [0, 1).

  Example:
    >>> import jax.numpy as jnp
    >>> from distill import optim
    >>> tx = optim.project_conflicting()
    >>> params = {'w': jnp.zeros(2)}
    >>> state = tx.init(params)
    >>> g, state = tx.update({'w': jnp.array([1.0, 0.0])}, state, params)
    >>> g, state = tx.update({'w': jnp.array([-1.0, 1.0])}, state, params)
    >>> print(g['w'], state.projected)  # [-1, 1] minus its part along [1, 0]
    [0. 1.] 1.0

  References:
    Yu et al., Gradient Surgery for Multi-Task Learning, NeurIPS 2020
    (https://arxiv.org/abs/2001.06782): the projection, applied here across
    time instead of across tasks.
  """
  _common.check_float('project_conflicting', 'decay', decay, low=0.0,
                      high=1.0, high_open=True)

  def init_fn(params):
    return ProjectConflictingState(
        count=jnp.zeros([], jnp.int32),
        reference=optax.tree.zeros_like(params),
        cos=jnp.zeros([], jnp.float32),
        projected=jnp.zeros([], jnp.float32))

  def update_fn(updates, state, params=None):
    del params
    state = _common.as_arrays(state)
    _common.check_like('project_conflicting', updates, state.reference,
                       'the params given to init')
    dtype = _common.accum_dtype(updates, state.reference)
    first = state.count == 0
    p = state.reference
    dot = _common.tree_vdot(updates, p, dtype)
    sq_p = _common.tree_vdot(p, p, dtype)
    sq_g = _common.tree_vdot(updates, updates, dtype)
    has_p = jnp.logical_and(jnp.logical_not(first), sq_p > 0)
    conflict = jnp.logical_and(has_p, dot < 0)
    coef = jnp.where(conflict, dot / jnp.where(sq_p > 0, sq_p, 1.0), 0.0)
    new_updates = jax.tree.map(
        lambda g, r: (g.astype(dtype) - coef * r.astype(dtype)).astype(
            g.dtype), updates, p)
    norms = jnp.sqrt(sq_g) * jnp.sqrt(sq_p)
    cos = jnp.where(jnp.logical_and(has_p, norms > 0),
                    dot / jnp.where(norms > 0, norms, 1.0), 0.0)
    # The EMA starts at the first output instead of decaying from zero.
    keep = jnp.where(first, 0.0, jnp.asarray(decay, dtype)).astype(dtype)
    reference = jax.tree.map(
        lambda r, u: (keep * r.astype(dtype)
                      + (1 - keep) * u.astype(dtype)).astype(r.dtype),
        p, new_updates)
    new_state = ProjectConflictingState(
        count=optax.safe_increment(state.count).astype(jnp.int32),
        reference=reference,
        cos=cos.astype(jnp.float32),
        projected=conflict.astype(jnp.float32))
    return new_updates, new_state

  return optax.GradientTransformation(init_fn, update_fn)


class PCGradState(NamedTuple):
  """State of `pcgrad`.

  Attributes:
    count: int32 [], number of updates seen.
    key: uint32 [2] (the shape of the key's raw data), the raw data of the
      random key, split at every update for the task orders;
      `jax.random.wrap_key_data(state.key)` is the typed key (raw data
      serializes with msgpack, pickle and orbax alike).
    num_conflicts: int32 [], number of (i, j) projections in the last update
      (at most T * (T - 1)); for logging.
    projected_fraction: float32 [], `num_conflicts / (T * (T - 1))` (0 when
      T = 1); for logging.
  """

  count: jax.Array
  key: jax.Array
  num_conflicts: jax.Array
  projected_fraction: jax.Array


def task_gram(updates_T: Any) -> jax.Array:
  """Gram matrix of stacked per-task updates.

  Args:
    updates_T: pytree whose leaves have a leading task axis [T, ...].

  Returns:
    [T, T] matrix of pytree inner products <g_i, g_j> (sums over leaves of
    per-leaf elementwise products), float32 (float64 for float64 leaves).

  Raises:
    ValueError: if the leaves do not share one leading axis.

  Example:
    >>> import jax.numpy as jnp
    >>> from distill import optim
    >>> print(optim.task_gram({'w': jnp.array([[1.0, 0.0], [1.0, 1.0]])}))
    [[1. 1.]
     [1. 2.]]

  References:
    Yu et al., Gradient Surgery for Multi-Task Learning, NeurIPS 2020
    (https://arxiv.org/abs/2001.06782): PCGrad needs only these products.
  """
  _common.check_stacked('task_gram', updates_T)
  return _common.gram(updates_T, _common.accum_dtype(updates_T))


def pcgrad_orders(key: Any, num_tasks: int) -> jax.Array:
  """The task orders that `pcgrad` uses for one update.

  Args:
    key: the per-step key: the second half of
      `jax.random.split(jax.random.wrap_key_data(state.key))` (a typed key,
      raw key data or an int seed).
    num_tasks: T.

  Returns:
    int32 [T, T]: row i is a random permutation of all tasks, the order in
    which task i is projected against the others (entry i itself is skipped).

  Raises:
    ValueError: on a bad key or num_tasks < 1.

  Example:
    >>> import jax
    >>> from distill import optim
    >>> orders = optim.pcgrad_orders(jax.random.key(0), 3)
    >>> print(orders.shape, sorted(orders[0].tolist()))
    (3, 3) [0, 1, 2]

  References:
    Yu et al., Gradient Surgery for Multi-Task Learning, NeurIPS 2020
    (https://arxiv.org/abs/2001.06782), Algorithm 1 (random task order).
  """
  impl = _common.check_key('pcgrad_orders', key)
  num_tasks = _common.require_static(
      'pcgrad_orders', 'num_tasks',
      _common.static_int('pcgrad_orders', 'num_tasks', num_tasks))
  key = _common.wrap_key(_common.key_data(key, impl), impl)
  keys = jax.random.split(key, num_tasks)
  return jax.vmap(lambda k: jax.random.permutation(k, num_tasks))(
      keys).astype(jnp.int32)


def _pcgrad_coefficients(gram_TxT, orders_TxT):
  """Coefficients A with g_i' = sum_k A[i, k] g_k, and the conflict count.

  Every projection is against an original g_j, so each g_i' stays a linear
  combination of the original updates and all inner products follow from the
  Gram matrix.
  """
  num_tasks = gram_TxT.shape[0]
  sq_T = jnp.diagonal(gram_TxT)

  def one_task(i, order_T):
    def body(n, carry):
      a_T, conflicts = carry
      j = order_T[n]
      dot = jnp.dot(a_T, gram_TxT[:, j], precision=_common.HIGHEST)
      conflict = (j != i) & (dot < 0) & (sq_T[j] > 0)
      coef = jnp.where(conflict, dot / jnp.where(sq_T[j] > 0, sq_T[j], 1.0),
                       0.0)
      return a_T.at[j].add(-coef), conflicts + conflict.astype(jnp.int32)

    init = (jax.nn.one_hot(i, num_tasks, dtype=gram_TxT.dtype),
            jnp.zeros([], jnp.int32))
    return jax.lax.fori_loop(0, num_tasks, body, init)

  tasks_T = jnp.arange(num_tasks, dtype=jnp.int32)
  a_TxT, conflicts_T = jax.vmap(one_task)(tasks_T, orders_TxT)
  return a_TxT, conflicts_T.sum().astype(jnp.int32)


def pcgrad(key: Any, reduction: str = 'sum') -> optax.GradientTransformation:
  """Combines stacked per-task updates with PCGrad.

  For each task i, in a random order of the other tasks j: if
  <g_i', g_j> < 0 then g_i' <- g_i' - <g_i', g_j> / ||g_j||^2 * g_j, always
  projecting against the original g_j. The output is the sum (or mean) over
  tasks of the g_i'. Incoming leaves are [T, *param.shape]; outgoing leaves
  drop the task axis, so `init` takes the (unstacked) params and the transform
  chains in front of any optimizer,
  `optax.chain(pcgrad(key), optax.adam(1e-3))`. When `params` is passed to
  update, every leaf is checked to be [T, *param.shape].

  The orders are `pcgrad_orders(jax.random.split(k)[1], T)` with `k` the typed
  key of `state.key`: one independent permutation per task, drawn anew at each
  update.

  `pcgrad` cannot run inside `optax.MultiSteps`: MultiSteps accumulates
  updates in the shape of params, which cannot hold per-task updates (the
  update refuses the unstacked updates it is then given, with that reason).
  Put it outside: `optax.chain(pcgrad(key), optax.MultiSteps(adam, k))`.

  Args:
    key: random key: a typed `jax.random.key`, raw uint32 key data
      (`jax.random.PRNGKey`) or an int seed.
    reduction: 'sum' (as Yu et al.) or 'mean' over tasks.

  Returns:
    An `optax.GradientTransformation` (it takes no extra arguments) with state
    `PCGradState`.

  Raises:
    ValueError: on a bad key or a `reduction` other than 'sum' or 'mean'.

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from distill import optim
    >>> tx = optim.pcgrad(jax.random.key(0))
    >>> params = {'w': jnp.zeros(2)}
    >>> grads_T = {'w': jnp.array([[1.0, 0.0], [-1.0, 1.0]])}  # [T=2, 2]
    >>> g, state = tx.update(grads_T, tx.init(params), params)
    >>> print(g['w'], state.num_conflicts)
    [0.5 1.5] 2

  References:
    Yu et al., Gradient Surgery for Multi-Task Learning, NeurIPS 2020
    (https://arxiv.org/abs/2001.06782), Algorithm 1.
  """
  impl = _common.check_key('pcgrad', key)
  if reduction not in ('sum', 'mean'):
    raise _common.error(
        'pcgrad', f"reduction must be 'sum' or 'mean', got {reduction!r}.")

  def init_fn(params):
    del params
    return PCGradState(
        count=jnp.zeros([], jnp.int32),
        key=_common.init_key(key, impl),
        num_conflicts=jnp.zeros([], jnp.int32),
        projected_fraction=jnp.zeros([], jnp.float32))

  def update_fn(updates_T, state, params=None):
    state = _common.as_arrays(state)
    num_tasks = _common.check_stacked('pcgrad', updates_T, params)
    next_key, step_key = _common.split_key(state.key, impl)
    gram_TxT = _common.gram(updates_T, _common.accum_dtype(updates_T))
    a_TxT, conflicts = _pcgrad_coefficients(
        gram_TxT, pcgrad_orders(step_key, num_tasks))
    weights_T = a_TxT.sum(axis=0)
    if reduction == 'mean':
      weights_T = weights_T / num_tasks
    updates = _common.task_sum(weights_T, updates_T)
    pairs = max(num_tasks * (num_tasks - 1), 1)
    new_state = PCGradState(
        count=optax.safe_increment(state.count).astype(jnp.int32),
        key=next_key,
        num_conflicts=conflicts,
        projected_fraction=conflicts.astype(jnp.float32) / pairs)
    return updates, new_state

  return optax.GradientTransformation(init_fn, update_fn)
