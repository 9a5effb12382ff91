"""Interoperability of the distill.optim transforms with optax's wrappings.

Every transform runs through every wrapping that optax users put around their
own transforms: jax.jit, optax.chain, optax.inject_hyperparams,
optax.MultiSteps, optax.masked, optax.partition, lax.scan, lax.cond, bf16 and
float64 (jax_enable_x64) parameters, parameters sharded over an 8-device CPU
mesh (Auto and Explicit axis types; a subprocess, so that the other tests keep
their device count) and the optimizer state saved with flax.serialization
(msgpack), pickle and orbax. Each check compares the numbers with the plain,
unwrapped transform (or states why the wrapping is refused). The matrix of
results is docs/optim_interop.md.

Run alone: python -m pytest -q tests/optim_interop_test.py -n 2
The mesh check also runs as a script (XLA_FLAGS must force 8 host devices):
  XLA_FLAGS=--xla_force_host_platform_device_count=8 \\
    python tests/optim_interop_test.py Auto Explicit
"""

import dataclasses
import functools
import inspect
import json
import os
import pickle
import re
import subprocess
import sys
from typing import Any, Callable

import chex
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from distill import optim

T = 3  # tasks
OBS = 4  # RND state features
STEPS = 3  # updates per check
MASK = {'b': False, 's': True, 'w': True}  # masked / partitioned leaves


def _params(dtype=jnp.float32):
  # The leading 8 of `b` and `w` is what the mesh check shards.
  return {'b': jnp.zeros([8], dtype), 's': jnp.zeros([], dtype),
          'w': jnp.zeros([8, 2], dtype)}


@dataclasses.dataclass(frozen=True)
class Case:
  """One transform: its factory, hyperparameters and inputs."""
  name: str
  factory: Callable[..., optax.GradientTransformation]
  kwargs: dict[str, Any]
  stacked: bool = False  # takes per-task updates [T, ...]
  extras: tuple[str, ...] = ()  # extra args it needs
  schedule: tuple[str, float, float] | None = None  # (hp, start, end)
  ints: tuple[str, ...] = ('num_tasks',)  # shape-setting ints

  def make(self, **overrides):
    return self.factory(**{**self.kwargs, **overrides})


KEY = jax.random.key(0)
CASES = {c.name: c for c in [
    Case('project_conflicting', optim.project_conflicting, {'decay': 0.5},
         schedule=('decay', 0.0, 0.8), ints=()),
    Case('pcgrad', optim.pcgrad, {'key': KEY, 'reduction': 'mean'},
         stacked=True, ints=()),
    Case('max_kl', optim.max_kl,
         {'num_tasks': T, 'key': KEY, 'mode': 'softmax', 'temperature': 0.5},
         extras=('task_divergences',), schedule=('temperature', 1.0, 0.1)),
    Case('round_robin', optim.round_robin, {'num_tasks': T}),
    Case('uniform', optim.uniform, {'num_tasks': T, 'key': KEY}),
    Case('mixture', optim.mixture, {'num_tasks': T}),
    Case('learning_progress', optim.learning_progress,
         {'num_tasks': T, 'key': KEY, 'step_size': 0.3},
         extras=('task_divergences',), schedule=('step_size', 0.9, 0.1)),
    Case('rnd', optim.rnd,
         {'num_tasks': T, 'key': KEY, 'obs_dim': OBS, 'hidden': 8,
          'embed': 4, 'learning_rate': 0.05},
         extras=('task_states',), schedule=('learning_rate', 0.1, 0.01),
         ints=('num_tasks', 'obs_dim', 'hidden', 'embed')),
    Case('bi_objective', optim.bi_objective, {'num_tasks': T, 'lam': 1.0},
         stacked=True, extras=('task_divergences',),
         schedule=('lam', 0.0, 2.0)),
]}
NAMES = sorted(CASES)
# One instance per transform, so that its jitted update compiles once per
# test process and serves as the reference of every wrapping.
TX = {name: case.make() for name, case in CASES.items()}
UPDATE = {name: jax.jit(tx.update) for name, tx in TX.items()}
STACKED = [n for n in NAMES if CASES[n].stacked]
UNSTACKED = [n for n in NAMES if not CASES[n].stacked]


