"""Metric logging: a JSON-lines file and TensorBoard events (tensorboardX).

    writer = logs.MetricWriter(workdir)
    writer.write(step, {'teacher/hopper/loss': 0.3})
    writer.close()

Lines of `<workdir>/metrics.jsonl` look like
`{"run": 2, "step": 100, "time": 1712.0, "teacher/hopper/loss": 0.3}`;
events go to `<workdir>/tensorboard/`. Several runs in one workdir append to
the same file: each starts with a header line
`{"run": 2, "event": "start", "time": ..., "config_hash": ...}`
(`start_run`), and every metric line carries its run's number, so
`read_metrics(workdir, run=-1)` gives the last run's lines only. A line cut
by a kill is skipped (with a warning) when read, and the next run starts on
a new line.
"""

import json
import math
import os
import time
from typing import Any
import warnings

import numpy as np
import tensorboardX


class MetricWriter:
  """Appends scalar metrics to `metrics.jsonl` and TensorBoard events."""

  def __init__(self, workdir: str, *, tensorboard: bool = True):
    os.makedirs(workdir, exist_ok=True)
    self.path = os.path.join(workdir, 'metrics.jsonl')
    self.run = None
    cut = False
    if os.path.exists(self.path) and os.path.getsize(self.path):
      with open(self.path, 'rb') as f:
        f.seek(-1, os.SEEK_END)
        cut = f.read(1) != b'\n'  # The last line was cut by a kill.
    self._file = open(self.path, 'a', encoding='utf-8')
    if cut:
      self._file.write('\n')
    self._tb = (
        tensorboardX.SummaryWriter(os.path.join(workdir, 'tensorboard'))
        if tensorboard else None
    )

  def start_run(self, info: dict[str, Any]) -> int:
    """Writes a run's header line; later lines carry its number.

    Args:
      info: JSON-serializable facts about the run (e.g. its config hash).

    Returns:
      The run's number: one more than the file's last.
    """
    runs = [r['run'] for r in _read_lines(self.path, warn=False)
            if 'event' in r]
    self.run = (max(runs) if runs else 0) + 1
    self._file.write(json.dumps({'run': self.run, 'event': 'start',
                                 'time': time.time(), **info}) + '\n')
    self._file.flush()
    return self.run

  def write(self, step: int, metrics: dict[str, Any]) -> None:
    """Writes scalars (numbers or 0-d arrays) at `step`."""
    values = {k: float(np.asarray(v)) for k, v in metrics.items()}
    line = {'step': int(step), 'time': time.time()}
    if self.run is not None:
      line['run'] = self.run
    # JSON has no NaN/Inf; write them as strings so the line stays valid.
    line.update(
        {k: (v if math.isfinite(v) else str(v)) for k, v in values.items()}
    )
    self._file.write(json.dumps(line) + '\n')
    self._file.flush()
    if self._tb is not None:
      for k, v in values.items():
        self._tb.add_scalar(k, v, int(step))

  def flush(self) -> None:
    self._file.flush()
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    self._file.close()
    if self._tb is not None:
      self._tb.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def _read_lines(path: str, warn: bool = True) -> list[dict[str, Any]]:
  if not os.path.exists(path):
    return []
  rows = []
  with open(path, encoding='utf-8', errors='replace') as f:
    for i, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        rows.append(json.loads(line))
      except json.JSONDecodeError:
        if warn:
            warnings.warn(f'{path}: line {i} is not JSON (cut by a kill, or'
                        ' damaged); skipped', stacklevel=3)
  return rows


def read_metrics(workdir: str, *, run: int | None = None
                 ) -> list[dict[str, Any]]:
  """Reads the metric lines of `<workdir>/metrics.jsonl` back.

  Args:
    workdir: the run's directory.
    run: only this run's lines (-1: the last run's); None: every line.

  Returns:
    One dict per metric line (header lines left out), in file order.
  """
  rows = _read_lines(os.path.join(workdir, 'metrics.jsonl'))
  if run == -1:
    runs = [r['run'] for r in rows if 'event' in r]
    run = runs[-1] if runs else None
  return [r for r in rows if 'event' not in r
          and (run is None or r.get('run') == run)]


def read_runs(workdir: str) -> list[dict[str, Any]]:
  """Reads the runs' header lines of `<workdir>/metrics.jsonl`.

  Args:
    workdir: the run's directory.

  Returns:
    One dict per run (`run`, `time`, `config_hash`, ...), in order.
  """
  return [r for r in _read_lines(os.path.join(workdir, 'metrics.jsonl'))
          if 'event' in r]
