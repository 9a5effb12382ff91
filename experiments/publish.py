"""Copies a sweep's finished members into a directory kept in git.

`python -m experiments.sweep ... --publish=docs/study --publish_commit`
calls `publish_member` as each member finishes: its `results.json`, its job
record (the command that reproduces it) and `curves.json` (its distillation
history in windows: KL per teacher, the curriculum's choices, the surgery's
projections) go to `<dest>/members/<name>/`, `<dest>/sweep_state.json` is
rewritten with paths relative to the repository, the sweep is aggregated
there (`sweep.json`, `sweep.md`, plots) and, with `--publish_commit`, the
directory is committed. `<dest>` is itself a sweep directory:
`python -m experiments.aggregate <dest>` recomputes every interval from it.
"""

import json
import os
import subprocess
import sys
import time
from typing import Any

from absl import logging
import numpy as np

from distill import fileio
from distill import sweeps

CURVES = 'curves.json'
WINDOWS = 30  # windows of curves.json (100 steps each for 3000 steps)


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


def publish_member(job: sweeps.Job, root: str, dest: str) -> None:
  """Copies one finished member's results, record and curves to `dest`.

  Args:
    job: the finished member.
    root: the sweep directory.
    dest: the published sweep directory.
  """
  out = os.path.join(dest, 'members', job.name)
  os.makedirs(out, exist_ok=True)
  with open(job.output, encoding='utf-8') as f:
    results = json.load(f)
  fileio.write_json(os.path.join(out, 'results.json'), results)
  record = sweeps.read_record(job) or {}
  record = {k: record.get(k) for k in ('name', 'status', 'wall_s', 'started',
                                        'finished', 'host')}
  record['command'] = [_rel(a, root) for a in job.command]
  fileio.write_json(os.path.join(out, sweeps.RECORD), record)
  history = os.path.join(job.workdir, 'student', 'history.npz')
  if os.path.exists(history):
    fileio.write_json(os.path.join(out, CURVES), curves(history))


def publish_state(root: str, dest: str) -> None:
  """Writes `dest/sweep_state.json`: the sweep's, relative paths, commit."""
  with open(os.path.join(root, sweeps.STATE), encoding='utf-8') as f:
    text = f.read()
  state = json.loads(_rel(text, root))
  head = subprocess.run(['git', 'rev-parse', 'HEAD'], capture_output=True,
                        text=True, check=False)
  # The code the members ran (the sweep's working directory).
  state['code_commit'] = head.stdout.strip() if not head.returncode else None
  for job in state['jobs']:
    published = os.path.exists(os.path.join(dest, 'members', job['name'],
                                            'results.json'))
    if job['kind'] == 'member' and job['status'] in ('done', 'skipped'):
      job['status'] = 'done' if published else 'pending'
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