def _inputs(case, seed=0, steps=STEPS, dtype=np.float32):
  """[(updates, extra_args)] for `steps` updates, NumPy leaves."""
  rng = np.random.default_rng(seed)
  lead = (T,) if case.stacked else ()
  out = []
  for _ in range(steps):
    updates = jax.tree.map(
        lambda p: rng.normal(size=lead + p.shape).astype(dtype), _params())
    extras = {
        'task_divergences': rng.random(T).astype(dtype),
        'task_states': rng.normal(size=(T, 5, OBS)).astype(dtype),
    }
    out.append((updates, {k: extras[k] for k in case.extras}))
  return out


def _run(tx, params, inputs, *, jit=True, state=None):
  """Runs the updates; returns (outputs, states after each update)."""
  update = jax.jit(tx.update) if jit else tx.update
  state = tx.init(params) if state is None else state
  outs, states = [], []
  for updates, extras in inputs:
    out, state = update(updates, state, params, **extras)
    outs.append(out)
    states.append(state)
  return outs, states


@functools.cache
def _plain(name):
  """Outputs and states of the plain jitted transform on `_inputs`."""
  params = _params()
  state = TX[name].init(params)
  outs, states = [], []
  for updates, extras in _inputs(CASES[name]):
    out, state = UPDATE[name](updates, state, params, **extras)
    outs.append(out)
    states.append(state)
  return outs, states


def _avals(tree):
  """Shape, dtype and weak type of every leaf (arrays or eval_shape's)."""
  def aval(x):
    if not isinstance(x, jax.ShapeDtypeStruct):
      x = jax.typeof(x)
    return jax.ShapeDtypeStruct(x.shape, x.dtype, weak_type=x.weak_type)
  return jax.tree.map(aval, tree)


def _close(a, b, **tol):
  chex.assert_trees_all_close(a, b, **({'rtol': 1e-6, 'atol': 1e-6} | tol))


def _sub(tree):
  """The masked (True) leaves of a params-like tree."""
  return {k: v for k, v in tree.items() if MASK[k]}


# --- jit ---------------------------------------------------------------------


@pytest.mark.parametrize('name', NAMES)
def test_jit(name):
  case = CASES[name]
  tx = TX[name]
  params = _params()
  inputs = _inputs(case)
  eager_outs, eager_states = _run(tx, params, inputs, jit=False)

  chex.clear_trace_counter()

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(updates, state, extras):
    return tx.update(updates, state, params, **extras)

  state = init_state = jax.jit(tx.init)(params)
  for (updates, extras), want_out, want_state in zip(
      inputs, eager_outs, eager_states):
    out, state = step(updates, state, extras)
    _close(out, want_out)
    _close(state, want_state)
    # Structure, shapes, dtypes and weak types never drift, so the state can
    # be a scan or cond carry and the step compiles once.
    assert _avals(state) == _avals(init_state)
  # The surgery takes no extra args (a plain transform, as optax's own); the
  # selectors accept them.
  assert isinstance(tx, optax.GradientTransformationExtraArgs) == (
      name not in ('project_conflicting', 'pcgrad'))


# --- donation ----------------------------------------------------------------


@pytest.mark.parametrize('name', NAMES)
def test_donated_state(name):
  """An eagerly initialized state can be donated to a jitted update: no two
  of its leaves share a buffer, and the results equal the plain update's."""
  case, tx = CASES[name], TX[name]
  params = _params()
  update = jax.jit(lambda u, s, e: tx.update(u, s, params, **e),
                   donate_argnums=1)
  state = tx.init(params)
  for (updates, extras), want in zip(_inputs(case), _plain(name)[1]):
    _, state = update(updates, state, extras)
    _close(state, want)


# --- optax.chain -------------------------------------------------------------


