"""Metric logging: a JSON-lines file and TensorBoard events (tensorboardX).

    writer = logs.MetricWriter(workdir)
    writer.write(step, {'teacher/hopper/loss': 0.3})
    writer.close()

Lines of `<workdir>/metrics.jsonl` look like
`{"step": 100, "time": 1712.0, "teacher/hopper/loss": 0.3}`; events go to
`<workdir>/tensorboard/`.
"""

import json
import math
import os
import time
from typing import Any

import numpy as np
import tensorboardX


class MetricWriter:
  """Appends scalar metrics to `metrics.jsonl` and TensorBoard events."""

  def __init__(self, workdir: str, *, tensorboard: bool = True):
    os.makedirs(workdir, exist_ok=True)
    self.path = os.path.join(workdir, 'metrics.jsonl')
    self._file = open(self.path, 'a', encoding='utf-8')
    self._tb = (
        tensorboardX.SummaryWriter(os.path.join(workdir, 'tensorboard'))
        if tensorboard else None
    )

  def write(self, step: int, metrics: dict[str, Any]) -> None:
    """Writes scalars (numbers or 0-d arrays) at `step`."""
    values = {k: float(np.asarray(v)) for k, v in metrics.items()}
    line = {'step': int(step), 'time': time.time()}
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


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  """Reads `<workdir>/metrics.jsonl` back (one dict per line)."""
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return []
  with open(path, encoding='utf-8') as f:
    return [json.loads(line) for line in f if line.strip()]
