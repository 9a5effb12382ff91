"""One launch per sweep: a relaunch waits for the earlier launch's jobs.

A job's record (`sweep_job.json`) names the host and pid of the process
running it. A sweep launched again while such a process still runs here
does not start the job a second time (two processes would write one
workdir): `experiments.sweep` marks it running, polls `adopt`, and takes
the result when the process ends (done: kept; unfinished: run again,
resuming from its checkpoints), running the other jobs meanwhile.
"""

import os
from typing import Any

from absl import logging

from distill.run import sweeps


def earlier_pid(job: sweeps.Job) -> int | None:
  """The pid of an earlier launch's process still running `job` here.

  Args:
    job: a job of this sweep.

  Returns:
    The pid its record names when the record says running on this host and
    that process is alive (and is not this one); else None.
  """
  rec = sweeps.read_record(job) or {}
  pid = rec.get('pid')
  if (rec.get('status') != 'running' or rec.get('host') != os.uname().nodename
      or not pid or pid == os.getpid()):
    return None
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return None
  except PermissionError:
    pass  # Alive, another user's.
  return pid


def still_running(jobs: list[sweeps.Job]) -> list[str]:
  """Jobs whose process from an earlier sweep still runs on this host."""
  out = []
  for job in jobs:
    pid = earlier_pid(job)
    if pid is not None:
      out.append(f'{job.kind} {job.name} (pid {pid})')
  return out


def adopt(sweep: Any) -> bool:
  """Takes the results of the earlier launch's jobs that ended.

  A job whose earlier process ended with its record saying done (same
  command and config, output there) is done; otherwise it is pending again
  and this launch runs it (resuming from its checkpoints).

  Args:
    sweep: `experiments.sweep.Sweep` (its `earlier`, `by_name`, `status`,
      `records`, `durations` and `on_done`, updated in place).

  Returns:
    True if any ended.
  """
  changed = False
  for key, pid in list(sweep.earlier.items()):
    job = sweep.by_name[key]
    if earlier_pid(job) == pid:
      continue
    del sweep.earlier[key]
    record = sweeps.read_record(job) or {}
    changed = True
    if sweeps.is_finished(job):
      sweep.status[key], sweep.records[key] = 'done', record
      if record.get('wall_s') is not None:
        sweep.durations[job.kind].append(record['wall_s'])
      logging.info('%s %s: adopted the result of the earlier launch',
                   job.kind, job.name)
      if sweep.on_done is not None:
        sweep.on_done(job)
    else:
      sweep.status[key] = 'pending'
      logging.warning('%s %s: the earlier launch ended it unfinished'
                      ' (status %s); running it again', job.kind, job.name,
                      record.get('status'))
  return changed