@pytest.mark.parametrize('name', NAMES)
def test_chain(name):
  case = CASES[name]
  tx, adam = TX[name], optax.adam(0.1)
  chained = optax.chain(tx, adam)
  params = _params()
  all_extras = {'task_divergences': np.ones(T, np.float32),
                'task_states': np.ones((T, 5, OBS), np.float32)}
  state, adam_state = chained.init(params), adam.init(params)
  update = jax.jit(chained.update)
  for (updates, extras), mid, tx_state in zip(_inputs(case), *_plain(name)):
    # chain forwards extra args to the selectors and drops them for the plain
    # transforms, whatever the call carries.
    out, state = update(updates, state, params, **(all_extras | extras))
    want, adam_state = adam.update(mid, adam_state, params)
    _close(out, want)
    _close(state, (tx_state, adam_state))
  if not isinstance(tx, optax.GradientTransformationExtraArgs):
    # A plain transform refuses an extra arg in a direct call, as optax's own.
    with pytest.raises(TypeError):
      tx.update(*_inputs(case)[0][:1], tx.init(params), params,
                task_divergences=np.ones(T))
  for missing in case.extras:
    updates, extras = _inputs(case)[0]
    with pytest.raises(TypeError, match=missing):
      chained.update(updates, chained.init(params), params,
                     **{k: v for k, v in extras.items() if k != missing})


# --- optax.inject_hyperparams ------------------------------------------------


@pytest.mark.parametrize('name', NAMES)
def test_inject_hyperparams(name):
  case = CASES[name]
  params = _params()
  inputs = _inputs(case, steps=6)  # learning_progress uses step_size from 5.
  kwargs = dict(case.kwargs)
  values = [None] * len(inputs)
  if case.schedule:
    hp, start, end = case.schedule
    schedule = optax.linear_schedule(start, end, len(inputs) - 1)
    kwargs[hp] = schedule
    values = [float(schedule(i)) for i in range(len(inputs))]
  # As a user writes it: no static_args; init runs eagerly, update jitted.
  tx = optax.inject_hyperparams(case.factory)(**kwargs)
  state = tx.init(params)
  update = jax.jit(tx.update)

  @jax.jit
  def plain_update(updates, state, value, extras):
    # The plain factory given this step's value (traced, one compilation).
    plain = case.make(**({case.schedule[0]: value} if case.schedule else {}))
    return plain.update(updates, state, params, **extras)

  want_state = const_state = TX[name].init(params)
  for (updates, extras), value in zip(inputs, values):
    want, want_state = plain_update(updates, want_state, value, extras)
    out, state = update(updates, state, params, **extras)
    if value is not None:  # This update used the schedule's value.
      np.testing.assert_allclose(state.hyperparams[case.schedule[0]], value,
                                 rtol=1e-6)
      _, const_state = plain_update(updates, const_state,
                                    case.kwargs[case.schedule[0]], extras)
    _close(out, want, rtol=1e-5, atol=1e-6)
    _close(state.inner_state, want_state, rtol=1e-5, atol=1e-6)
  if case.schedule:  # The schedule changed the result.
    with pytest.raises(AssertionError):
      _close(state.inner_state, const_state, rtol=1e-5, atol=1e-6)

  # A traced (jitted) init needs the shape-setting ints static; without
  # static_args it refuses, saying so. (eval_shape traces as jit does.)
  static = optax.inject_hyperparams(case.factory, static_args=case.ints)
  state = jax.eval_shape(static(**kwargs).init, params)
  assert _avals(state.inner_state) == _avals(TX[name].init(params))
  if case.ints:
    with pytest.raises(ValueError,
                       match=rf'distill\.optim\.{name}: .*static_args'):
      jax.jit(tx.init)(params)


# --- optax.MultiSteps --------------------------------------------------------


