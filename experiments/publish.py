"""Writes a sweep's finished members into a directory kept in git.

`python -m experiments.sweep ... --publish=docs/study --publish_commit`
calls `publish_member` as each member finishes: its line of
`<dest>/members.jsonl` (one JSON object per member, `sweeps.MEMBERS`: its
name, configuration and overrides; its record, that is the command that
reproduces it, the commit and state of the tree it ran in, its config's
hash, status and wall time; its `results.json`; and its curves, the
distillation history in windows: KL per teacher, the curriculum's choices,
the surgery's projections, with the tasks of its columns) is added or
replaced and the file rewritten atomically. `<dest>/sweep_state.json` is
rewritten with paths relative to the repository, the sweep is aggregated
there (`sweep.json`, `sweep.md`, plots) and, with `--publish_commit`, the
directory is committed. A study is one such directory, a handful of
files. `<dest>` reads as a sweep directory:
`python -m experiments.aggregate <dest>` recomputes every interval from it.

Publishing refuses code with uncommitted changes (`check_clean` before the
sweep, `publish_member` for a member whose record says its tree was dirty)
unless `--allow_dirty` is given: a published score should name the code
that produced it.
"""

from collections.abc import Sequence
import json
import os
import subprocess
import sys
import time
from typing import Any

from absl import logging
import numpy as np

from distill.io import fileio
from distill.run import provenance
from distill.run import sweeps

WINDOWS = 30  # windows of a member's curves (100 steps each for 3000 steps)


def _rel(text: str, root: str) -> str:
  """`text` with `python` for this interpreter and the sweep directory
  relative to the working directory when it lies inside it."""
  rel = os.path.relpath(root)
  if not rel.startswith(os.pardir):
    text = text.replace(root, rel)
  return text.replace(sys.executable, 'python')


