"""The cache of generated datasets, shared by the embedded suites.

Both the locomotion suite (`distill.envs.suite`) and Meta-World MT10
(`distill.envs.mt10_suite`) generate their datasets on first use and keep
them in `$DISTILL_DATA_DIR` (default `~/.cache/distill`) as a D4RL HDF5
file with a JSON dataset card beside it:

    data = generated.load_or_generate(path, make)  # make() -> (data, card)

Both files are written atomically (`distill.io.fileio`); the card is written
last and records the file's SHA-256 (`file_sha256`), checked on every load:
a damaged or card-less file is moved aside with a warning and generated
again. `run_groups` steps groups of rollout jobs in worker processes;
`noise_stream` is the per-sub-environment noise generator both suites use.
"""

from collections.abc import Callable, Sequence
from importlib import metadata
import json
import os
import pickle
import subprocess
import sys
import tempfile
from typing import Any
import warnings

import numpy as np

from distill.data import d4rl
from distill.io import fileio

PACKAGES = ('distill', 'gymnasium', 'mujoco', 'jax', 'flax', 'numpy', 'h5py')


def data_dir() -> str:
  """Returns the cache root: `$DISTILL_DATA_DIR` or `~/.cache/distill`."""
  return os.path.expanduser(
      os.environ.get('DISTILL_DATA_DIR') or '~/.cache/distill')


def versions(packages: Sequence[str] = PACKAGES) -> dict[str, str | None]:
  """Installed versions of `packages` (None for a missing one)."""
  out = {}
  for pkg in packages:
    try:
      out[pkg] = metadata.version(pkg)
    except metadata.PackageNotFoundError:
      out[pkg] = None
  return out


def noise_stream(seed: int, env_id: int) -> np.random.Generator:
  """Sub-environment `env_id`'s noise stream (independent of the grouping)."""
  return np.random.Generator(np.random.PCG64(
      np.random.SeedSequence([int(seed), int(env_id)])))


def cache_problem(path: str, card_path: str) -> str | None:
  """None for an intact cache entry, '' for a missing one, else what is wrong.

  An entry is intact when both files exist, the card reads as JSON and the
  HDF5 file's SHA-256 equals the card's `file_sha256`.

  Args:
    path: the HDF5 file.
    card_path: its JSON card.

  Returns:
    See above.
  """
  if not os.path.isfile(path):
    return ''
  if not os.path.isfile(card_path):
    return 'has no dataset card'
  try:
    expected = fileio.read_json(card_path).get('file_sha256')
  except (fileio.DamagedFileError, AttributeError) as e:
    return f'has a damaged card ({e})'
  if expected is None:
    return 'has a card without a checksum'
  if fileio.sha256_file(path) != expected:
    return f'is damaged (its SHA-256 differs from {card_path})'
  return None


def card_path(path: str) -> str:
  """The dataset card beside the HDF5 file `path`."""
  return path[: -len('.hdf5')] + '.json'


def load_or_generate(path: str, make: Callable[[], tuple[dict, dict]], *,
                     who: str = 'suite') -> dict[str, Any]:
  """Reads a cached dataset, generating and caching it first if needed.

  Args:
    path: the HDF5 file (`<name>.hdf5`; the card is `<name>.json`).
    make: `() -> (data, card)`, the D4RL-format arrays and the card.
    who: names the cache in warnings.

  Returns:
    `distill.data.d4rl.load_hdf5(path)`: the arrays plus 'metadata/card'
    (the JSON card as generated, without `file_sha256`).
  """
  card_file = card_path(path)
  problem = cache_problem(path, card_file)
  if problem is not None:
    if problem:
      moved = [fileio.move_aside(p, 'damaged') for p in (path, card_file)
               if os.path.exists(p)]
      warnings.warn(f'{who}: the cached dataset {path} {problem}; moved it to'
                    f' {", ".join(moved)} and generating it again',
                    stacklevel=3)
    data, card = make()
    data['metadata/card'] = json.dumps(card, sort_keys=True)
    d4rl.write_hdf5(path, data, attrs=dict(name=card['name']))
    # The card holds the file's digest, so it is written last: a file
    # without its card is generated again.
    fileio.write_json(card_file, {**card,
                                  'file_sha256': fileio.sha256_file(path)})
  return d4rl.load_hdf5(path)


def _worker_main(in_path: str, out_path: str) -> None:
  """Entry point of a worker process: runs its pickled jobs."""
  with open(in_path, 'rb') as f:
    fn, jobs = pickle.load(f)
  results = [fn(*job) for job in jobs]
  with open(out_path, 'wb') as f:
    pickle.dump(results, f, protocol=pickle.HIGHEST_PROTOCOL)


def run_groups(fn: Callable[..., Any],
               groups: list[list[tuple]]) -> list[list[Any]]:
  """Runs `fn(*job)` for every job: group 0 here, the others in processes.

  A group is a list of argument tuples; the result is, per group, the list
  of `fn`'s results. `fn` must be a module-level function (it is pickled by
  name). Workers are plain subprocesses (not multiprocessing), so the
  caller's main module is never re-imported and JAX is never forked; one
  process serves all of a group's jobs. A worker that fails is rerun here,
  with a warning.

  Args:
    fn: the job function.
    groups: argument tuples per group.

  Returns:
    Per group, per job, `fn`'s result.
  """

  def run_here(jobs):
    return [fn(*job) for job in jobs]

  if len(groups) == 1:
    return [run_here(groups[0])]
  with tempfile.TemporaryDirectory(prefix='distill-suite-') as tmp:
    procs = []
    try:
      for k, jobs in enumerate(groups[1:]):
        in_path = os.path.join(tmp, f'in{k}.pkl')
        out_path = os.path.join(tmp, f'out{k}.pkl')
        with open(in_path, 'wb') as f:
          pickle.dump((fn, jobs), f, protocol=pickle.HIGHEST_PROTOCOL)
        err = open(os.path.join(tmp, f'err{k}.txt'), 'wb')
        procs.append((subprocess.Popen(
            [sys.executable, '-c',
             'import sys; from distill.envs import generated;'
             ' generated._worker_main(sys.argv[1], sys.argv[2])',
             in_path, out_path],
            stdout=subprocess.DEVNULL, stderr=err), out_path, err, jobs))
      results = [run_here(groups[0])]
      for proc, out_path, err, jobs in procs:
        proc.wait()
        err.close()
        if proc.returncode == 0 and os.path.isfile(out_path):
          with open(out_path, 'rb') as f:
            results.append(pickle.load(f))
        else:
          with open(err.name, 'rb') as f:
            tail = f.read()[-2000:].decode(errors='replace')
          warnings.warn(f'suite: a rollout worker failed (exit'
                        f' {proc.returncode}); rerunning it in this process.'
                        f' Its stderr ends with:\n{tail}', stacklevel=2)
          results.append(run_here(jobs))
    finally:
      for proc, _, err, _ in procs:
        if proc.poll() is None:
          proc.kill()
          proc.wait()
        err.close()
  return results
