"""Tests for distill/optim/curriculum.py and novelty.py (selectors)."""

import doctest
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from distill import optim

T = 3  # tasks
OBS = 4  # RND state features
PARAMS = {'w': jnp.zeros(2), 'b': jnp.zeros(())}

# name -> (factory, required extra args)
SELECTORS = {
    'max_kl_greedy': (lambda: optim.max_kl(T), ('task_divergences',)),
    'max_kl_softmax': (lambda: optim.max_kl(T, mode='softmax',
                                            key=jax.random.key(0)),
                       ('task_divergences',)),
    'max_kl_epsilon': (lambda: optim.max_kl(T, mode='epsilon_greedy',
                                            key=jax.random.key(0)),
                       ('task_divergences',)),
    'round_robin': (lambda: optim.round_robin(T), ()),
    'uniform': (lambda: optim.uniform(T, jax.random.key(0)), ()),
    'mixture': (lambda: optim.mixture(T), ()),
    'learning_progress': (lambda: optim.learning_progress(
        T, jax.random.key(0)), ('task_divergences',)),
    'rnd': (lambda: optim.rnd(T, jax.random.key(0), OBS), ('task_states',)),
}


def _extra(rng):
  return {
      'task_divergences': rng.random(T).astype(np.float32),
      'task_states': rng.normal(size=(T, 5, OBS)).astype(np.float32),
  }