@pytest.mark.parametrize('name', UNSTACKED)
def test_multisteps(name):
  case = CASES[name]
  params = _params()
  multi = optax.MultiSteps(TX[name], every_k_schedule=2)
  state, want_state = multi.init(params), TX[name].init(params)
  update = jax.jit(multi.update)
  inputs = _inputs(case, steps=4)
  for i, (updates, extras) in enumerate(inputs):
    out, state = update(updates, state, params, **extras)
    if i % 2 == 0:  # A mini-step: zeros out, inner state untouched.
      _close(out, optax.tree.zeros_like(params))
    else:  # The inner transform sees the mean of the two mini-steps.
      mean = jax.tree.map(lambda a, b: (a + b) / 2, inputs[i - 1][0], updates)
      want, want_state = UPDATE[name](mean, want_state, params, **extras)
      _close(out, want, rtol=1e-5, atol=1e-6)
    _close(state.inner_opt_state, want_state, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('name', STACKED)
def test_multisteps_refuses_stacked(name):
  case = CASES[name]
  params = _params()
  multi = optax.MultiSteps(case.make(), every_k_schedule=2)
  updates, extras = _inputs(case)[0]
  with pytest.raises(ValueError,
                     match=rf'distill\.optim\.{name}: .*MultiSteps'):
    multi.update(updates, multi.init(params), params, **extras)
  # The same transform outside MultiSteps runs, and MultiSteps accumulates
  # its (unstacked) outputs.
  tx = optax.chain(
      TX[name], optax.MultiSteps(optax.sgd(1.0), 2).gradient_transformation())
  state = tx.init(params)
  outs = _plain(name)[0]
  for updates, extras in _inputs(case)[:2]:
    out, state = jax.jit(tx.update)(updates, state, params, **extras)
  _close(out, jax.tree.map(lambda a, b: -(a + b) / 2, outs[0], outs[1]),
         rtol=1e-5, atol=1e-6)


# --- optax.masked and optax.partition ----------------------------------------


def _beside_sub(name, wrapped, inner_state):
  """Steps `wrapped` (TX[name] on MASK's leaves inside an optax wrapper)
  beside TX[name] on those leaves alone; checks that their outputs on those
  leaves and TX[name]'s states (`inner_state(state)`) agree, and yields each
  step's (updates, out)."""
  params = _params()
  state, want_state = wrapped.init(params), TX[name].init(_sub(params))
  update = jax.jit(wrapped.update)
  for updates, extras in _inputs(CASES[name]):
    out, state = update(updates, state, params, **extras)
    want, want_state = UPDATE[name](_sub(updates), want_state, _sub(params),
                                    **extras)
    _close(_sub(out), want)
    _close(jax.tree.leaves(inner_state(state)), jax.tree.leaves(want_state))
    yield updates, out


@pytest.mark.parametrize('name', NAMES)
def test_masked(name):
  for updates, out in _beside_sub(name, optax.masked(TX[name], MASK),
                                  lambda state: state.inner_state):
    # Unmasked leaves pass unchanged (still stacked for a stacked transform).
    np.testing.assert_array_equal(out['b'], updates['b'])


def _sum_tasks():
  return optax.stateless(lambda u, p: jax.tree.map(lambda x: x.sum(0), u))


@pytest.mark.parametrize('name', NAMES)
def test_partition(name):
  stacked = CASES[name].stacked
  labels = {k: 'mine' if m else 'other' for k, m in MASK.items()}
  other = _sum_tasks() if stacked else optax.scale(-1.0)
  part = optax.partition({'mine': TX[name], 'other': other}, labels)
  for updates, out in _beside_sub(name, part,
                                  lambda state: state.inner_states['mine']):
    _close(out['b'], updates['b'].sum(0) if stacked else -updates['b'])


# --- lax.scan and lax.cond ---------------------------------------------------


@pytest.mark.parametrize('name', NAMES)
def test_scan(name):
  case = CASES[name]
  tx = TX[name]
  params = _params()
  inputs = _inputs(case)
  want_outs, want_states = _plain(name)
  xs = jax.tree.map(lambda *x: np.stack(x), *inputs)

  def body(state, x):
    updates, extras = x
    out, state = tx.update(updates, state, params, **extras)
    return state, out

  state, outs = jax.jit(lambda s, xs: jax.lax.scan(body, s, xs))(
      tx.init(params), xs)
  _close(outs, jax.tree.map(lambda *x: jnp.stack(x), *want_outs))
  _close(state, want_states[-1])


@pytest.mark.parametrize('name', NAMES)
def test_cond(name):
  case = CASES[name]
  tx = TX[name]
  params = _params()

  @jax.jit
  def step(pred, updates, state, extras):
    def skip():
      out = optax.tree.zeros_like(params) if case.stacked else updates
      return out, state
    return jax.lax.cond(
        pred, lambda: tx.update(updates, state, params, **extras), skip)

  state = tx.init(params)
  for i, (updates, extras) in enumerate(_inputs(case)):
    pred = i != 1
    out, new_state = step(pred, updates, state, extras)
    if pred:
      want, want_state = UPDATE[name](updates, state, params, **extras)
      _close(out, want)
      _close(new_state, want_state)
    else:
      _close(new_state, state, rtol=0, atol=0)
    state = new_state


# --- bf16 and float64 parameters ---------------------------------------------


@pytest.mark.parametrize('name', NAMES)
def test_bf16(name):
  case = CASES[name]
  tx = TX[name]
  bf16 = jnp.bfloat16
  inputs = [(jax.tree.map(lambda x: jnp.asarray(x, bf16), u), e)
            for u, e in _inputs(case)]
  outs, states = _run(tx, _params(bf16), inputs)
  as_f32 = [(jax.tree.map(lambda x: x.astype(jnp.float32), u), e)
            for u, e in inputs]
  want_outs, want_states = _run(tx, _params(), as_f32)
  init = tx.init(_params(bf16))
  for out, state, want_out, want_state in zip(outs, states, want_outs,
                                              want_states):
    assert {x.dtype for x in jax.tree.leaves(out)} == {jnp.dtype(bf16)}
    assert _avals(state) == _avals(init)
    # Sums run in float32 either way; only the bf16 rounding differs.
    _close(jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), out),
           want_out, rtol=2e-2, atol=2e-2)
    _close(jax.tree.map(lambda x, w: x.astype(w.dtype), state, want_state),
           want_state, rtol=2e-2, atol=2e-2)


