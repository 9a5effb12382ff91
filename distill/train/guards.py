"""What the host loops check between dispatches: stop requests, faults, NaNs.

Stop requests. `handle_signals()` (the runner enters it once) turns SIGTERM
(what a preempting scheduler sends) and SIGINT (Ctrl-C) into a `Stopped`
exception. Inside `deferred()` (a training loop) the signal only records the
request: the loop finishes its dispatch, saves a checkpoint, and raises
`Stopped` itself (a second signal stops at once). `Stopped` is a
`SystemExit` with status 128 + the signal number, as a shell reports a
process killed by that signal, so the command exits with a message and no
traceback, and a rerun of the same command continues.

    with guards.deferred():
      while step < steps:
        state = update(state)
        guards.fault(f'teachers@{step}')
        if guards.stop_requested():
          save(state)
          raise guards.Stopped(guards.stop_requested(), 'teachers', step)

Injected faults (tests). `DISTILL_FAULT=<point>[:<action>][,...]` makes
`fault(point)` act when the loop reaches `point`: `kill` (the default) sends
the process SIGKILL, as a crash or the kernel's OOM killer would; `term`
sends it SIGTERM; `raise` raises `InjectedFault`; `nan` returns True, and
the loop then poisons its parameters with NaN. Points are strings such as
`teachers@15` (after the dispatch that reached step 15), `distill/best@10`
(after the `best` checkpoint of step 10) or `stage/report/start`.

Non-finite numbers. `first_nonfinite` finds the first non-finite value of a
dict of per-step metrics; `count_nonfinite` counts the non-finite values of
a pytree on the device (one scalar to fetch).
"""

from collections.abc import Iterator, Mapping
import contextlib
import os
import signal
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

_ENV = 'DISTILL_FAULT'
_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_state = {'requested': None, 'deferred': 0, 'installed': False}


class Stopped(SystemExit):
  """A stop request (SIGTERM/SIGINT) was honoured; exit status 128 + signal.

  Attributes:
    signum: the signal number.
    where: what was running (a stage, 'teachers', 'distill').
    step: the step a checkpoint was saved at, or None.
  """

  def __init__(self, signum: int, where: str, step: int | None = None):
    super().__init__(128 + int(signum))
    self.signum, self.where, self.step = int(signum), where, step

  def __str__(self) -> str:
    name = signal.Signals(self.signum).name
    saved = (f'; checkpoint saved at step {self.step}'
             if self.step is not None else '')
    return (f'stopped by {name} during {self.where}{saved}; run the same'
            ' command again to continue')


class InjectedFault(RuntimeError):
  """Raised by `fault` for an injected 'raise' action."""


def _handler(signum, frame):
  del frame
  if _state['deferred'] and _state['requested'] is None:
    _state['requested'] = signum  # The loop saves, then stops.
    return
  raise Stopped(signum, 'the run')


@contextlib.contextmanager
def handle_signals() -> Iterator[None]:
  """Turns SIGTERM and SIGINT into `Stopped` (deferred inside loops).

  Only the main thread can install handlers; elsewhere (a test runner's
  worker thread) this does nothing.

  Yields:
    Nothing; the previous handlers are restored on exit.
  """
  try:
    previous = {s: signal.signal(s, _handler) for s in _SIGNALS}
  except ValueError:  # Not the main thread.
    yield
    return
  _state.update(requested=None, installed=True)
  try:
    yield
  finally:
    for s, h in previous.items():
      signal.signal(s, h)
    _state.update(requested=None, installed=False)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
  """A region (a training loop) where a stop signal waits for the loop.

  Yields:
    Nothing; inside, SIGTERM/SIGINT only record a request
    (`stop_requested`) that the loop honours after its dispatch.
  """
  _state['deferred'] += 1
  try:
    yield
  finally:
    _state['deferred'] -= 1


def stop_requested() -> int | None:
  """A pending stop request.

  Returns:
    The signal number, or None when no stop signal arrived.
  """
  return _state['requested']


def fault(point: str) -> bool:
  """Acts on an injected fault for `point` (see the module docstring).

  Args:
    point: where the caller is, e.g. 'teachers@15'.

  Returns:
    True when the action is 'nan' (the caller poisons its parameters);
    False when no fault is injected here.

  Raises:
    InjectedFault: for the 'raise' action.
    ValueError: an unknown action in `DISTILL_FAULT`.
  """
  spec = os.environ.get(_ENV)
  if not spec:
    return False
  for item in spec.split(','):
    where, _, action = item.strip().partition(':')
    if where != point:
      continue
    action = action or 'kill'
    if action == 'kill':
      os.kill(os.getpid(), signal.SIGKILL)
    elif action == 'term':
      os.kill(os.getpid(), signal.SIGTERM)
      return False
    elif action == 'raise':
      raise InjectedFault(f'{_ENV}: injected fault at {point}')
    elif action == 'nan':
      return True
    else:
      raise ValueError(f'{_ENV}={spec!r}: unknown action {action!r} (valid:'
                       ' kill, term, raise, nan)')
  return False


@jax.jit
def count_nonfinite(tree: Any) -> jax.Array:
  """Counts NaN/Inf values on the device (fetch one scalar to check).

  Args:
    tree: a pytree of arrays (integer leaves are skipped).

  Returns:
    An int32 scalar.
  """
  leaves = [x for x in jax.tree.leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.inexact)]
  return sum((jnp.sum(~jnp.isfinite(x)) for x in leaves), jnp.int32(0))


@jax.jit
def poison(tree: Any) -> Any:
  """Makes every float value NaN (the 'nan' fault).

  Args:
    tree: a pytree of arrays.

  Returns:
    The same structure, float leaves NaN, other leaves unchanged.
  """
  return jax.tree.map(
      lambda x: x * jnp.nan if jnp.issubdtype(x.dtype, jnp.inexact) else x,
      tree)


def first_nonfinite(metrics: Mapping[str, Any]) -> tuple[str, int] | None:
  """The first non-finite metric of a dict of per-step arrays.

  Args:
    metrics: name -> array whose leading axis is the step (scalars count as
      one step).

  Returns:
    (name, index of the first bad step) of the earliest bad step (ties: the
    first name in sorted order), or None when all are finite.
  """
  best = None
  for name in sorted(metrics):
    x = np.asarray(metrics[name])
    if not np.issubdtype(x.dtype, np.inexact) or not x.size:
      continue
    bad = ~np.isfinite(x.reshape(max(x.shape[:1] or (1,)), -1)).all(axis=1)
    if bad.any():
      i = int(np.argmax(bad))
      if best is None or i < best[1]:
        best = (name, i)
  return best
