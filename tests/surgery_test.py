"""Tests for distill/optim/surgery.py (project_conflicting, pcgrad)."""

import doctest

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from distill import optim


def _random_tree(rng, lead=()):
  return {
      'w': rng.normal(size=lead + (3, 4)).astype(np.float32),
      'b': rng.normal(size=lead + (4,)).astype(np.float32),
      'nested': [rng.normal(size=lead + (2,)).astype(np.float32)],
  }


def _flat(tree):
  return np.concatenate([np.asarray(x, np.float64).ravel()
                         for x in jax.tree.leaves(tree)])


def _flat_tasks(tree_T):
  leaves = jax.tree.leaves(tree_T)
  num_tasks = leaves[0].shape[0]
  return np.concatenate([np.asarray(x, np.float64).reshape(num_tasks, -1)
                         for x in leaves], axis=1)


def _assert_same_structure_shape_dtype(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert x.shape == y.shape and x.dtype == y.dtype, (x, y)


# --- project_conflicting -----------------------------------------------------


def _np_project_conflicting(grads, decay):
  """Naive NumPy version on flat float64 vectors; returns outputs, cos, proj."""
  p, outs, coss, projs = None, [], [], []
  for g in grads:
    if p is None:
      out, cos, proj, p = g, 0.0, 0.0, g
    else:
      d = g @ p
      proj = float(d < 0 and p @ p > 0)
      out = g - d / (p @ p) * p if proj else g
      cos = d / np.sqrt((g @ g) * (p @ p)) if p @ p > 0 else 0.0
      p = decay * p + (1 - decay) * out
    outs.append(out)
    coss.append(cos)
    projs.append(proj)
  return outs, coss, projs


def test_project_conflicting_closed_form():
  tx = optim.project_conflicting()
  state = tx.init({'a': jnp.zeros(2)})
  # First update passes through, even though p is zero.
  out, state = tx.update({'a': jnp.array([1.0, 0.0])}, state)
  chex.assert_trees_all_close(out, {'a': jnp.array([1.0, 0.0])})
  assert float(state.cos) == 0.0 and float(state.projected) == 0.0
  # <[-1, 1], [1, 0]> = -1 < 0: g - (-1 / 1) * p = [0, 1].
  out, state = tx.update({'a': jnp.array([-1.0, 1.0])}, state)
  chex.assert_trees_all_close(out, {'a': jnp.array([0.0, 1.0])})
  np.testing.assert_allclose(state.cos, -1 / np.sqrt(2), rtol=1e-6)
  assert float(state.projected) == 1.0
  chex.assert_trees_all_close(state.reference, {'a': jnp.array([0.0, 1.0])})
  # <[1, 1], [0, 1]> = 1 > 0: passes unchanged.
  out, state = tx.update({'a': jnp.array([1.0, 1.0])}, state)
  chex.assert_trees_all_close(out, {'a': jnp.array([1.0, 1.0])})
  np.testing.assert_allclose(state.cos, 1 / np.sqrt(2), rtol=1e-6)
  assert float(state.projected) == 0.0
  assert int(state.count) == 3


def test_project_conflicting_ema_closed_form():
  tx = optim.project_conflicting(decay=0.5)
  state = tx.init({'a': jnp.zeros(2)})
  _, state = tx.update({'a': jnp.array([2.0, 0.0])}, state)
  # The EMA starts at the first output.
  chex.assert_trees_all_close(state.reference, {'a': jnp.array([2.0, 0.0])})
  out, state = tx.update({'a': jnp.array([0.0, 2.0])}, state)
  chex.assert_trees_all_close(out, {'a': jnp.array([0.0, 2.0])})
  chex.assert_trees_all_close(state.reference, {'a': jnp.array([1.0, 1.0])})
  # <[-1, 0], [1, 1]> = -1, ||p||^2 = 2: [-1, 0] + 0.5 * [1, 1].
  out, state = tx.update({'a': jnp.array([-1.0, 0.0])}, state)
  chex.assert_trees_all_close(out, {'a': jnp.array([-0.5, 0.5])})
  chex.assert_trees_all_close(state.reference,
                              {'a': jnp.array([0.25, 0.75])})


def test_project_conflicting_zero_reference_guard():
  tx = optim.project_conflicting()
  state = tx.init({'a': jnp.zeros(2)})
  _, state = tx.update({'a': jnp.zeros(2)}, state)
  out, state = tx.update({'a': jnp.array([-1.0, 3.0])}, state)
  chex.assert_trees_all_close(out, {'a': jnp.array([-1.0, 3.0])})
  chex.assert_tree_all_finite((out, state))
  assert float(state.projected) == 0.0 and float(state.cos) == 0.0


@pytest.mark.parametrize('decay', [0.0, 0.9])
def test_project_conflicting_matches_numpy(decay):
  rng = np.random.default_rng(0)
  grads = [_random_tree(rng) for _ in range(8)]
  tx = optim.project_conflicting(decay)
  state = tx.init(jax.tree.map(jnp.zeros_like, grads[0]))
  update = jax.jit(tx.update)
  want_outs, want_cos, want_proj = _np_project_conflicting(
      [_flat(g) for g in grads], decay)
  for g, want_out, want_c, want_p in zip(grads, want_outs, want_cos,
                                         want_proj):
    out, state = update(g, state)
    np.testing.assert_allclose(_flat(out), want_out, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(state.cos, want_c, rtol=1e-5, atol=1e-6)
    assert float(state.projected) == want_p
  # The random sequence exercised both branches.
  assert 0 < sum(want_proj) < len(grads) - 1


def test_project_conflicting_output_orthogonal_when_conflicting():
  rng = np.random.default_rng(1)
  g0 = _random_tree(rng)
  g1 = jax.tree.map(
      lambda x: (-x + 0.1 * rng.normal(size=x.shape)).astype(np.float32), g0)
  tx = optim.project_conflicting()
  state = tx.init(g0)
  _, state = tx.update(g0, state)
  out, state = tx.update(g1, state)
  assert float(state.projected) == 1.0
  np.testing.assert_allclose(_flat(out) @ _flat(g0), 0.0, atol=1e-4)


@pytest.mark.parametrize('name, seed, lead', [
    ('project_conflicting', 2, ()),  # one update
    ('pcgrad', 5, (3,)),  # stacked updates of 3 tasks
])
def test_state_stable_under_jit(name, seed, lead):
  rng = np.random.default_rng(seed)
  params = jax.tree.map(jnp.asarray, _random_tree(rng))
  tx = (optim.project_conflicting(decay=0.5) if name == 'project_conflicting'
        else optim.pcgrad(jax.random.key(0)))
  state0 = state = tx.init(params)

  chex.clear_trace_counter()

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(updates, state):
    return tx.update(updates, state, params)

  for _ in range(4):
    _, state = step(_random_tree(rng, lead=lead), state)
    _assert_same_structure_shape_dtype(state, state0)


def test_project_conflicting_in_chain_with_adam():
  params = {'w': jnp.array([1.0, -2.0, 3.0])}
  loss = lambda p: jnp.sum(jnp.square(p['w']))
  tx = optax.chain(optim.project_conflicting(), optax.adam(0.1))
  state = tx.init(params)
  start = loss(params)
  for _ in range(5):
    updates, state = tx.update(jax.grad(loss)(params), state, params)
    params = optax.apply_updates(params, updates)
  assert loss(params) < start
  assert int(state[0].count) == 5


def test_project_conflicting_ignores_extra_args_in_chain():
  # A plain GradientTransformation: optax.chain drops the extra args of
  # neighbours (here a selector's task_divergences) before it.
  tx = optax.chain(optim.max_kl(2), optim.project_conflicting())
  params = {'a': jnp.zeros(2)}
  state = tx.init(params)
  out, state = tx.update({'a': jnp.ones(2)}, state, params,
                         task_divergences=jnp.array([0.0, 1.0]))
  chex.assert_trees_all_close(out, {'a': jnp.ones(2)})
  assert int(state[0].choice) == 1


def test_project_conflicting_bad_inputs():
  for decay in (-0.1, 1.0, 2.0, float('nan'), jnp.ones(2), 'high'):
    with pytest.raises(ValueError,
                       match=r'^distill\.optim\.project_conflicting: decay'):
      optim.project_conflicting(decay)
  tx = optim.project_conflicting()
  state = tx.init({'a': jnp.zeros(2)})
  with pytest.raises(ValueError, match='structure of the params'):
    tx.update({'b': jnp.zeros(2)}, state)
  with pytest.raises(ValueError, match=r"updates\['a'\] has shape \(3,\)"):
    tx.update({'a': jnp.zeros(3)}, state)


# --- pcgrad ------------------------------------------------------------------


def _np_pcgrad(g_TxD, orders_TxT, reduction):
  """Naive NumPy PCGrad (Yu et al. 2020, Algorithm 1) with given orders."""
  num_tasks = g_TxD.shape[0]
  outs, conflicts = [], 0
  for i in range(num_tasks):
    gi = g_TxD[i].copy()
    for j in orders_TxT[i]:
      if j == i:
        continue
      d = gi @ g_TxD[j]
      if d < 0:
        gi = gi - d / (g_TxD[j] @ g_TxD[j]) * g_TxD[j]
        conflicts += 1
    outs.append(gi)
  total = np.sum(outs, axis=0)
  return (total / num_tasks if reduction == 'mean' else total), conflicts


def test_pcgrad_closed_form_two_tasks():
  grads_T = {'a': jnp.array([[1.0, 0.0], [-1.0, 1.0]])}
  for reduction, want in (('sum', [0.5, 1.5]), ('mean', [0.25, 0.75])):
    tx = optim.pcgrad(jax.random.key(0), reduction)
    state = tx.init({'a': jnp.zeros(2)})
    # g1' = [1,0] + 1/2 [-1,1] = [.5,.5]; g2' = [-1,1] + [1,0] = [0,1].
    out, state = tx.update(grads_T, state)
    chex.assert_trees_all_close(out, {'a': jnp.array(want)})
    assert int(state.num_conflicts) == 2
    assert float(state.projected_fraction) == 1.0


def test_pcgrad_no_conflict_is_plain_sum():
  grads_T = {'a': jnp.array([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])}
  tx = optim.pcgrad(0)
  state = tx.init({'a': jnp.zeros(2)})
  out, state = tx.update(grads_T, state)
  chex.assert_trees_all_close(out, {'a': jnp.array([2.0, 3.0])})
  assert int(state.num_conflicts) == 0


@pytest.mark.parametrize('num_tasks', [2, 3, 5])
@pytest.mark.parametrize('reduction', ['sum', 'mean'])
def test_pcgrad_matches_numpy(num_tasks, reduction):
  rng = np.random.default_rng(num_tasks)
  params = jax.tree.map(jnp.asarray, _random_tree(rng))
  tx = optim.pcgrad(jax.random.key(3), reduction)
  state = tx.init(params)
  update = jax.jit(tx.update)
  total_conflicts = 0
  for _ in range(4):
    grads_T = _random_tree(rng, lead=(num_tasks,))
    step_key = jax.random.split(jax.random.wrap_key_data(state.key))[1]
    orders = np.asarray(optim.pcgrad_orders(step_key, num_tasks))
    assert all(sorted(row) == list(range(num_tasks)) for row in orders)
    want, conflicts = _np_pcgrad(_flat_tasks(grads_T), orders, reduction)
    out, state = update(grads_T, state)
    _assert_same_structure_shape_dtype(out, params)
    np.testing.assert_allclose(_flat(out), want, rtol=1e-4, atol=1e-5)
    assert int(state.num_conflicts) == conflicts
    np.testing.assert_allclose(state.projected_fraction,
                               conflicts / (num_tasks * (num_tasks - 1)))
    total_conflicts += conflicts
  assert total_conflicts > 0


def test_pcgrad_mean_is_sum_over_tasks():
  rng = np.random.default_rng(4)
  grads_T = _random_tree(rng, lead=(3,))
  params = jax.tree.map(lambda x: jnp.zeros(x.shape[1:]), grads_T)
  out_sum, _ = optim.pcgrad(7, 'sum').update(
      grads_T, optim.pcgrad(7, 'sum').init(params))
  out_mean, _ = optim.pcgrad(7, 'mean').update(
      grads_T, optim.pcgrad(7, 'mean').init(params))
  chex.assert_trees_all_close(out_mean, jax.tree.map(lambda x: x / 3, out_sum),
                              rtol=1e-6)


def test_pcgrad_keys():
  grads_T = {'a': jnp.array([[1.0, 0.0], [-1.0, 1.0]])}
  params = {'a': jnp.zeros(2)}
  outs = []
  for key in (jax.random.key(5), jax.random.PRNGKey(5), 5):
    tx = optim.pcgrad(key)
    out, state = tx.update(grads_T, tx.init(params))
    outs.append(out)
    # The state holds the raw key data (serializable), not a typed key.
    assert state.key.dtype == jnp.uint32 and state.key.shape == (2,)
    np.testing.assert_array_equal(
        tx.init(params).key, jax.random.key_data(jax.random.key(5)))
  chex.assert_trees_all_close(outs[0], outs[1])
  chex.assert_trees_all_close(outs[0], outs[2])
  # The key advances, so the orders of successive steps differ.
  tx = optim.pcgrad(0)
  state = tx.init(params)
  _, state1 = tx.update(grads_T, state)
  assert not np.array_equal(state.key, state1.key)


def test_pcgrad_in_chain_with_adam():
  # Two quadratic tasks with conflicting minima; the sum of losses falls.
  targets_T = jnp.array([[1.0, 1.0], [-1.0, 2.0]])
  params = {'w': jnp.zeros(2)}

  def task_losses(p):
    return jnp.sum(jnp.square(p['w'][None] - targets_T), axis=1)

  tx = optax.chain(optim.pcgrad(jax.random.key(0)), optax.adam(0.1))
  state = tx.init(params)
  start = task_losses(params).sum()
  for _ in range(5):
    grads_T = jax.jacrev(task_losses)(params)
    updates, state = tx.update(grads_T, state, params)
    params = optax.apply_updates(params, updates)
  assert task_losses(params).sum() < start
  assert int(state[0].count) == 5


def test_pcgrad_bad_inputs():
  with pytest.raises(ValueError, match=r'^distill\.optim\.pcgrad: reduction'):
    optim.pcgrad(0, 'max')
  for key in (None, 1.5, jax.random.split(jax.random.key(0))):
    with pytest.raises(ValueError, match=r'^distill\.optim\.pcgrad: key'):
      optim.pcgrad(key)
  tx = optim.pcgrad(0)
  state = tx.init({'a': jnp.zeros(2), 'b': jnp.zeros(2)})
  with pytest.raises(ValueError,
                     match=r'^distill\.optim\.pcgrad: .*leading task'):
    tx.update({'a': jnp.zeros((3, 2)), 'b': jnp.zeros((2, 2))}, state)


def test_pcgrad_checks_the_task_axis_against_params():
  # Unstacked updates whose leaves happen to start with T = 3: refused when
  # params are given (a leaf must be [T, *param.shape]).
  params = {'w': jnp.zeros((3, 2)), 'b': jnp.zeros(3)}
  tx = optim.pcgrad(0)
  state = tx.init(params)
  unstacked = {'w': jnp.ones((3, 2)), 'b': jnp.ones(3)}
  with pytest.raises(ValueError, match=r'\[T, \*param\.shape\].*MultiSteps'):
    tx.update(unstacked, state, params)
  with pytest.raises(ValueError, match='structure of params'):
    tx.update({'w': jnp.ones((2, 3, 2))}, state, params)
  stacked = jax.tree.map(lambda p: jnp.ones((2,) + p.shape), params)
  out, _ = tx.update(stacked, state, params)
  chex.assert_trees_all_equal_shapes(out, params)


def test_doctests():
  results = doctest.testmod(
      optim.surgery,
      optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
  assert results.attempted > 0
  assert results.failed == 0