def _assert_same_structure_shape_dtype(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert x.shape == y.shape and x.dtype == y.dtype, (x, y)


def _run(tx, num_steps, **extra):
  """Runs num_steps updates with fixed inputs in one scan; returns the state."""
  def body(state, _):
    _, state = tx.update(PARAMS, state, **extra)
    return state, None

  state, _ = jax.jit(lambda s: jax.lax.scan(body, s, None, length=num_steps))(
      tx.init(PARAMS))
  return state


# --- every selector ----------------------------------------------------------


@pytest.mark.parametrize('name', sorted(SELECTORS))
def test_state_stable_under_jit(name):
  tx = SELECTORS[name][0]()
  rng = np.random.default_rng(0)
  state0 = state = tx.init(PARAMS)

  chex.clear_trace_counter()

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(updates, state, extra):
    return tx.update(updates, state, **extra)

  for _ in range(4):
    out, state = step(PARAMS, state, _extra(rng))
    chex.assert_trees_all_equal(out, PARAMS)
    _assert_same_structure_shape_dtype(state, state0)
    assert state.choice.shape == () and state.choice.dtype == jnp.int32
    chex.assert_shape(state.weights, (T,))
    chex.assert_type(state.weights, jnp.float32)
    chex.assert_shape(state.counts, (T,))
    chex.assert_type(state.counts, jnp.int32)


@pytest.mark.parametrize('name', sorted(SELECTORS))
def test_in_chain_with_adam_passes_updates_through(name):
  rng = np.random.default_rng(1)
  target = {'w': jnp.array([1.0, -1.0]), 'b': jnp.array(2.0)}
  loss = lambda p: sum(jnp.sum(jnp.square(p[k] - target[k])) for k in p)
  tx = optax.chain(SELECTORS[name][0](), optax.adam(0.1))
  plain = optax.adam(0.1)
  params, state, plain_state = PARAMS, tx.init(PARAMS), plain.init(PARAMS)
  for _ in range(4):
    grads = jax.grad(loss)(params)
    updates, state = tx.update(grads, state, params, **_extra(rng))
    want, plain_state = plain.update(grads, plain_state, params)
    chex.assert_trees_all_close(updates, want)
    params = optax.apply_updates(params, updates)
  assert loss(params) < loss(PARAMS)
  assert int(state[0].counts.sum()) == (4 * T if name == 'mixture' else 4)


@pytest.mark.parametrize('name', sorted(SELECTORS))
def test_missing_extra_arg_raises(name):
  factory, required = SELECTORS[name]
  tx = factory()
  state = tx.init(PARAMS)
  extra = _extra(np.random.default_rng(2))
  if not required:  # Accepts and ignores task_divergences, needs nothing.
    tx.update(PARAMS, state)
    return
  for arg in required:
    missing = {k: v for k, v in extra.items() if k != arg}
    with pytest.raises(TypeError, match=arg):
      tx.update(PARAMS, state, **missing)
    chained = optax.chain(tx, optax.adam(0.1))
    with pytest.raises(TypeError, match=arg):
      chained.update(PARAMS, chained.init(PARAMS), PARAMS, **missing)


@pytest.mark.parametrize('name, make', [
    ('max_kl', lambda: optim.max_kl(0)),
    ('max_kl', lambda: optim.max_kl(2.5)),
    ('max_kl', lambda: optim.max_kl(True)),
    ('max_kl', lambda: optim.max_kl(2, mode='best')),
    ('max_kl', lambda: optim.max_kl(2, mode='softmax')),  # no key
    ('max_kl', lambda: optim.max_kl(2, 0, mode='softmax', temperature=0.0)),
    ('max_kl', lambda: optim.max_kl(2, 0, mode='softmax',
                                    temperature=jnp.ones(2))),
    ('max_kl', lambda: optim.max_kl(2, 0, mode='softmax',
                                    temperature=optax.constant_schedule(1.))),
    ('max_kl', lambda: optim.max_kl(2, 0, mode='epsilon_greedy',
                                    epsilon=1.5)),
    ('max_kl', lambda: optim.max_kl(2, 'seed', mode='softmax')),
    ('round_robin', lambda: optim.round_robin(0)),
    ('uniform', lambda: optim.uniform(0, 0)),
    ('uniform', lambda: optim.uniform(2, jax.random.split(
        jax.random.key(0)))),
    ('uniform', lambda: optim.uniform(2, 0.5)),
    ('mixture', lambda: optim.mixture(-1)),
    ('learning_progress', lambda: optim.learning_progress(2, 0,
                                                          step_size=0.0)),
    ('learning_progress', lambda: optim.learning_progress(2, 0,
                                                          step_size=1.5)),
    ('learning_progress', lambda: optim.learning_progress(2, 0,
                                                          temperature=-1.0)),
    ('learning_progress', lambda: optim.learning_progress(2, 0,
                                                          epsilon=-0.1)),
    ('learning_progress', lambda: optim.learning_progress(2, 0, mode='ucb')),
    ('learning_progress', lambda: optim.learning_progress(2)),  # no key
    ('rnd', lambda: optim.rnd(2, 0, 0)),
    ('rnd', lambda: optim.rnd(2, 0, 4, hidden=0)),
    ('rnd', lambda: optim.rnd(2, 0, 4, learning_rate=0.0)),
    ('bi_objective', lambda: optim.bi_objective(0)),
    ('bi_objective', lambda: optim.bi_objective(2, lam=-1.0)),
    ('bi_objective', lambda: optim.bi_objective(2, lam=float('nan'))),
    ('bi_objective', lambda: optim.bi_objective(2, lam=float('inf'))),
])
def test_bad_hyperparameters_raise(name, make):
  # One prefix form for every error: `distill.optim.<name>: ...`.
  with pytest.raises(ValueError, match=rf'^distill\.optim\.{name}: \w'):
    make()


@pytest.mark.parametrize('name', sorted(SELECTORS))
def test_hyperparameter_checks_accept_traced_values(name):
  # Under optax.inject_hyperparams a factory runs again inside every jitted
  # update with its numeric hyperparameters traced: nothing may branch on
  # their values (the sizes come from the state then).
  factory, _ = SELECTORS[name]
  tx = factory()
  state = tx.init(PARAMS)
  extra = _extra(np.random.default_rng(3))
  maker = {
      'max_kl_greedy': lambda h: optim.max_kl(h['t'], temperature=h['f']),
      'max_kl_softmax': lambda h: optim.max_kl(
          h['t'], h['k'], mode='softmax', temperature=h['f']),
      'max_kl_epsilon': lambda h: optim.max_kl(
          h['t'], h['k'], mode='epsilon_greedy', epsilon=h['f'] / 10),
      'round_robin': lambda h: optim.round_robin(h['t']),
      'uniform': lambda h: optim.uniform(h['t'], h['k']),
      'mixture': lambda h: optim.mixture(h['t']),
      'learning_progress': lambda h: optim.learning_progress(
          h['t'], h['k'], step_size=h['f'] / 10, temperature=h['f']),
      'rnd': lambda h: optim.rnd(h['t'], h['k'], h['s'],
                                 learning_rate=h['f'] / 1000),
  }[name]

  @jax.jit
  def step(hps, state):
    return maker(hps).update(PARAMS, state, **extra)

  hps = {'t': jnp.int32(T), 'f': jnp.float32(1.0), 'k': jnp.int32(0),
         's': jnp.int32(OBS)}
  _, got = step(hps, state)
  _, want = tx.update(PARAMS, state, **extra)
  chex.assert_trees_all_close(got, want, atol=1e-6)


def test_wrong_shaped_inputs_raise():
  with pytest.raises(ValueError,
                     match=r'^distill\.optim\.max_kl: task_divergences'):
    tx = optim.max_kl(T)
    tx.update(PARAMS, tx.init(PARAMS), task_divergences=jnp.zeros(T + 1))
  with pytest.raises(ValueError, match=r'^distill\.optim\.rnd: task_states'):
    tx = optim.rnd(T, 0, OBS)
    tx.update(PARAMS, tx.init(PARAMS), task_states=jnp.zeros((T, 5, OBS + 1)))
  with pytest.raises(ValueError,
                     match=r'^distill\.optim\.bi_objective: stacked'):
    tx = optim.bi_objective(T)
    tx.update(PARAMS, tx.init(PARAMS), task_divergences=jnp.zeros(T))


def test_bi_objective_checks_the_task_axis_against_params():
  # Unstacked updates whose leaves happen to start with T are refused, with
  # or without params (the state's reference has the params' shapes).
  params = {'w': jnp.zeros((T, 2))}
  tx = optim.bi_objective(T)
  state = tx.init(params)
  kl = jnp.zeros(T)
  for call_params in (params, None):
    with pytest.raises(ValueError, match=r'\[T, \*param\.shape\]'):
      tx.update({'w': jnp.ones((T, 2))}, state, call_params,
                task_divergences=kl)
  with pytest.raises(ValueError, match=r'leaves \[3, ...\]'):
    tx.update({'w': jnp.ones((T + 1, T, 2))}, state, params,
              task_divergences=jnp.zeros(T))
  out, _ = tx.update({'w': jnp.ones((T, T, 2))}, state, params,
                     task_divergences=kl)
  chex.assert_shape(out['w'], (T, 2))


@pytest.mark.parametrize('name', sorted(SELECTORS))
def test_selector_takes_updates_none(name):
  factory, _ = SELECTORS[name]
  tx = factory()
  extra = _extra(np.random.default_rng(4))
  out, state = jax.jit(lambda s, e: tx.update(None, s, **e))(tx.init(None),
                                                             extra)
  assert out is None
  _, want = tx.update(PARAMS, tx.init(PARAMS), **extra)
  chex.assert_trees_all_close(state, want, atol=1e-6)


@pytest.mark.parametrize('module', [optim.curriculum, optim.novelty])
def test_doctests(module):
  results = doctest.testmod(
      module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
  assert results.attempted > 0
  assert results.failed == 0


# --- max_kl ------------------------------------------------------------------


def test_max_kl_greedy_closed_form():
  tx = optim.max_kl(T)
  state = tx.init(PARAMS)
  _, state = tx.update(PARAMS, state, task_divergences=jnp.array([.1, .5, .2]))
  assert int(state.choice) == 1
  np.testing.assert_array_equal(state.weights, [0.0, 1.0, 0.0])
  np.testing.assert_array_equal(state.counts, [0, 1, 0])
  np.testing.assert_allclose(state.scores, [.1, .5, .2])
  _, state = tx.update(PARAMS, state, task_divergences=jnp.array([.9, .1, .1]))
  assert int(state.choice) == 0
  np.testing.assert_array_equal(state.counts, [1, 1, 0])


@pytest.mark.parametrize('mode', ['greedy', 'softmax', 'epsilon_greedy'])
def test_max_kl_matches_numpy(mode):
  temperature, epsilon = 0.5, 0.2
  tx = optim.max_kl(T, mode=mode, temperature=temperature, epsilon=epsilon,
                    key=jax.random.key(1))
  update = jax.jit(tx.update)
  state = tx.init(PARAMS)
  rng = np.random.default_rng(3)
  counts = np.zeros(T, np.int64)
  for _ in range(6):
    kl = rng.random(T).astype(np.float32)
    _, state = update(PARAMS, state, task_divergences=kl)
    best = np.zeros(T)
    best[np.argmax(kl)] = 1.0
    want = {
        'greedy': best,
        'softmax': np.exp(kl / temperature) / np.exp(kl / temperature).sum(),
        'epsilon_greedy': epsilon / T + (1 - epsilon) * best,
    }[mode]
    np.testing.assert_allclose(state.probs, want, rtol=1e-5)
    if mode == 'greedy':
      assert int(state.choice) == np.argmax(kl)
    counts[int(state.choice)] += 1
    np.testing.assert_array_equal(state.counts, counts)
    np.testing.assert_array_equal(state.weights, np.eye(T)[state.choice])


def test_max_kl_softmax_frequencies():
  kl = jnp.array([0.0, 1.0, 2.0])
  n = 4000
  state = _run(optim.max_kl(T, mode='softmax', temperature=1.0,
                            key=jax.random.key(4)), n, task_divergences=kl)
  want = np.exp(kl) / np.exp(kl).sum()  # [.090, .245, .665]
  np.testing.assert_allclose(state.counts / n, want, atol=0.03)
  # A higher temperature flattens the choice.
  state = _run(optim.max_kl(T, mode='softmax', temperature=100.0,
                            key=jax.random.key(4)), n, task_divergences=kl)
  np.testing.assert_allclose(state.counts / n, np.full(T, 1 / T), atol=0.03)


def test_max_kl_epsilon_greedy_frequencies():
  n = 4000
  state = _run(optim.max_kl(T, mode='epsilon_greedy', epsilon=0.3,
                            key=jax.random.key(5)), n,
               task_divergences=jnp.array([0.2, 0.1, 0.9]))
  np.testing.assert_allclose(state.counts / n, [0.1, 0.1, 0.8], atol=0.03)
  # epsilon = 0 is greedy, epsilon = 1 uniform.
  state = _run(optim.max_kl(T, mode='epsilon_greedy', epsilon=0.0,
                            key=jax.random.key(5)), 50,
               task_divergences=jnp.array([0.2, 0.1, 0.9]))
  np.testing.assert_array_equal(state.counts, [0, 0, 50])


def test_max_kl_key_kinds_agree():
  kl = jnp.array([0.3, 0.2, 0.5])
  results = []
  for key in (jax.random.key(6), jax.random.PRNGKey(6), 6, np.int64(6)):
    state = _run(optim.max_kl(T, mode='softmax', key=key), 20,
                 task_divergences=kl)
    results.append(np.asarray(state.counts))
  for counts in results[1:]:
    np.testing.assert_array_equal(counts, results[0])


# --- round_robin, uniform, mixture -------------------------------------------


def test_round_robin_cycles():
  tx = optim.round_robin(T)
  state = tx.init(PARAMS)
  choices = []
  for i in range(7):
    kwargs = {'task_divergences': jnp.array([9.0, 0.0, 0.0])} if i % 2 else {}
    _, state = tx.update(PARAMS, state, **kwargs)
    choices.append(int(state.choice))
    np.testing.assert_array_equal(state.weights, np.eye(T)[choices[-1]])
  assert choices == [0, 1, 2, 0, 1, 2, 0]
  np.testing.assert_array_equal(state.counts, [3, 2, 2])


def test_uniform_frequencies():
  n = 3000
  state = _run(optim.uniform(T, jax.random.key(7)), n)
  np.testing.assert_allclose(state.counts / n, np.full(T, 1 / T), atol=0.03)
  assert int(state.counts.sum()) == n


def test_mixture_weights_and_counts():
  tx = optim.mixture(T)
  state = tx.init(PARAMS)
  for _ in range(2):
    _, state = tx.update(PARAMS, state, task_divergences=jnp.ones(T))
  assert int(state.choice) == -1
  np.testing.assert_allclose(state.weights, np.full(T, 1 / T))
  np.testing.assert_array_equal(state.counts, [2, 2, 2])


# --- learning_progress -------------------------------------------------------


def test_learning_progress_closed_form():
  tx = optim.learning_progress(2, 0, mode='greedy', step_size=0.1)
  state = tx.init(PARAMS)
  step = lambda s, kl: tx.update(PARAMS, s, task_divergences=jnp.array(kl))[1]
  state = step(state, [1.0, 1.0])  # Untried tasks first, in index order.
  assert int(state.choice) == 0
  state = step(state, [0.5, 1.0])  # Reward of task 0: 1.0 - 0.5.
  np.testing.assert_allclose(state.scores, [0.5, 0.0])
  assert int(state.choice) == 1
  state = step(state, [0.4, 0.9])  # Reward of task 1: 1.0 - 0.9.
  np.testing.assert_allclose(state.scores, [0.5, 0.1], rtol=1e-6)
  assert int(state.choice) == 0
  state = step(state, [0.2, 0.9])  # 0.5 + 0.1 * ((0.4 - 0.2) - 0.5).
  np.testing.assert_allclose(state.scores, [0.47, 0.1], rtol=1e-6)
  assert int(state.choice) == 0
  np.testing.assert_array_equal(state.counts, [3, 1])


def test_learning_progress_absolute():
  for absolute, want in ((False, -0.5), (True, 0.5)):
    tx = optim.learning_progress(2, 0, mode='greedy', absolute=absolute)
    state = tx.init(PARAMS)
    _, state = tx.update(PARAMS, state, task_divergences=jnp.array([1., 1.]))
    _, state = tx.update(PARAMS, state, task_divergences=jnp.array([1.5, 1.]))
    np.testing.assert_allclose(state.scores[0], want)


def _np_learning_progress(kls, step_size):
  """Naive NumPy learning-progress bandit, greedy selection."""
  num_tasks = kls.shape[1]
  scores = np.zeros(num_tasks)
  counts = np.zeros(num_tasks, np.int64)
  prev, last, choices, all_scores = None, None, [], []
  for kl in kls:
    if prev is not None:
      reward = last[prev] - kl[prev]
      if counts[prev] == 1:
        scores[prev] = reward
      else:
        scores[prev] += step_size * (reward - scores[prev])
    untried = np.flatnonzero(counts == 0)
    prev = untried[0] if len(untried) else int(np.argmax(scores))
    counts[prev] += 1
    last = kl
    choices.append(prev)
    all_scores.append(scores.copy())
  return choices, all_scores


def test_learning_progress_matches_numpy():
  rng = np.random.default_rng(8)
  kls = rng.random((12, T)).astype(np.float32)
  tx = optim.learning_progress(T, 0, mode='greedy', step_size=0.3)
  update = jax.jit(tx.update)
  state = tx.init(PARAMS)
  want_choices, want_scores = _np_learning_progress(kls, 0.3)
  for kl, choice, scores in zip(kls, want_choices, want_scores):
    _, state = update(PARAMS, state, task_divergences=kl)
    assert int(state.choice) == choice
    np.testing.assert_allclose(state.scores, scores, rtol=1e-5, atol=1e-6)


def test_learning_progress_prefers_task_whose_kl_drops():
  tx = optim.learning_progress(T, jax.random.key(9), epsilon=0.1)
  update = jax.jit(tx.update)
  state = tx.init(PARAMS)
  kl = np.ones(T, np.float32)
  for _ in range(150):
    _, state = update(PARAMS, state, task_divergences=kl)
    if int(state.choice) == 1:  # Only training on task 1 makes progress.
      kl[1] *= 0.97
  assert int(np.argmax(state.counts)) == 1
  assert int(state.counts[1]) > 0.7 * 150


# --- rnd ---------------------------------------------------------------------


def _np_mlp(net, x):
  h = np.maximum(x @ net['w1'] + net['b1'], 0.0)
  return h, h @ net['w2'] + net['b2']


def test_rnd_matches_numpy():
  lr = 0.05
  tx = optim.rnd(T, jax.random.key(10), OBS, hidden=8, embed=5,
                 learning_rate=lr)
  update = jax.jit(tx.update)
  state = tx.init(PARAMS)
  rng = np.random.default_rng(10)
  for _ in range(3):
    obs = rng.normal(size=(T, 6, OBS)).astype(np.float32)
    pred = jax.tree.map(lambda x: np.asarray(x, np.float64), state.predictor)
    targ = jax.tree.map(lambda x: np.asarray(x, np.float64), state.target)
    novelty = np.array([np.mean((_np_mlp(pred, o)[1] - _np_mlp(targ, o)[1])**2)
                        for o in obs])
    k = int(np.argmax(novelty))
    # One SGD step on mean((pred - target)^2) over task k's probes.
    h, out = _np_mlp(pred, obs[k])
    d_out = 2 * (out - _np_mlp(targ, obs[k])[1]) / out.size
    d_h = (d_out @ pred['w2'].T) * (h > 0)
    want = {'w2': pred['w2'] - lr * h.T @ d_out,
            'b2': pred['b2'] - lr * d_out.sum(0),
            'w1': pred['w1'] - lr * obs[k].T @ d_h,
            'b1': pred['b1'] - lr * d_h.sum(0)}
    _, state = update(PARAMS, state, task_states=obs)
    np.testing.assert_allclose(state.scores, novelty, rtol=1e-4)
    assert int(state.choice) == k
    chex.assert_trees_all_close(state.predictor, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('learning_rate', [1e-3, 0.05])
def test_rnd_novelty_drops_after_training_on_task(learning_rate):
  rng = np.random.default_rng(11)
  obs = rng.normal(size=(T, 16, OBS)).astype(np.float32)
  obs += np.arange(T, dtype=np.float32)[:, None, None]  # Distinct tasks.
  tx = optim.rnd(T, jax.random.key(11), OBS, learning_rate=learning_rate)
  update = jax.jit(tx.update)
  _, state = update(PARAMS, tx.init(PARAMS), task_states=obs)
  first = np.asarray(state.scores)
  for _ in range(30):
    chosen, before = int(state.choice), float(state.scores[state.choice])
    _, state = update(PARAMS, state, task_states=obs)
    assert float(state.scores[chosen]) < before
  if learning_rate >= 0.05:
    # The most novel task alternates, so every task is visited and loses
    # novelty.
    assert np.all(state.counts > 0)
    assert np.all(np.asarray(state.scores) < 0.5 * first)


# --- bi_objective ------------------------------------------------------------


def test_bi_objective_closed_form():
  tx = optim.bi_objective(2, lam=1.0)
  state = tx.init({'a': jnp.zeros(2)})
  kl = jnp.array([1.0, 0.5])
  # First call: p = 0, cos = 0, the largest KL wins.
  out, state = tx.update({'a': jnp.array([[1.0, 0.0], [0.0, 1.0]])}, state,
                         task_divergences=kl)
  chex.assert_trees_all_close(out, {'a': jnp.array([1.0, 0.0])})
  np.testing.assert_allclose(state.cos, [0.0, 0.0])
  assert int(state.choice) == 0
  # cos(g_0, p) = -1, cos(g_1, p) = 0: scores [0, 0.5].
  out, state = tx.update({'a': jnp.array([[-2.0, 0.0], [0.0, 3.0]])}, state,
                         task_divergences=kl)
  chex.assert_trees_all_close(out, {'a': jnp.array([0.0, 3.0])})
  np.testing.assert_allclose(state.cos, [-1.0, 0.0])
  np.testing.assert_allclose(state.scores, [0.0, 0.5])
  assert int(state.choice) == 1
  chex.assert_trees_all_close(state.reference, {'a': jnp.array([0.0, 3.0])})
  np.testing.assert_array_equal(state.counts, [1, 1])
  # lam = 0 ignores the alignment.
  tx0 = optim.bi_objective(2, lam=0.0)
  state0 = tx0.init({'a': jnp.zeros(2)})
  _, state0 = tx0.update({'a': jnp.array([[1.0, 0.0], [0.0, 1.0]])}, state0,
                         task_divergences=kl)
  out, state0 = tx0.update({'a': jnp.array([[-2.0, 0.0], [0.0, 3.0]])},
                           state0, task_divergences=kl)
  assert int(state0.choice) == 0


def test_bi_objective_matches_numpy():
  rng = np.random.default_rng(12)
  lam = 2.0
  leaves = lambda lead: {'w': rng.normal(size=lead + (3, 2)),
                         'b': rng.normal(size=lead + (2,))}
  params = jax.tree.map(lambda x: jnp.zeros(x.shape, jnp.float32), leaves(()))
  tx = optim.bi_objective(T, lam=lam)
  update = jax.jit(tx.update)
  state = tx.init(params)
  p = np.zeros(8)
  for _ in range(5):
    grads_T = jax.tree.map(lambda x: x.astype(np.float32), leaves((T,)))
    kl = rng.random(T).astype(np.float32)
    g_TxD = np.concatenate([np.asarray(x, np.float64).reshape(T, -1)
                            for x in jax.tree.leaves(grads_T)], axis=1)
    norms = np.linalg.norm(g_TxD, axis=1) * np.linalg.norm(p)
    cos = g_TxD @ p / norms if np.linalg.norm(p) > 0 else np.zeros(T)
    k = int(np.argmax(kl + lam * cos))
    out, state = update(grads_T, state, task_divergences=kl)
    np.testing.assert_allclose(state.cos, cos, rtol=1e-5, atol=1e-6)
    assert int(state.choice) == k
    chex.assert_trees_all_close(out, jax.tree.map(lambda x: x[k], grads_T))
    p = g_TxD[k]


def test_bi_objective_state_stable_and_in_chain_with_adam():
  targets_T = jnp.array([[1.0, 1.0], [-1.0, 2.0], [0.0, -1.0]])
  params = {'w': jnp.zeros(2)}

  def task_losses(p):
    return jnp.sum(jnp.square(p['w'][None] - targets_T), axis=1)

  tx = optax.chain(optim.bi_objective(T, lam=0.5), optax.adam(0.1))
  state0 = state = tx.init(params)

  chex.clear_trace_counter()

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(params, state):
    losses = task_losses(params)
    grads_T = jax.jacrev(task_losses)(params)
    updates, state = tx.update(grads_T, state, params,
                               task_divergences=losses)
    return optax.apply_updates(params, updates), state

  start = task_losses(params).max()
  for _ in range(20):
    params, state = step(params, state)
    _assert_same_structure_shape_dtype(state, state0)
  assert task_losses(params).max() < start
  assert int(state[0].counts.sum()) == 20


# --- someone else's training loop --------------------------------------------


def test_project_conflicting_and_max_kl_in_plain_regression_loop():
  # Two linear-regression tasks whose optimal biases conflict; the curriculum
  # always trains on the worse task, surgery keeps steps from undoing each
  # other.
  key_x, key_w = jax.random.split(jax.random.key(13))
  xs_TxNxD = jax.random.normal(key_x, (2, 64, 3))
  w_true_TxD = jnp.stack([jnp.array([1.0, 2.0, -1.0]),
                          jnp.array([1.0, 1.5, -1.0])])
  ys_TxN = (jnp.einsum('tnd,td->tn', xs_TxNxD, w_true_TxD)
            + jnp.array([[-1.0], [1.0]]))

  def task_loss(params, k):
    pred_N = xs_TxNxD[k] @ params['w'] + params['b']
    return jnp.mean(jnp.square(pred_N - ys_TxN[k]))

  selector = optim.max_kl(2)
  tx = optax.chain(optim.project_conflicting(), optax.adam(0.05))
  params = {'w': jnp.zeros(3), 'b': jnp.zeros(())}
  sel_state, opt_state = selector.init(params), tx.init(params)

  @jax.jit
  def step(params, sel_state, opt_state):
    losses_T = jax.vmap(task_loss, in_axes=(None, 0))(params, jnp.arange(2))
    _, sel_state = selector.update(None, sel_state, task_divergences=losses_T)
    grads = jax.grad(task_loss)(params, sel_state.choice)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), sel_state, opt_state

  start = jax.vmap(task_loss, in_axes=(None, 0))(params, jnp.arange(2))
  projected = 0.0
  for _ in range(300):
    params, sel_state, opt_state = step(params, sel_state, opt_state)
    projected += float(opt_state[0].projected)
  end = jax.vmap(task_loss, in_axes=(None, 0))(params, jnp.arange(2))
  assert np.all(sel_state.counts > 50)
  assert projected > 0
  # The worst task ends near the min-max value: the bias between the tasks'
  # optima (-1 and 1) and w between theirs give about 1 + 0.25**2 per task.
  assert float(start.max()) > 6.0
  assert float(end.max()) < 1.3
  assert abs(float(params['b'])) < 0.3


README_EXAMPLE = '''
import jax
import jax.numpy as jnp
import optax
from distill import optim

# Your own model and loop: two regression tasks with conflicting offsets.
xs = jax.random.normal(jax.random.key(0), (2, 64, 3))
ys = xs @ jnp.array([1.0, -2.0, 0.5]) + jnp.array([[-1.0], [1.0]])
loss = lambda p, k: jnp.mean((xs[k] @ p['w'] + p['b'] - ys[k]) ** 2)

params = {'w': jnp.zeros(3), 'b': jnp.zeros(())}
select = optim.max_kl(num_tasks=2)  # train on the task with the largest loss
tx = optax.chain(optim.project_conflicting(), optax.adam(1e-2))
sel_state, opt_state = select.init(params), tx.init(params)

@jax.jit
def step(params, sel_state, opt_state):
  losses = jax.vmap(loss, in_axes=(None, 0))(params, jnp.arange(2))
  _, sel_state = select.update(None, sel_state, task_divergences=losses)
  grads = jax.grad(loss)(params, sel_state.choice)
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), sel_state, opt_state

for _ in range(500):
  params, sel_state, opt_state = step(params, sel_state, opt_state)
print(sel_state.counts, opt_state[0].cos, opt_state[0].projected)
'''


def test_readme_example_runs():
  # README.md shows exactly this code.
  readme = os.path.join(os.path.dirname(__file__), os.pardir, 'README.md')
  with open(readme, encoding='utf-8') as f:
    assert README_EXAMPLE.strip() in f.read()
  namespace = {}
  # The README shows this exact code; run it as a user would.
  exec(compile(README_EXAMPLE, 'README_EXAMPLE', 'exec'), namespace)
  counts = namespace['sel_state'].counts
  assert int(counts.sum()) == 500 and np.all(counts > 0)
  losses = [float(namespace['loss'](namespace['params'], k)) for k in (0, 1)]
  assert max(losses) < 1.5  # From about 6 at the zero init.
