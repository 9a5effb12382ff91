r"""Bench section `checksums`: what integrity checks and signals cost a run.

`bench_checksums` runs `experiments.run` in a child process,

  python -m experiments.benches.checksums --workdir=DIR [--config...]

which times every SHA-256 (checkpoint manifests, dataset cards and cache
checks, stage digests) and every per-dispatch guard (`guards.stop_requested`,
`guards.fault`, the signal handlers' entry) of the run and prints one
`checksums` line: the run's wall time, the seconds spent in each and their
share of the wall time. The run itself is the ordinary one (the
`--config...` arguments pass through).
"""

import hashlib
import os
import subprocess
import sys
import tempfile
import time

from absl import app

from distill.train import guards
from experiments.benches import common

_TOTALS = {'sha256_s': 0.0, 'sha256_bytes': 0, 'guards_s': 0.0,
           'guard_calls': 0}
_SHA256 = hashlib.sha256


class _TimedSha256:
  """hashlib.sha256 with the time of every update counted."""

  def __init__(self, data: bytes = b'', **kwargs):
    self._h = _SHA256(**kwargs)
    if data:
      self.update(data)

  def update(self, data) -> None:
    start = time.perf_counter()
    self._h.update(data)
    _TOTALS['sha256_s'] += time.perf_counter() - start
    _TOTALS['sha256_bytes'] += memoryview(data).nbytes

  def hexdigest(self) -> str:
    return self._h.hexdigest()

  def digest(self) -> bytes:
    return self._h.digest()


def _timed(fn):
  def wrapper(*args, **kwargs):
    start = time.perf_counter()
    try:
      return fn(*args, **kwargs)
    finally:
      _TOTALS['guards_s'] += time.perf_counter() - start
      _TOTALS['guard_calls'] += 1
  return wrapper


def bench_checksums(workdir: str | None, config_args: list[str]) -> None:
  """Runs the child (see the module docstring) and prints its line.

  Args:
    workdir: the run's workdir; None: a new temporary directory.
    config_args: `--config...` arguments of the run.
  """
  workdir = workdir or os.path.join(tempfile.mkdtemp(prefix='bench_'), 'run')
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.benches.checksums',
       f'--workdir={workdir}', *config_args], stdout=subprocess.PIPE,
      text=True, check=False)
  lines = [x for x in proc.stdout.splitlines() if x.startswith('{')]
  if proc.returncode or not lines:
    raise RuntimeError(f'bench checksums: the run exited {proc.returncode}:'
                       f'\n{proc.stdout[-3000:]}')
  print(lines[-1], flush=True)


def main() -> None:
  hashlib.sha256 = _TimedSha256
  for name in ('stop_requested', 'fault'):
    setattr(guards, name, _timed(getattr(guards, name)))
  from experiments import run  # pylint: disable=g-import-not-at-top
  start = time.time()
  code = 0
  try:
    app.run(run.main)
  except SystemExit as e:
    code = e.code or 0
  wall = time.time() - start
  common.emit(
      'checksums', argv=sys.argv[1:], exit=code, wall_s=round(wall, 2),
      sha256_s=round(_TOTALS['sha256_s'], 3),
      sha256_mb=round(_TOTALS['sha256_bytes'] / 1e6, 1),
      guards_s=round(_TOTALS['guards_s'], 4),
      guard_calls=_TOTALS['guard_calls'],
      overhead_fraction=round(
          (_TOTALS['sha256_s'] + _TOTALS['guards_s']) / wall, 5))
  sys.exit(code)


if __name__ == '__main__':
  main()
