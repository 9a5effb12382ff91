"""Tests of distill/train/guards.py: stop signals, injected faults, NaNs."""

import os
import signal
import threading

import jax.numpy as jnp
import numpy as np
import pytest

from distill.train import guards


@pytest.fixture(name='main_thread')
def fixture_main_thread():
  if threading.current_thread() is not threading.main_thread():
    pytest.skip('signal handlers can only be installed in the main thread')


def test_a_signal_in_a_loop_waits_for_its_checkpoint(main_thread):
  del main_thread
  before = signal.getsignal(signal.SIGTERM)
  with guards.handle_signals():
    with guards.deferred():
      os.kill(os.getpid(), signal.SIGINT)
      assert guards.stop_requested() == signal.SIGINT  # Nothing raised yet.
      with pytest.raises(guards.Stopped):  # A second signal: at once.
        os.kill(os.getpid(), signal.SIGTERM)
  assert signal.getsignal(signal.SIGTERM) is before
  assert guards.stop_requested() is None


def test_a_signal_outside_a_loop_stops_at_once(main_thread):
  del main_thread
  with guards.handle_signals():
    with pytest.raises(guards.Stopped) as info:
      os.kill(os.getpid(), signal.SIGTERM)
  stop = info.value
  assert isinstance(stop, SystemExit)
  assert stop.code == 128 + signal.SIGTERM
  stop.where, stop.step = 'distill', 30
  assert str(stop) == ('stopped by SIGTERM during distill; checkpoint saved'
                       ' at step 30; run the same command again to continue')


def test_fault_actions(monkeypatch):
  monkeypatch.delenv('DISTILL_FAULT', raising=False)
  assert guards.fault('teachers@10') is False
  monkeypatch.setenv('DISTILL_FAULT', 'teachers@5:raise, distill@10:nan')
  assert guards.fault('teachers@10') is False
  assert guards.fault('distill@10') is True
  with pytest.raises(guards.InjectedFault, match='teachers@5'):
    guards.fault('teachers@5')
  monkeypatch.setenv('DISTILL_FAULT', 'teachers@5:explode')
  with pytest.raises(ValueError, match="unknown action 'explode'"):
    guards.fault('teachers@5')


def test_nonfinite_checks():
  tree = {'a': jnp.ones(3), 'b': jnp.array([1.0, jnp.nan, jnp.inf]),
          'i': jnp.arange(3)}
  assert int(guards.count_nonfinite(tree)) == 2
  poisoned = guards.poison(tree)
  assert int(guards.count_nonfinite(poisoned)) == 6
  np.testing.assert_array_equal(poisoned['i'], np.arange(3))
  metrics = {'train/loss': np.array([1.0, 2.0, np.nan]),
             'distill/kl': np.array([[0.1, 0.2], [np.inf, 0.0], [0, 0]]),
             'curriculum/choice': np.array([0, 1, 0])}
  assert guards.first_nonfinite(metrics) == ('distill/kl', 1)
  assert guards.first_nonfinite({'x': np.float32(3)}) is None
  assert guards.first_nonfinite({'x': np.zeros(0)}) is None