def curves(history_path: str, windows: int = WINDOWS) -> dict[str, Any]:
  """The member's distillation history in `windows` equal windows.

  Args:
    history_path: the member's `student/history.npz`.
    windows: how many windows (fewer when there are fewer steps).

  Returns:
    `step_end` [W], `kl_mean` [W][T] (mean KL to each teacher on its probes),
    `choices` [W][T] (steps that learned from each teacher), and
    `projected` [W] (fraction of steps the surgery projected); keys whose
    series the curriculum or surgery does not record are left out.
  """
  with np.load(history_path) as h:
    hist = {k: h[k] for k in h.files}
  steps_N = hist['step']
  window = max(1, len(steps_N) // windows)
  n = len(steps_N) // window * window
  if not n:
    return {'window': window, 'step_end': []}
  out = {'window': window,
         'step_end': steps_N[window - 1:n:window].tolist()}
  if 'distill|kl' in hist:
    kl = hist['distill|kl'][:n]
    out['kl_mean'] = kl.reshape(-1, window, kl.shape[-1]).mean(1).tolist()
  if 'curriculum|choice' in hist and 'distill|kl' in hist:
    t = hist['distill|kl'].shape[-1]
    c = hist['curriculum|choice'][:n].reshape(-1, window)
    out['choices'] = [np.bincount(row[row >= 0], minlength=t).tolist()
                      for row in c]
  if 'surgery|projected' in hist:
    out['projected'] = hist['surgery|projected'][:n].reshape(
        -1, window).mean(1).tolist()
  return out


class DirtyTreeError(ValueError):
  """Code with uncommitted changes would be published as if committed."""


def check_clean(cwd: str, ignore: Sequence[str] = ()) -> None:
  """Refuses to publish from a working tree with uncommitted changes.

  Args:
    cwd: a directory of the repository whose code the members run.
    ignore: paths whose changes are results, not code (the publish
      directory).

  Raises:
    DirtyTreeError: naming the changed files and `--allow_dirty`.
  """
  state = provenance.code_state(cwd, ignore)
  if state['dirty']:
    raise DirtyTreeError(
        provenance.dirty_message('the working tree', state)
        + '; published results would not name the code that produced them.'
        ' Commit (or remove) these files, or pass --allow_dirty to publish'
        ' anyway (each member then records the files in its record).')


def member_entry(job: sweeps.Job, root: str,
                 allow_dirty: bool = False) -> dict[str, Any]:
  """One finished member's line of `members.jsonl`.

  Args:
    job: the finished member.
    root: the sweep directory.
    allow_dirty: accept a member whose record says it ran in a tree with
      uncommitted changes (its published record lists them).

  Returns:
    `name`, `configuration`, `overrides`, `record` (its `sweep_job.json`
    less the machine's paths and the full config: command relative to the
    repository, code, config_sha256, status, wall time, host), `results`
    (its `results.json`) and `curves` (see `curves`, with the tasks of its
    columns) when it has a distillation history.

  Raises:
    DirtyTreeError: the member ran in a dirty tree and not `allow_dirty`.
  """
  full = sweeps.read_record(job) or {}
  code = full.get('code') or {}
  if code.get('dirty') and not allow_dirty:
    raise DirtyTreeError(
        provenance.dirty_message(f'member {job.name} ran in a tree that',
                                 code)
        + '; not published (pass --allow_dirty to publish it anyway)')
  record = {k: full.get(k) for k in ('name', 'status', 'wall_s', 'started',
                                      'finished', 'host', 'code',
                                      'config_sha256', 'recipe_sha256')}
  record['command'] = [_rel(a, root) for a in job.command]
  entry = {'name': job.name, 'configuration': job.configuration,
           'overrides': dict(job.overrides), 'record': record,
           'results': fileio.read_json(job.output)}
  history = os.path.join(job.workdir, 'student', 'history.npz')
  if os.path.exists(history):
    entry['curves'] = {**curves(history),
                       'tasks': list(job.config.get('tasks') or [])}
  return entry


def write_members(dest: str, entries: Sequence[dict[str, Any]]) -> None:
  """Adds or replaces (by name) `entries` in `dest/members.jsonl`.

  Members already there keep their place; new ones are appended in order.
  The file is rewritten atomically, so a reader (or a `git add` meanwhile)
  sees the study before or after, never half a line.
  """
  members = sweeps.published_members(dest) or {}
  for entry in entries:
    members[entry['name']] = entry
  fileio.write_jsonl(os.path.join(dest, sweeps.MEMBERS), members.values())


def publish_member(job: sweeps.Job, root: str, dest: str,
                   allow_dirty: bool = False) -> None:
  """Writes one finished member's results, record and curves to `dest`.

  Args:
    job: the finished member.
    root: the sweep directory.
    dest: the published study's directory (`members.jsonl` in it).
    allow_dirty: publish a member whose record says it ran in a tree with
      uncommitted changes (its published record lists them).

  Raises:
    DirtyTreeError: the member ran in a dirty tree and not `allow_dirty`.
  """
  write_members(dest, [member_entry(job, root, allow_dirty)])


def publish_state(root: str, dest: str) -> None:
  """Writes `dest/sweep_state.json`: the sweep's, relative paths, commit."""
  with open(os.path.join(root, sweeps.STATE), encoding='utf-8') as f:
    text = f.read()
  state = json.loads(_rel(text, root))
  # The commands' paths are relative to the directory the sweep ran in; its
  # absolute path names this machine, not the published tree.
  if state.get('cwd') == os.getcwd():
    state['cwd'] = '.'
  head = subprocess.run(['git', 'rev-parse', 'HEAD'], capture_output=True,
                        text=True, check=False)
  # The checkout that published (the sweep's working directory) at this
  # moment: not evidence of the code each member ran, which its own record
  # holds (`code` in its line of members.jsonl).
  state['code_commit'] = head.stdout.strip() if not head.returncode else None
  published = sweeps.published_members(dest) or {}
  for job in state['jobs']:
    if job['kind'] == 'member' and job['status'] in ('done', 'skipped',
                                                     'published'):
      job['status'] = 'done' if job['name'] in published else 'pending'
  fileio.write_json(os.path.join(dest, sweeps.STATE), state)


def commit(dest: str, message: str, attempts: int = 5) -> bool:
  """`git add` and `git commit` of `dest` only; True when committed.

  Retries while another git command holds the index; a failure is logged
  and leaves the files for the next commit.
  """
  git = ['git', '-C', dest]
  for attempt in range(attempts):
    add = subprocess.run(git + ['add', '--', '.'], capture_output=True,
                         text=True, check=False)
    if add.returncode == 0:
      done = subprocess.run(git + ['commit', '-q', '-m', message, '--', '.'],
                            capture_output=True, text=True, check=False)
      if done.returncode == 0:
        return True
      if 'nothing to commit' in done.stdout + done.stderr:
        return False
      err = done.stderr
    else:
      err = add.stderr
    logging.warning('publish: git commit of %s failed (attempt %d): %s',
                    dest, attempt + 1, err.strip()[-300:])
    time.sleep(2.0 * (attempt + 1))
  return False


def provenance_note(state: dict[str, Any],
                    records: list[dict[str, Any]]) -> str:
  """What the published records say about the code the members ran.

  Args:
    state: the published `sweep_state.json`.
    records: every published member's record (`record` in
      `members.jsonl`).

  Returns:
    A paragraph: the commits, dirty trees and config hashes the members
    recorded, or that they recorded none (the first study's members ran
    before the records held them), beside the commit `sweep_state.json`
    names (the publishing checkout's, not necessarily the members').
  """
  code = [r.get('code') for r in records]
  with_code = [c for c in code if c and c.get('commit')]
  commit = state.get('code_commit')
  named = (f'`{sweeps.STATE}` names commit `{commit[:7]}`, the checkout that'
           ' published them, which is not evidence of the code each member'
           ' ran' if commit else f'`{sweeps.STATE}` names no commit')
  if not with_code:
    return (f'Provenance: none of the {len(records)} members\' records'
            ' (`record` in `members.jsonl`) holds the commit or the state of'
            ' the tree'
            ' it ran (members record them since this study); '
            + named + '. The code of these members is not recorded.')
  commits = sorted({c['commit'][:7] for c in with_code})
  dirty = sum(bool(c.get('dirty')) for c in with_code)
  hashed = sum(bool(r.get('config_sha256')) for r in records)
  return (f'Provenance: {len(with_code)} of {len(records)} members record'
          f' their code: commit(s) {", ".join(f"`{c}`" for c in commits)};'
          f' {dirty} ran in a tree with uncommitted changes (their'
          f' record lists the files); {hashed} record their'
          ' config\'s hash (`config_sha256`). ' + named + '.')