def _reference_leaf(path) -> bool:
  return 'reference' in jax.tree_util.keystr(path)


@pytest.mark.parametrize('name', NAMES)
def test_float64(name):
  case = CASES[name]
  tx = TX[name]
  avals32 = _avals(tx.init(_params()))
  with jax.enable_x64(True):
    inputs = [(u, e) for u, e in _inputs(case, dtype=np.float64)]
    params = _params(jnp.float64)
    init = tx.init(params)
    outs, states = _run(tx, params, inputs)
    for out, state in zip(outs, states):
      assert {x.dtype for x in jax.tree.leaves(out)} == {jnp.dtype('float64')}
      assert _avals(state) == _avals(init)
    # int32 / float32 / uint32 fields as without x64; params-shaped fields
    # follow the params.
    flat64 = jax.tree_util.tree_leaves_with_path(_avals(init))
    for a32, (path, a64) in zip(jax.tree.leaves(avals32), flat64):
      want = jnp.dtype('float64') if _reference_leaf(path) else a32.dtype
      assert a64.dtype == want, (path, a64, a32)
  # The float32 inputs are these draws rounded to float32.
  _close(outs, _plain(name)[0], rtol=1e-5, atol=1e-5)


def test_float64_projection_is_exact():
  # Inner products accumulate in float64 for float64 params: the projected
  # update is orthogonal to the reference to float64 precision.
  with jax.enable_x64(True):
    rng = np.random.default_rng(0)
    g0 = {'w': rng.normal(size=(64, 64))}
    g1 = {'w': -g0['w'] + 1e-3 * rng.normal(size=(64, 64))}
    tx = optim.project_conflicting()
    _, state = tx.update(g0, tx.init(g0))
    out, state = tx.update(g1, state)
    assert float(state.projected) == 1.0
    dot = float(np.vdot(out['w'], g0['w']))
    assert abs(dot) < 1e-12 * np.linalg.norm(g0['w']) * np.linalg.norm(
        g1['w'])


# --- serialization -----------------------------------------------------------


def _state_after(case):
  return TX[case.name], _params(), _plain(case.name)[1][1]


def _assert_continues(case, tx, params, state, restored, *, eager=True):
  """The restored state updates as the original does (jitted, and eagerly)."""
  assert jax.tree.structure(restored) == jax.tree.structure(state)
  _close(restored, state, rtol=0, atol=0)
  updates, extras = _inputs(case, seed=1, steps=1)[0]
  want = UPDATE[case.name](updates, state, params, **extras)
  _close(UPDATE[case.name](updates, restored, params, **extras), want)
  if eager:  # Eager ops index the restored leaves themselves.
    _close(tx.update(updates, restored, params, **extras), want)


