"""PNG plots of aggregates (matplotlib's Agg canvas, no global pyplot state).

`figure` and `save_png` are the shared plumbing (also of the run's plots in
`distill.report.run_report`); the `plot_*` functions draw what
`distill.report.aggregate` computes: estimates with their intervals,
performance profiles and per-task scores.
"""

from collections.abc import Mapping, Sequence
import io
from typing import Any

import numpy as np

from distill.io.fileio import write_atomic


def figure(width: float = 6.0, height: float = 3.5):
  """A bare Figure with an Agg canvas (touches no global pyplot state)."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  fig = Figure(figsize=(width, height), dpi=110)
  FigureCanvasAgg(fig)
  return fig


def label_axes(ax, *, xlabel: str, ylabel: str,
               legend_size: int | None = 8) -> None:
  """Axis labels, a legend (None: no legend) and a light grid."""
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  if legend_size is not None:
    ax.legend(fontsize=legend_size)
  ax.grid(alpha=0.3)


def save_png(fig, path: str) -> None:
  """Writes `fig` as a PNG atomically (a reader never sees half a file)."""
  buf = io.BytesIO()
  fig.tight_layout()
  fig.savefig(buf, format='png')
  write_atomic(path, buf.getvalue())


def plot_estimates(path: str, estimates: Mapping[str, Mapping[str, Any]], *,
                   xlabel: str, reference: float | None = None) -> None:
  """One row per configuration: the point and its 95% interval, if any.

  Args:
    path: PNG file to write.
    estimates: configuration -> `{'value', 'ci_low', 'ci_high'}`.
    xlabel: what the values are.
    reference: draws a vertical line there (e.g. 0.5 for P(X > Y)).
  """
  names = list(estimates)
  fig = figure(height=max(2.0, 0.45 * len(names) + 1.0))
  ax = fig.add_subplot(1, 1, 1)
  for i, name in enumerate(names):
    est = estimates[name]
    if est.get('ci_low') is not None:
      ax.plot([est['ci_low'], est['ci_high']], [i, i], color='C0', lw=6,
              alpha=0.4, solid_capstyle='butt')
    ax.plot([est['value']], [i], 'o', color='C0' if est.get('ci_low')
            is not None else 'C3')
  if reference is not None:
    ax.axvline(reference, color='gray', ls='--', lw=1)
  labels = [n if 'ci_low' in estimates[n] else f'{n} (no interval)'
            for n in names]
  ax.set_yticks(range(len(names)), labels, fontsize=7)
  ax.invert_yaxis()
  ax.set_xlabel(xlabel)
  ax.grid(axis='x', alpha=0.3)
  save_png(fig, path)


def plot_profiles(path: str, taus_U: Sequence[float],
                  profiles: Mapping[str, Mapping[str, Any]], *,
                  xlabel: str = 'D4RL-normalized score tau') -> None:
  """Performance profiles: fraction of runs x tasks above tau, with bands.

  Args:
    path: PNG file to write.
    taus_U: thresholds (x axis).
    profiles: configuration -> `performance_profile(...)`.
    xlabel: what tau is.
  """
  fig = figure(width=7.0, height=4.0)
  ax = fig.add_subplot(1, 1, 1)
  for i, (name, prof) in enumerate(profiles.items()):
    color = f'C{i % 10}'
    ax.plot(taus_U, prof['fraction'], color=color, lw=1.5, label=name)
    if prof.get('ci_low') is not None:
      ax.fill_between(taus_U, prof['ci_low'], prof['ci_high'], color=color,
                      alpha=0.15)
  ax.set_ylim(0, 1.02)
  label_axes(ax, xlabel=xlabel, ylabel='fraction of runs x tasks > tau',
             legend_size=7)
  save_png(fig, path)


def plot_task_scores(
    path: str, tasks: Sequence[str],
    columns: Mapping[str, Sequence[float | None]], *,
    ylabel: str = 'D4RL-normalized score (mean over seeds)') -> None:
  """Grouped bars: one group per task, one bar per configuration.

  Args:
    path: PNG file to write.
    tasks: the tasks (x axis).
    columns: label -> one score per task (None: missing).
    ylabel: what the scores are.
  """
  fig = figure(width=max(6.0, 1.5 * len(tasks) + 3.0), height=4.0)
  ax = fig.add_subplot(1, 1, 1)
  x = np.arange(len(tasks))
  width = 0.8 / max(len(columns), 1)
  for i, (label, values) in enumerate(columns.items()):
    ax.bar(x + (i - (len(columns) - 1) / 2) * width,
           [np.nan if v is None else v for v in values], width, label=label)
  ax.set_xticks(x, tasks, rotation=15, fontsize=8)
  ax.set_ylabel(ylabel)
  ax.legend(fontsize=7)
  ax.grid(axis='y', alpha=0.3)
  save_png(fig, path)
