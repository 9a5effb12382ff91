r"""Random kills and random damage against an uninterrupted run.

  python -m experiments.chaos --workdir=/tmp/chaos --kills=12 --damages=12

What `tests/faults_test.py` does at chosen points, this does at random ones:

1. the reference: one uninterrupted run of the config (default
   `configs/mt_distill.py:smoke`), timed;
2. kills: one workdir started again and again, each time killed after a
   random time within the reference's wall time (SIGKILL, or SIGTERM with
   probability `--term_fraction`), until `--kills` kills have landed; then
   run to the end;
3. damage: `--damages` times, a copy of the reference gets random bytes
   written at a random offset of one random file (any file of the workdir:
   checkpoints, stamps, JSON, history, plots; or a cached dataset), and is
   run again.

Every final run must exit 0 with the reference's `results.json` scores and
bit-identical parameters (teachers, student `last` and `best`) and
distillation history. A run that refuses (nonzero exit) counts as surviving
only if its message names the damaged file and nothing else was lost (a
rerun after removing that file ends identical). One JSON line per trial,
then a summary line: tried, survived, lost.
"""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

from absl import app
from absl import flags
import numpy as np

_WORKDIR = flags.DEFINE_string('workdir', None, 'Scratch directory.',
                               required=True)
_CONFIG = flags.DEFINE_string('config', 'configs/mt_distill.py:smoke',
                              'Config of the runs.')
_KILLS = flags.DEFINE_integer('kills', 10, 'Kills that must land.')
_DAMAGES = flags.DEFINE_integer('damages', 10, 'Damaged copies to rerun.')
_TERM = flags.DEFINE_float('term_fraction', 0.3, 'Share of SIGTERM kills.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the random points.')
_FLAGS = flags.DEFINE_multi_string('run_flag', [], 'More flags for the runs.')

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Not outputs: logs, and the workdir's lock (distill/io/lock.py).
LOGS = ('metrics.jsonl', 'tensorboard', 'sweep_job.log', '.lock')