@pytest.mark.parametrize('name', NAMES)
def test_msgpack(name):
  case = CASES[name]
  tx, params, state = _state_after(case)
  data = flax.serialization.to_bytes(state)
  restored = flax.serialization.from_bytes(tx.init(params), data)
  assert all(isinstance(x, np.ndarray) for x in jax.tree.leaves(restored))
  _assert_continues(case, tx, params, state, restored)
  # The state of a whole chain as well.
  chained = optax.chain(tx, optax.adam(1e-3))
  chain_state = (state, optax.adam(1e-3).init(params))
  restored = flax.serialization.from_bytes(
      chained.init(params), flax.serialization.to_bytes(chain_state))
  _close(restored, chain_state, rtol=0, atol=0)


@pytest.mark.parametrize('name', NAMES)
def test_pickle(name):
  case = CASES[name]
  tx, params, state = _state_after(case)
  restored = pickle.loads(pickle.dumps(state))
  _assert_continues(case, tx, params, state, restored, eager=False)
  numpy_state = pickle.loads(pickle.dumps(jax.tree.map(np.asarray, state)))
  _assert_continues(case, tx, params, state, numpy_state)


@pytest.mark.parametrize('name', NAMES)
def test_orbax(name, tmp_path):
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  case = CASES[name]
  tx, params, state = _state_after(case)
  chain_state = (state, optax.adam(1e-3).init(params))
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(tmp_path / 'state', chain_state)
    checkpointer.wait_until_finished()
    restored = checkpointer.restore(tmp_path / 'state',
                                    jax.eval_shape(lambda: chain_state))
  _close(restored, chain_state, rtol=0, atol=0)
  # Restored leaves are committed device arrays: the jitted update takes them.
  _assert_continues(case, tx, params, state, restored[0], eager=False)


# --- one API -----------------------------------------------------------------


@pytest.mark.parametrize('name', NAMES)
def test_key_is_one_argument_in_one_place(name):
  case = CASES[name]
  parameters = list(inspect.signature(case.factory).parameters)
  if 'key' not in case.kwargs:
    assert 'key' not in parameters
    return
  # After num_tasks, or first where there is none; every key form agrees.
  assert parameters.index('key') == (1 if 'num_tasks' in parameters else 0)
  params = _params()
  updates, extras = _inputs(case)[0]
  want = TX[name].update(updates, TX[name].init(params), params, **extras)
  for key in (jax.random.PRNGKey(0), 0, np.uint32(0), jnp.int32(0)):
    tx = case.make(key=key)
    _close(tx.init(params), TX[name].init(params), rtol=0, atol=0)
    _close(tx.update(updates, tx.init(params), params, **extras), want,
           rtol=0, atol=0)
  with pytest.raises(ValueError, match=rf'^distill\.optim\.{name}: key'):
    case.make(key=jax.random.split(KEY, 2))


@pytest.mark.parametrize('name', UNSTACKED)
def test_selectors_and_surgery_take_updates_none(name):
  case = CASES[name]
  tx = TX[name]
  if name == 'project_conflicting':  # Its update is the updates' projection.
    with pytest.raises(ValueError, match='got None'):
      tx.update(None, tx.init(_params()))
    return
  extras = _inputs(case)[0][1]
  out, state = jax.jit(tx.update)(None, tx.init(None), **extras)
  assert out is None
  want = tx.update(_params(), tx.init(None), **extras)[1]
  _close(state, want)


def test_bi_objective_refuses_updates_none():
  tx = optim.bi_objective(T)
  with pytest.raises(ValueError, match=r'distill\.optim\.bi_objective: .*'
                     'stacked per-task updates'):
    tx.update(None, tx.init(_params()), task_divergences=np.ones(T))


def _sections(doc: str) -> dict[str, str]:
  """Google-style docstring sections: {'Args': text, ...}."""
  found = re.split(r'^(\w+):$', doc, flags=re.M)
  return dict(zip(found[1::2], found[2::2]))


def _entries(section: str) -> dict[str, str]:
  """`name: text` entries of an Args or Attributes section."""
  entries, name = {}, None
  for line in section.splitlines():
    match = re.match(r'^  (\w+): (.*)$', line)
    if match:
      name = match.group(1)
      entries[name] = match.group(2)
    elif name and line.startswith('    '):
      entries[name] += ' ' + line.strip()
  return entries


