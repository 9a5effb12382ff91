"""Tests of distill/train/loop.py: the host loop and its helpers."""

import collections
import os
import signal
import threading
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill.train import checkpointing
from distill.train import guards
from distill.train import loop


class _State(NamedTuple):
  step: jax.Array
  params: jax.Array


TRACES = collections.Counter()  # Traces of the fused update, by n.


def _make_update(n):
  """n fused steps of params <- params * 0.5 + x; metrics per call."""
  def update(state, x):
    TRACES[n] += 1
    def body(s, _):
      p = s.params * 0.5 + x
      return _State(s.step + 1, p), {'loss': jnp.sum(p)}
    state, metrics = jax.lax.scan(body, state, None, length=n)
    return state, jax.tree.map(lambda m: m[-1], metrics)
  return update


def _run(state, steps, events, **kw):
  """`loop.run` on the toy update, recording what it calls."""
  def check(state, metrics, *, prev, step, checked):
    events.append(('check', prev, step, checked))
    loss = float(metrics['loss'])
    if not np.isfinite(loss) or guards.count_nonfinite(state.params):
      raise FloatingPointError(f'toy: non-finite at step {step}')
    return loss

  def log(state, loss, step):
    del state
    events.append(('log', step))
    return {'loss': f'{loss:.3f}'}

  def save(state, step):
    assert int(state.step) == step
    events.append(('save', step))

  return loop.run(
      loop.fused(_make_update), state, (jnp.float32(1.0),),
      step=int(state.step), steps=steps, steps_per_dispatch=3, log_every=4,
      ckpt_every=6, desc='toy', what='toy', fault='toy', check=check,
      log=log, save=save,
      observe=lambda m, prev, step: events.append(('observe', prev, step)),
      **kw)


def test_cadence_of_dispatches_logs_and_checkpoints():
  TRACES.clear()
  events = []
  state = _run(_State(jnp.int32(0), jnp.zeros(2)), 10, events)
  assert int(state.step) == 10
  # Dispatches of 3, 3, 3, 1 steps; one compile per size.
  assert TRACES == {3: 1, 1: 1}
  assert [e[1:] for e in events if e[0] == 'observe'] == [
      (0, 3), (3, 6), (6, 9), (9, 10)]
  # Log at 4 and 8 crossed (steps 6 and 9) and at the end; checkpoints at
  # 6 crossed and at the end; every point is checked first, once.
  assert [e for e in events if e[0] != 'observe'] == [
      ('check', 3, 6, 0), ('log', 6), ('save', 6),
      ('check', 6, 9, 6), ('log', 9),
      ('check', 9, 10, 9), ('log', 10), ('save', 10)]
  # The same values as the updates one by one.
  want = np.zeros(2, np.float32)
  for _ in range(10):
    want = want * np.float32(0.5) + np.float32(1.0)
  np.testing.assert_array_equal(state.params, want)


def test_resumes_from_its_step_and_runs_nothing_at_the_end():
  events = []
  state = _run(_State(jnp.int32(6), jnp.zeros(2)), 9, events)
  assert int(state.step) == 9
  assert ('observe', 6, 9) in events and ('save', 9) in events
  events.clear()
  _run(state, 9, events)
  assert not events


def test_a_nan_fault_is_caught_before_the_save(monkeypatch):
  monkeypatch.setenv('DISTILL_FAULT', 'toy@3:nan')
  events = []
  with pytest.raises(FloatingPointError, match='non-finite at step 6'):
    _run(_State(jnp.int32(0), jnp.zeros(2)), 10, events)
  assert not [e for e in events if e[0] == 'save']


def test_a_stop_signal_saves_then_stops(monkeypatch):
  if threading.current_thread() is not threading.main_thread():
    pytest.skip('signal handlers can only be installed in the main thread')
  monkeypatch.setenv('DISTILL_FAULT', 'toy@3:term')
  events = []
  with guards.handle_signals():
    with pytest.raises(guards.Stopped) as info:
      _run(_State(jnp.int32(0), jnp.zeros(2)), 10, events)
  assert info.value.code == 128 + signal.SIGTERM
  assert (info.value.where, info.value.step) == ('toy', 3)
  assert events[-2:] == [('check', 0, 3, 0), ('save', 3)]


def test_a_population_of_one_is_the_members_own_program():
  def fn(w, x):
    return {'y': jnp.tanh(x @ w), 's': jnp.sum(w)}

  batched = lambda f: jax.vmap(f, in_axes=(0, None))
  w_P = jax.random.normal(jax.random.key(0), (3, 8, 8))
  x = jax.random.normal(jax.random.key(1), (5, 8))
  one = jax.jit(loop.over_members(fn, (0, None), batched))(w_P[:1], x)
  own = jax.jit(fn)(w_P[0], x)
  for k in own:
    assert one[k].shape == (1,) + own[k].shape
    np.testing.assert_array_equal(one[k][0], own[k])
  many = jax.jit(loop.over_members(fn, (0, None), batched))(w_P, x)
  chex.assert_trees_all_close(many, jax.vmap(fn, in_axes=(0, None))(w_P, x))


def test_stack_unstack_round_trip_and_counts():
  trees = [{'a': jnp.full((2,), i, jnp.float32), 'k': jax.random.key(i)}
           for i in range(6)]
  stacked = loop.stack(trees, (2, 3))
  assert stacked['a'].shape == (2, 3, 2) and stacked['k'].shape == (2, 3)
  back = loop.unstack(stacked, 6, num_lead=2)
  for got, want in zip(back, trees, strict=True):
    np.testing.assert_array_equal(got['a'], want['a'])
    np.testing.assert_array_equal(jax.random.key_data(got['k']),
                                  jax.random.key_data(want['k']))
  params = loop.stack([jnp.ones(3), jnp.array([1.0, jnp.nan, jnp.inf])])
  np.testing.assert_array_equal(loop.count_nonfinite(params), [0, 2])


def test_members_from_one_seed_or_several():
  one = loop.members('f', 3, 'd', 'w')
  assert one == loop.Members([3], ['d'], ['w'], [''], True)
  pop = loop.members('f', (1, 2), ['a', 'b'])
  assert pop == loop.Members([1, 2], ['a', 'b'], [None, None],
                             ['seed_1', 'seed_2'], False)
  # A population given as a sequence of one names no seed either.
  assert loop.members('f', [4], ['a']).labels == ['']
  with pytest.raises(ValueError, match='f: 2 seeds, 1 directories'):
    loop.members('f', (1, 2), ['a'])


def test_align_moves_the_steps_ahead_of_the_others_aside(tmp_path):
  dirs = [str(tmp_path / 'a'), str(tmp_path / 'b')]
  managers = [checkpointing.make_manager(d, keep=3) for d in dirs]
  tree = {'x': jnp.zeros(2)}
  for m, steps in zip(managers, ([1, 2], [1])):
    for s in steps:
      checkpointing.save(m, s, tree, {'step': s})
  assert loop.align(managers, ['a', 'b']) == 1
  assert [m.latest_step() for m in managers] == [1, 1]
  assert os.listdir(os.path.join(dirs[0], 'superseded')) == ['2']
  assert loop.align(managers[1:], ['b']) == 1
  for m in managers:
    m.close()