def _env(workdir: str) -> dict[str, str]:
  return dict(os.environ,
              DISTILL_DATA_DIR=os.path.join(workdir, 'data'),
              JAX_COMPILATION_CACHE_DIR=os.path.join(workdir, 'jax-cache'),
              JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0')


def _cmd(workdir: str) -> list[str]:
  return [sys.executable, '-m', 'experiments.run', f'--config={_CONFIG.value}',
          f'--workdir={workdir}', *_FLAGS.value]


def _run(root: str, workdir: str, kill_after: float | None = None,
         sig: int = signal.SIGKILL) -> tuple[int, str, float]:
  """Runs to the end, or kills after `kill_after` s; (rc, stderr, wall)."""
  start = time.time()
  with open(os.path.join(root, 'last_stderr.txt'), 'w+',
            encoding='utf-8') as err:
    proc = subprocess.Popen(_cmd(workdir), cwd=ROOT, env=_env(root),
                            stdout=subprocess.DEVNULL, stderr=err)
    try:
      rc = proc.wait(timeout=kill_after)
    except subprocess.TimeoutExpired:
      proc.send_signal(sig)
      rc = proc.wait()
    err.seek(0)
    return rc, err.read(), time.time() - start


def _leaves(directory: str) -> list[np.ndarray]:
  from distill.train import checkpointing  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  return jax.tree.leaves(checkpointing.load_policy(directory)[1])


def compare(workdir: str, reference: str) -> str:
  """'' when the run equals the reference, else what differs."""
  try:
    got, want = (json.load(open(os.path.join(d, 'results.json'),
                                encoding='utf-8'))
                 for d in (workdir, reference))
  except (OSError, ValueError) as e:
    return f'results.json: {e}'
  for key in ('tasks', 'aggregate', 'curriculum', 'surgery',
              'student_params', 'teacher_params'):
    if got.get(key) != want.get(key):
      return f'results.json[{key!r}] differs'
  subs = [os.path.join('teachers', t) for t in got['tasks']]
  for sub in subs + ['student/last', 'student/best']:
    try:
      a, b = (_leaves(os.path.join(d, sub)) for d in (workdir, reference))
    except Exception as e:  # pylint: disable=broad-except
      return f'{sub}: {type(e).__name__}: {e}'
    if len(a) != len(b) or any(not np.array_equal(x, y)
                               for x, y in zip(a, b)):
      return f'{sub}: parameters differ'
  with np.load(os.path.join(workdir, 'student', 'history.npz')) as h1, \
      np.load(os.path.join(reference, 'student', 'history.npz')) as h2:
    if sorted(h1.files) != sorted(h2.files) or any(
        not np.array_equal(h1[k], h2[k]) for k in h1.files):
      return 'student/history.npz differs'
  return ''


def _emit(record: dict) -> None:
  print(json.dumps(record), flush=True)


def kills(root: str, reference: str, wall: float, rng: random.Random
          ) -> tuple[int, int]:
  """Kills one workdir `--kills` times, then finishes it; (landed, ok)."""
  workdir = os.path.join(root, 'killed')
  shutil.rmtree(workdir, ignore_errors=True)
  landed = 0
  while landed < _KILLS.value:
    after = rng.uniform(0.5, wall)
    sig = signal.SIGTERM if rng.random() < _TERM.value else signal.SIGKILL
    rc, err, took = _run(root, workdir, after, sig)
    if rc == 0:  # finished before the kill: start over from empty
      shutil.rmtree(workdir)
      continue
    landed += 1
    clean = sig != signal.SIGTERM or (rc == 128 + sig
                                      and 'Traceback' not in err)
    _emit({'trial': 'kill', 'n': landed, 'after_s': round(after, 2),
           'signal': signal.Signals(sig).name, 'rc': rc,
           'took_s': round(took, 1), 'clean_exit': clean})
  rc, err, _ = _run(root, workdir)
  diff = 'rerun failed: ' + err[-500:] if rc else compare(workdir, reference)
  _emit({'trial': 'kill', 'final': True, 'rc': rc, 'identical': not diff,
         'difference': diff})
  return landed, landed if not diff else 0


def _files(workdir: str) -> list[str]:
  out = []
  for dirpath, dirs, files in os.walk(workdir):
    dirs[:] = [d for d in dirs if d not in LOGS and '.stale' not in d]
    out += [os.path.join(dirpath, f) for f in files if f not in LOGS
            and '.stale' not in f]
  return sorted(out)


def damages(root: str, reference: str, rng: random.Random
            ) -> tuple[int, int]:
  """Damages copies of the reference; (tried, survived)."""
  survived = 0
  for n in range(1, _DAMAGES.value + 1):
    workdir = os.path.join(root, 'damaged')
    shutil.rmtree(workdir, ignore_errors=True)
    shutil.copytree(reference, workdir)
    # The workdir's files and the cached datasets the run reads.
    path = rng.choice(_files(workdir) + _files(os.path.join(root, 'data')))
    size = os.path.getsize(path)
    offset = rng.randrange(max(size, 1))
    data = rng.randbytes(rng.randint(1, 64))
    with open(path, 'r+b') as f:
      f.seek(offset)
      f.write(data)
    rel = os.path.relpath(path, root if path.startswith(
        os.path.join(root, 'data')) else workdir)
    rc, err, _ = _run(root, workdir)
    named = rel in err or path in err
    if rc:
      # Refused: it must name the file; without it the run must recover.
      if named:
        os.remove(path)
        rc, err, _ = _run(root, workdir)
    diff = 'rerun failed: ' + err[-500:] if rc else compare(workdir,
                                                            reference)
    ok = not diff
    survived += ok
    _emit({'trial': 'damage', 'n': n, 'file': rel, 'offset': offset,
           'bytes': len(data), 'named': named, 'identical': ok,
           'difference': diff})
  return _DAMAGES.value, survived


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  if _KILLS.value < 0 or _DAMAGES.value < 0:
    raise app.UsageError('--kills and --damages must be >= 0')
  root = os.path.abspath(_WORKDIR.value)
  os.makedirs(root, exist_ok=True)
  rng = random.Random(_SEED.value)
  reference = os.path.join(root, 'reference')
  if not os.path.exists(os.path.join(reference, 'results.json')):
    shutil.rmtree(reference, ignore_errors=True)
    _run(root, reference)  # fills the dataset and compilation caches
    shutil.rmtree(reference)
    rc, err, wall = _run(root, reference)
    if rc:
      raise RuntimeError(f'the reference run failed: {err[-2000:]}')
  else:
    wall = json.load(open(os.path.join(root, 'reference_wall.json'),
                          encoding='utf-8'))['wall_s']
  with open(os.path.join(root, 'reference_wall.json'), 'w',
            encoding='utf-8') as f:
    json.dump({'wall_s': wall}, f)
  _emit({'trial': 'reference', 'wall_s': round(wall, 1),
         'config': _CONFIG.value})
  k_tried, k_ok = kills(root, reference, wall, rng)
  d_tried, d_ok = damages(root, reference, rng)
  _emit({'summary': True, 'config': _CONFIG.value, 'kills': k_tried,
         'kills_survived': k_ok, 'damages': d_tried,
         'damages_survived': d_ok, 'lost': k_tried - k_ok + d_tried - d_ok})


if __name__ == '__main__':
  app.run(main)
