"""Gradient surgery as optax transforms.

`project_conflicting` removes from each update the component that conflicts
with a reference direction kept in its state (the previous output update, or an
exponential moving average of past outputs). `pcgrad` combines per-task updates
with PCGrad (Yu et al. 2020).

Shape letters: T tasks (the leading axis of stacked per-task updates).

Inner products over a pytree are sums of per-leaf inner products (no
`ravel_pytree`), so the transforms keep working on sharded parameters.
"""

import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

_HIGHEST = jax.lax.Precision.HIGHEST


def canonicalize_key(key: Any) -> jax.Array:
  """Returns a typed key from a typed key, a raw uint32 key or an int seed."""
  if isinstance(key, numbers.Integral):
    return jax.random.key(key)
  key = jnp.asarray(key)
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    return key
  return jax.random.wrap_key_data(key)


def _tree_vdot(x: Any, y: Any) -> jax.Array:
  """Sum of per-leaf inner products, as a float32 scalar."""
  return jnp.asarray(optax.tree.vdot(x, y), jnp.float32)


class ProjectConflictingState(NamedTuple):
  """State of `project_conflicting`.

  Attributes:
    count: int32 scalar, number of updates seen.
    reference: the reference direction p (same tree as the params): the last
      output update, or an exponential moving average of past outputs.
    cos: float32 scalar, cosine between the last incoming update and p (0 on
      the first step or when either is zero); for logging.
    projected: float32 scalar, 1.0 when the last update conflicted with p and
      was projected, else 0.0; for logging (its mean is the projected
      fraction).
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
  a zero initialization).

  Example:

    tx = optax.chain(project_conflicting(), optax.adamw(1e-4))

  Args:
    decay: EMA decay of the reference direction, in [0, 1); 0 keeps exactly
      the previous output.

  Returns:
    An `optax.GradientTransformation` with state `ProjectConflictingState`.

  Raises:
    ValueError: if `decay` is outside [0, 1).

  References:
    Yu et al., Gradient Surgery for Multi-Task Learning, NeurIPS 2020
    (https://arxiv.org/abs/2001.06782): the projection applied across time
    instead of across tasks.
  """
  if not 0.0 <= decay < 1.0:
    raise ValueError(
        f'distill/optim/surgery.py: project_conflicting decay must be in '
        f'[0, 1), got {decay!r}.')

  def init_fn(params):
    return ProjectConflictingState(
        count=jnp.zeros([], jnp.int32),
        reference=optax.tree.zeros_like(params),
        cos=jnp.zeros([], jnp.float32),
        projected=jnp.zeros([], jnp.float32))

  def update_fn(updates, state, params=None):
    del params
    first = state.count == 0
    p = state.reference
    dot = _tree_vdot(updates, p)
    sq_p = _tree_vdot(p, p)
    sq_g = _tree_vdot(updates, updates)
    has_p = jnp.logical_and(jnp.logical_not(first), sq_p > 0)
    conflict = jnp.logical_and(has_p, dot < 0)
    coef = jnp.where(conflict, dot / jnp.where(sq_p > 0, sq_p, 1.0), 0.0)
    new_updates = jax.tree.map(
        lambda g, r: (g - coef * r).astype(g.dtype), updates, p)
    norms = jnp.sqrt(sq_g * sq_p)
    cos = jnp.where(
        jnp.logical_and(has_p, norms > 0),
        dot / jnp.where(norms > 0, norms, 1.0), 0.0)
    # The EMA starts at the first output instead of decaying from zero.
    keep = jnp.where(first, 0.0, decay)
    reference = jax.tree.map(
        lambda r, u: (keep * r + (1.0 - keep) * u).astype(r.dtype),
        p, new_updates)
    new_state = ProjectConflictingState(
        count=optax.safe_increment(state.count),
        reference=reference,
        cos=cos.astype(jnp.float32),
        projected=conflict.astype(jnp.float32))
    return new_updates, new_state

  return optax.GradientTransformation(init_fn, update_fn)


class PCGradState(NamedTuple):
  """State of `pcgrad`.

  Attributes:
    count: int32 scalar, number of updates seen.
    key: typed random key, split at every update for the task orders.
    num_conflicts: int32 scalar, number of (i, j) projections in the last
      update (at most T * (T - 1)); for logging.
    projected_fraction: float32 scalar, `num_conflicts / (T * (T - 1))`
      (0 when T = 1); for logging.
  """

  count: jax.Array
  key: jax.Array
  num_conflicts: jax.Array
  projected_fraction: jax.Array


def _num_tasks(updates_T: Any) -> int:
  """The common leading axis of stacked updates; ValueError if there is none."""
  sizes = {x.shape[0] if x.ndim else None
           for x in jax.tree.leaves(updates_T)}
  if len(sizes) != 1 or None in sizes:
    raise ValueError(
        'distill/optim: stacked per-task updates need the same leading task '
        f'axis [T, ...] on every leaf, got leading sizes '
        f'{sorted(map(str, sizes))}.')
  return sizes.pop()


