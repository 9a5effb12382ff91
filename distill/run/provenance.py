"""What code and config a job ran: the commit, the tree's state, a hash.

A sweep job records these in its `sweep_job.json` when it starts
(`distill.run.sweeps.run_job`), and publishing copies them beside the member's
results (experiments/publish.py), so a published score names the code that
produced it. The first study's members ran before this existed; its report
says so instead of naming a commit.
"""

from collections.abc import Mapping, Sequence
import hashlib
import json
import os
import subprocess
from typing import Any


def _git(cwd: str, *args: str) -> str | None:
  try:
    out = subprocess.run(['git', '-C', cwd, *args], capture_output=True,
                         text=True, check=False)
  except OSError:  # No git on this machine.
    return None
  return out.stdout if out.returncode == 0 else None


def code_state(cwd: str, ignore: Sequence[str] = ()) -> dict[str, Any]:
  """The commit checked out in `cwd` and whether its tree is dirty.

  Args:
    cwd: a directory inside the repository whose code runs.
    ignore: paths (absolute, or relative to `cwd`) whose changes are not
      code: e.g. the directory a sweep publishes results into, which it
      writes and commits while members run.

  Returns:
    `{'commit': sha or None, 'dirty': bool or None, 'dirty_files': [path
    relative to the repository root, ...]}`: None values outside a git
    repository. Untracked files count as dirty (code may import them).
  """
  commit = _git(cwd, 'rev-parse', 'HEAD')
  top = _git(cwd, 'rev-parse', '--show-toplevel')
  status = _git(cwd, 'status', '--porcelain=v1', '-z',
                '--untracked-files=normal')
  if commit is None or top is None or status is None:
    return {'commit': None, 'dirty': None, 'dirty_files': []}
  top = top.strip()
  skip = []
  for path in ignore:
    rel = os.path.relpath(os.path.abspath(os.path.join(cwd, path)), top)
    if not rel.startswith(os.pardir):
      skip.append(rel.rstrip('/') + '/')
  files = []
  entries = status.split('\0')
  i = 0
  while i < len(entries):
    entry = entries[i]
    i += 1
    if len(entry) < 4:
      continue
    if entry[0] in 'RC':  # A rename's source path follows as its own entry.
      i += 1
    path = entry[3:]
    if not any((path.rstrip('/') + '/').startswith(s) for s in skip):
      files.append(path)
  return {'commit': commit.strip(), 'dirty': bool(files),
          'dirty_files': sorted(files)}


def config_hash(config: Mapping[str, Any]) -> str:
  """SHA-256 of a config's JSON values (keys sorted), as a hex string.

  Args:
    config: the config as JSON values (`distill.run.sweeps.config_json`).

  Returns:
    The digest: two jobs with the same hash ran the same config.
  """
  text = json.dumps(config, sort_keys=True, separators=(',', ':'))
  return hashlib.sha256(text.encode()).hexdigest()


# Config fields that name this machine's directories, not what runs: a
# sweep sets `teacher_workdir` to its own `teachers/<name>`.
MACHINE_FIELDS = ('teacher_workdir',)


def recipe_hash(config: Mapping[str, Any]) -> str:
  """`config_hash` of the config less `MACHINE_FIELDS`.

  The same member planned in another sweep directory, on another machine,
  has the same recipe hash (its `config_hash` differs by the path).

  Args:
    config: the config as JSON values.

  Returns:
    The digest.
  """
  return config_hash({k: v for k, v in config.items()
                      if k not in MACHINE_FIELDS})


def dirty_message(what: str, state: Mapping[str, Any], limit: int = 20
                  ) -> str:
  """'<what> has uncommitted changes: a.py, b.py (...)' for an error.

  Args:
    what: the subject ('the working tree', 'member x ran in a tree that').
    state: from `code_state`.
    limit: how many files to name before '... and N more'.

  Returns:
    The message.
  """
  files = list(state.get('dirty_files') or [])
  named = ', '.join(files[:limit])
  if len(files) > limit:
    named += f' ... and {len(files) - limit} more'
  return f'{what} has uncommitted changes: {named}'