@pytest.mark.parametrize('name', sorted(optim.__all__))
def test_docstring(name):
  obj = getattr(optim, name)
  doc = inspect.getdoc(obj)
  sections = _sections(doc)
  if isinstance(obj, type):  # A state: every field with its shape and dtype.
    fields = _entries(sections['Attributes'])
    assert sorted(fields) == sorted(obj._fields)
    for field, text in fields.items():
      assert re.search(r'\b(u?int32|float32)\b.*\[|params', text), (field,
                                                                  text)
    return
  for section in ('Args', 'Returns', 'Example', 'References'):
    assert sections.get(section, '').strip(), section
  assert '>>>' in sections['Example']
  assert sorted(_entries(sections['Args'])) == sorted(
      inspect.signature(obj).parameters)


# --- sharded parameters: 8 CPU devices, Auto and Explicit mesh axes ----------


def _strip(spec) -> tuple[Any, ...]:
  """A PartitionSpec as a tuple without trailing Nones."""
  spec = tuple(spec)
  while spec and spec[-1] is None:
    spec = spec[:-1]
  return spec


def _mesh_check(axis_type_name: str) -> dict[str, str]:
  """Runs every transform on sharded params; 'ok' or the failure, per name.

  Runs in a process started with 8 forced host devices. The parameters `b`
  and `w` are split over the 8 devices along their first axis (stacked
  per-task updates along their second), `s` is replicated; init and three
  updates run under jit inside the mesh, and outputs and states must equal
  those of the plain transform on one device. With Explicit axes, outputs and
  params-shaped state fields must keep the params' shardings.
  """
  sharding = jax.sharding
  spec = sharding.PartitionSpec
  assert jax.device_count() == 8, jax.devices()
  axis_type = getattr(sharding.AxisType, axis_type_name)
  mesh = jax.make_mesh((8,), ('x',), axis_types=(axis_type,))
  specs = {'b': spec('x'), 's': spec(), 'w': spec('x', None)}

  def put(tree, lead):
    return jax.tree.map(
        lambda x, s: jax.device_put(
            x, sharding.NamedSharding(mesh, spec(*lead, *s))), tree, specs)

  def check_specs(tree):
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
      key = path[-1].key
      got = _strip(jax.typeof(leaf).sharding.spec)
      assert got == _strip(specs[key]), (path, got, specs[key])

  results = {}
  for name in NAMES:
    case, tx = CASES[name], TX[name]
    try:
      want_outs, want_states = _plain(name)  # One device.
      with jax.set_mesh(mesh):
        params = put(_params(), ())
        assert len(params['w'].sharding.device_set) == 8
        state = jax.jit(tx.init)(params)
        update = jax.jit(tx.update)
        for (updates, extras), want_out, want_state in zip(
            _inputs(case), want_outs, want_states):
          updates = put(updates, (None,) if case.stacked else ())
          out, state = update(updates, state, params, **extras)
          _close(out, want_out, rtol=1e-5, atol=1e-6)
          _close(state, want_state, rtol=1e-5, atol=1e-6)
          if axis_type_name == 'Explicit':
            check_specs(out)
            check_specs(getattr(state, 'reference', {}))
      results[name] = 'ok'
    except Exception as e:  # pylint: disable=broad-except
      results[name] = f'{type(e).__name__}: {e}'[:2000]
  return results


AXIS_TYPES = ('Auto', 'Explicit')


@pytest.mark.slow  # About 15 s of CPU: one process, 36 compilations.
def test_sharded_mesh():
  # A subprocess, so that this process (and the other tests in it) keep their
  # device count: the flag must be set before jax is imported.
  env = dict(os.environ)
  env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '')
                      + ' --xla_force_host_platform_device_count=8').strip()
  env['JAX_PLATFORMS'] = 'cpu'
  proc = subprocess.run(
      [sys.executable, os.path.abspath(__file__), *AXIS_TYPES], env=env,
      capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-4000:]
  results = json.loads(proc.stdout.strip().splitlines()[-1])
  assert sorted(results) == sorted(AXIS_TYPES)
  for axis_type in AXIS_TYPES:
    assert sorted(results[axis_type]) == NAMES
  failed = {(a, n): r for a, rs in results.items() for n, r in rs.items()
            if r != 'ok'}
  assert not failed, failed


if __name__ == '__main__':
  print(json.dumps({a: _mesh_check(a) for a in sys.argv[1:]}))