def task_gram(updates_T: Any) -> jax.Array:
  """Gram matrix of stacked per-task updates.

  Args:
    updates_T: pytree whose leaves have a leading task axis [T, ...].

  Returns:
    float32 [T, T] matrix of pytree inner products <g_i, g_j> (the sum over
    leaves of per-leaf inner products).
  """
  num_tasks = _num_tasks(updates_T)

  def leaf_gram(g):
    g_TxD = g.reshape(num_tasks, -1)
    return jnp.einsum('id,jd->ij', g_TxD, g_TxD, precision=_HIGHEST,
                      preferred_element_type=jnp.float32)

  grams = jax.tree.leaves(jax.tree.map(leaf_gram, updates_T))
  return sum(grams[1:], grams[0]).astype(jnp.float32)


def pcgrad_orders(key: jax.Array, num_tasks: int) -> jax.Array:
  """The task orders that `pcgrad` uses for one update.

  Args:
    key: the per-step key (the second half of `jax.random.split(state.key)`).
    num_tasks: T.

  Returns:
    int32 [T, T]: row i is a random permutation of all tasks, the order in
    which task i is projected against the others (entry i itself is skipped).
  """
  keys = jax.random.split(key, num_tasks)
  return jax.vmap(lambda k: jax.random.permutation(k, num_tasks))(keys)


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
      dot = jnp.dot(a_T, gram_TxT[:, j], precision=_HIGHEST)
      conflict = (j != i) & (dot < 0) & (sq_T[j] > 0)
      coef = jnp.where(conflict, dot / jnp.where(sq_T[j] > 0, sq_T[j], 1.0),
                       0.0)
      return a_T.at[j].add(-coef), conflicts + conflict.astype(jnp.int32)

    init = (jax.nn.one_hot(i, num_tasks, dtype=jnp.float32),
            jnp.zeros([], jnp.int32))
    return jax.lax.fori_loop(0, num_tasks, body, init)

  a_TxT, conflicts_T = jax.vmap(one_task)(jnp.arange(num_tasks), orders_TxT)
  return a_TxT, conflicts_T.sum()


def pcgrad(key: Any, reduction: str = 'sum') -> optax.GradientTransformation:
  """Combines stacked per-task updates with PCGrad.

  For each task i, in a random order of the other tasks j: if
  <g_i', g_j> < 0 then g_i' <- g_i' - <g_i', g_j> / ||g_j||^2 * g_j, always
  projecting against the original g_j. The output is the sum (or mean) over
  tasks of the g_i'. Incoming leaves are [T, ...]; outgoing leaves drop the
  task axis, so `init` takes the (unstacked) params and the transform chains
  in front of any optimizer:

    tx = optax.chain(pcgrad(jax.random.key(0)), optax.adam(1e-3))
    updates, state = tx.update(grads_T, state, params)

  The orders are `pcgrad_orders(jax.random.split(state.key)[1], T)`: one
  independent permutation per task, drawn anew at each update.

  Args:
    key: random key (typed `jax.random.key`, raw uint32, or an int seed).
    reduction: 'sum' (as Yu et al.) or 'mean' over tasks.

  Returns:
    An `optax.GradientTransformation` with state `PCGradState`.

  Raises:
    ValueError: if `reduction` is not 'sum' or 'mean'.

  References:
    Yu et al., Gradient Surgery for Multi-Task Learning, NeurIPS 2020
    (https://arxiv.org/abs/2001.06782), Algorithm 1.
  """
  if reduction not in ('sum', 'mean'):
    raise ValueError(
        f"distill/optim/surgery.py: pcgrad reduction must be 'sum' or 'mean', "
        f'got {reduction!r}.')

  def init_fn(params):
    del params
    return PCGradState(
        count=jnp.zeros([], jnp.int32),
        key=canonicalize_key(key),
        num_conflicts=jnp.zeros([], jnp.int32),
        projected_fraction=jnp.zeros([], jnp.float32))

  def update_fn(updates_T, state, params=None):
    del params
    num_tasks = _num_tasks(updates_T)
    next_key, step_key = jax.random.split(state.key)
    gram_TxT = task_gram(updates_T)
    a_TxT, conflicts = _pcgrad_coefficients(
        gram_TxT, pcgrad_orders(step_key, num_tasks))
    weights_T = a_TxT.sum(axis=0)
    if reduction == 'mean':
      weights_T = weights_T / num_tasks
    updates = jax.tree.map(
        lambda g: jnp.tensordot(weights_T, g, axes=1,
                                precision=_HIGHEST).astype(g.dtype),
        updates_T)
    pairs = max(num_tasks * (num_tasks - 1), 1)
    new_state = PCGradState(
        count=optax.safe_increment(state.count),
        key=next_key,
        num_conflicts=conflicts,
        projected_fraction=conflicts.astype(jnp.float32) / pairs)
    return updates, new_state

  return optax.GradientTransformation(init_fn, update_fn)
