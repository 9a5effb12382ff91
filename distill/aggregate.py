r"""Aggregates over runs and tasks: IQM, intervals, improvement, profiles.

  python -m experiments.aggregate runs/study

The statistics of Agarwal et al. 2021 through `rliable`: the interquartile
mean (IQM) of normalized scores over runs x tasks with 95% stratified
bootstrap intervals (runs resampled within each task), the probability that
one configuration improves on another, and performance profiles (the
fraction of runs x tasks scoring above tau). One run has no spread to
resample, so with fewer than two runs no interval is reported (`n=1`);
`format_estimate` writes it that way in every table.

`summarize` turns a sweep's runs into the contents of `sweep.json` and
`write_sweep_report` writes it with `sweep.md` and the plots
(`experiments.aggregate`, also run at the end of `experiments.sweep`);
`interval_estimates` and `format_estimate` serve the single-run `report.md`
as well.

Shapes: R runs (seeds), T tasks, U thresholds tau.

References:
  Agarwal, Schwarzer, Castro, Courville, Bellemare 2021, "Deep Reinforcement
  Learning at the Edge of the Statistical Precipice".
"""

from collections.abc import Mapping, Sequence
import io
import math
import os
from typing import Any
import warnings

import numpy as np

from distill.fileio import write_atomic
from distill.fileio import write_json

CONFIDENCE = 0.95
# Stratified bootstrap, percentile intervals: what the rliable paper uses.
METHOD = 'percentile'


def _scores(scores_RxT: Any, name: str = 'scores_RxT') -> np.ndarray:
  scores_RxT = np.asarray(scores_RxT, dtype=np.float64)
  if scores_RxT.ndim != 2 or not scores_RxT.size:
    raise ValueError(f'{name} must be a non-empty [runs, tasks] array, got'
                     f' shape {scores_RxT.shape}')
  if not np.isfinite(scores_RxT).all():
    raise ValueError(f'{name} has non-finite scores: {scores_RxT.tolist()}')
  return scores_RxT


def _bootstrap(data: np.ndarray | tuple[np.ndarray, ...], fn, *, reps: int,
               seed: int) -> tuple[np.ndarray, np.ndarray]:
  """rliable's stratified bootstrap: (point [...], interval [2, ...]).

  rliable 1.2.0 draws its resampling indices from NumPy's global generator
  (`np.random.choice` in `StratifiedBootstrap.update_indices`), not from the
  `random_state` it is given. So the draws are seeded here through the
  global generator, and its previous state is restored afterwards: the same
  inputs and seed give the same interval in any process, and the caller's
  random stream is left as it was. Recomputing an interval by hand:
  `np.random.seed(seed)`, then `rly.get_interval_estimates(...)`.
  """
  from rliable import library as rly  # pylint: disable=g-import-not-at-top
  if reps < 1:
    raise ValueError(f'bootstrap reps must be >= 1, got {reps}')
  saved = np.random.get_state()
  try:
    np.random.seed(seed)
    with warnings.catch_warnings():
      # arch deprecates `random_state` for NumPy Generators; rliable still
      # passes it on.
      warnings.simplefilter('ignore', FutureWarning)
      point, interval = rly.get_interval_estimates(
          {'x': data}, fn, method=METHOD, reps=reps,
          confidence_interval_size=CONFIDENCE,
          random_state=np.random.RandomState(seed))
  finally:
    np.random.set_state(saved)
  return np.asarray(point['x']), np.asarray(interval['x'])


def iqm(scores_RxT: Any) -> float:
  """Interquartile mean over all runs and tasks (25% trimmed each side).

  Args:
    scores_RxT: normalized scores, one row per run, one column per task.

  Returns:
    The IQM (rliable's `aggregate_iqm`).
  """
  from rliable import metrics  # pylint: disable=g-import-not-at-top
  return float(metrics.aggregate_iqm(_scores(scores_RxT)))


def _estimate(value: float, low: float | None = None,
              high: float | None = None) -> dict[str, float]:
  if low is None:  # No interval: the keys are absent, not null.
    return {'value': float(value)}
  return {'value': float(value), 'ci_low': float(low), 'ci_high': float(high)}


def interval_estimates(scores_RxT: Any, reps: int = 2000, seed: int = 0
                       ) -> dict[str, Any]:
  """IQM and mean over runs x tasks, with 95% CIs from two runs on.

  Args:
    scores_RxT: normalized scores, one row per run (seed), one column per
      task.
    reps: bootstrap replications.
    seed: seed of the bootstrap (the same inputs and seed give the same
      interval; see `_bootstrap`).

  Returns:
    `{'runs': R, 'tasks': T, 'iqm': est, 'mean': est}` where `est` is
    `{'value', 'ci_low', 'ci_high'}`: the point estimate and the stratified
    bootstrap 95% percentile interval (rliable's `get_interval_estimates`
    with `aggregate_iqm` / `aggregate_mean`, runs resampled within each
    task). With R = 1 `est` is `{'value'}` alone: a single run has no
    interval (a bootstrap over it would be a zero-width one).
  """
  from rliable import metrics  # pylint: disable=g-import-not-at-top
  scores_RxT = _scores(scores_RxT)
  runs, tasks = scores_RxT.shape

  def fn(x):
    return np.array([metrics.aggregate_iqm(x), metrics.aggregate_mean(x)])

  out = {'runs': runs, 'tasks': tasks}
  if runs < 2:
    point = fn(scores_RxT)
    out.update(iqm=_estimate(point[0]), mean=_estimate(point[1]))
    return out
  point, interval = _bootstrap(scores_RxT, fn, reps=reps, seed=seed)
  for i, name in enumerate(('iqm', 'mean')):
    out[name] = _estimate(point[i], interval[0, i], interval[1, i])
  return out


def probability_of_improvement(x_RxT: Any, y_RxT: Any, reps: int = 2000,
                               seed: int = 0) -> dict[str, float]:
  """P(X > Y): a run of X beats a run of Y on a task, averaged over tasks.

  Args:
    x_RxT: scores of configuration X (runs may differ in number from Y's).
    y_RxT: scores of configuration Y, the same tasks in the same order.
    reps: bootstrap replications.
    seed: seed of the bootstrap.

  Returns:
    `{'value', 'ci_low', 'ci_high'}`: rliable's `probability_of_improvement`
    (Mann-Whitney U per task / (R_x * R_y), ties count 1/2) and its 95%
    stratified bootstrap interval (X and Y resampled independently); only
    `{'value'}` unless both have two runs or more.
  """
  from rliable import metrics  # pylint: disable=g-import-not-at-top
  x_RxT, y_RxT = _scores(x_RxT, 'x_RxT'), _scores(y_RxT, 'y_RxT')
  if x_RxT.shape[1] != y_RxT.shape[1]:
    raise ValueError(f'x_RxT and y_RxT must have the same tasks, got shapes'
                     f' {x_RxT.shape} and {y_RxT.shape}')
  if min(len(x_RxT), len(y_RxT)) < 2:
    return _estimate(metrics.probability_of_improvement(x_RxT, y_RxT))

  def fn(x, y):
    return np.array([metrics.probability_of_improvement(x, y)])

  point, interval = _bootstrap((x_RxT, y_RxT), fn, reps=reps, seed=seed)
  return _estimate(point[0], interval[0, 0], interval[1, 0])


def performance_profile(scores_RxT: Any, taus_U: Sequence[float],
                        reps: int = 2000, seed: int = 0
                        ) -> dict[str, list[float]]:
  """Fraction of runs x tasks scoring above each tau, with 95% bands.

  Args:
    scores_RxT: normalized scores.
    taus_U: thresholds.
    reps: bootstrap replications.
    seed: seed of the bootstrap.

  Returns:
    `{'fraction': [U], 'ci_low': [U], 'ci_high': [U]}` (rliable's score
    distribution), only `{'fraction'}` for one run.
  """
  scores_RxT = _scores(scores_RxT)
  taus_U = np.asarray(taus_U, dtype=np.float64)

  def fn(x):
    return np.array([np.mean(x > tau) for tau in taus_U])

  if len(scores_RxT) < 2:
    return {'fraction': fn(scores_RxT).tolist()}
  point, interval = _bootstrap(scores_RxT, fn, reps=reps, seed=seed)
  return {'fraction': point.tolist(), 'ci_low': interval[0].tolist(),
          'ci_high': interval[1].tolist()}


def format_number(x: float | None, digits: int = 1) -> str:
  """`x` with `digits` decimals; '-' for None or a non-finite value."""
  if x is None or (isinstance(x, float) and not math.isfinite(x)):
    return '-'
  return f'{x:.{digits}f}'


def format_estimate(est: Mapping[str, Any], n: int, digits: int = 1) -> str:
  """'12.3 [10.1, 14.2]', or '12.3 (n=1)' without an interval.

  Args:
    est: `{'value'[, 'ci_low', 'ci_high']}` (from `interval_estimates` or
      `probability_of_improvement`).
    n: the number of runs (stated when there is no interval).
    digits: decimals.

  Returns:
    The table cell.
  """
  value = format_number(est['value'], digits)
  if est.get('ci_low') is None or est.get('ci_high') is None:
    return f'{value} (n={n})'
  return (f'{value} [{format_number(est["ci_low"], digits)},'
          f' {format_number(est["ci_high"], digits)}]')


# ----------------------------------------------------------------------------
# Plots (PNG through matplotlib's Agg canvas, no global pyplot state).


def _figure(width: float = 6.0, height: float = 3.5):
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  fig = Figure(figsize=(width, height), dpi=110)
  FigureCanvasAgg(fig)
  return fig


def _save_png(fig, path: str) -> None:
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
  fig = _figure(height=max(2.0, 0.45 * len(names) + 1.0))
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
  _save_png(fig, path)


def plot_profiles(path: str, taus_U: Sequence[float],
                  profiles: Mapping[str, Mapping[str, Any]]) -> None:
  """Performance profiles: fraction of runs x tasks above tau, with bands.

  Args:
    path: PNG file to write.
    taus_U: thresholds (x axis).
    profiles: configuration -> `performance_profile(...)`.
  """
  fig = _figure(width=7.0, height=4.0)
  ax = fig.add_subplot(1, 1, 1)
  for i, (name, prof) in enumerate(profiles.items()):
    color = f'C{i % 10}'
    ax.plot(taus_U, prof['fraction'], color=color, lw=1.5, label=name)
    if prof.get('ci_low') is not None:
      ax.fill_between(taus_U, prof['ci_low'], prof['ci_high'], color=color,
                      alpha=0.15)
  ax.set_xlabel('D4RL-normalized score tau')
  ax.set_ylabel('fraction of runs x tasks > tau')
  ax.set_ylim(0, 1.02)
  ax.legend(fontsize=7)
  ax.grid(alpha=0.3)
  _save_png(fig, path)


def plot_task_scores(path: str, tasks: Sequence[str],
                     columns: Mapping[str, Sequence[float | None]]) -> None:
  """Grouped bars: one group per task, one bar per configuration.

  Args:
    path: PNG file to write.
    tasks: the tasks (x axis).
    columns: label -> one score per task (None: missing).
  """
  fig = _figure(width=max(6.0, 1.5 * len(tasks) + 3.0), height=4.0)
  ax = fig.add_subplot(1, 1, 1)
  x = np.arange(len(tasks))
  width = 0.8 / max(len(columns), 1)
  for i, (label, values) in enumerate(columns.items()):
    ax.bar(x + (i - (len(columns) - 1) / 2) * width,
           [np.nan if v is None else v for v in values], width, label=label)
  ax.set_xticks(x, tasks, rotation=15, fontsize=8)
  ax.set_ylabel('D4RL-normalized score (mean over seeds)')
  ax.legend(fontsize=7)
  ax.grid(axis='y', alpha=0.3)
  _save_png(fig, path)


# ----------------------------------------------------------------------------
# A sweep: configurations of runs, compared with a baseline.


def _matrix(runs: Sequence[Mapping[str, Any]], tasks: Sequence[str],
            key: str) -> np.ndarray:
  return np.array([[run['tasks'][t][key] for t in tasks] for run in runs],
                  dtype=np.float64)


def summarize(runs: Sequence[Mapping[str, Any]], *, baseline: str = '',
              reps: int = 2000, seed: int = 0,
              missing: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
  """The contents of `sweep.json`: per configuration, aggregates over seeds.

  Args:
    runs: one dict per finished run: `member`, `configuration`, `seed`,
      `tasks` (`{task: {'student_score', 'teacher_score', ...}}` as in
      `results.json`), `student_params`, `teacher_params`, `wall_s`. Runs of
      one configuration are its seeds.
    baseline: the configuration the others are compared with ('' for none).
    reps: bootstrap replications.
    seed: seed of every bootstrap.
    missing: members without results (listed as given).

  Returns:
    `{'tasks', 'baseline', 'bootstrap', 'configurations': {name: {'runs',
    'n', 'student', 'teacher', 'probability_of_improvement',
    'student_teacher_ratio', 'student_params', 'teacher_params',
    'per_task'}}, 'performance_profile': {'taus', 'configurations'},
    'missing'}`. Every aggregate is recomputable from `runs`' scores:
    `interval_estimates([[run['student_scores'][t] for t in tasks] for run
    in runs], reps, seed)`.
  """
  if not runs:
    raise ValueError('no finished runs to aggregate')
  tasks = list(runs[0]['tasks'])
  groups: dict[str, list[Mapping[str, Any]]] = {}
  for run in runs:
    if list(run['tasks']) != tasks:
      raise ValueError(f'run {run["member"]} has tasks {list(run["tasks"])};'
                       f' the others have {tasks}')
    groups.setdefault(run['configuration'], []).append(run)
  if baseline and baseline not in groups:
    raise ValueError(f'baseline {baseline!r} has no finished runs; the'
                     f' configurations with results: {list(groups)}')
  scores = {name: _matrix(g, tasks, 'student_score')
            for name, g in groups.items()}
  low = min(0.0, min(float(s.min()) for s in scores.values()))
  high = max(float(s.max()) for s in scores.values())
  taus_U = np.linspace(low, max(high, low + 1.0), 41)
  configs, profiles = {}, {}
  for name, group in groups.items():
    student_RxT, teacher_RxT = scores[name], _matrix(group, tasks,
                                                     'teacher_score')
    improvement = None
    if baseline and name != baseline:
      improvement = probability_of_improvement(
          student_RxT, scores[baseline], reps=reps, seed=seed)
    params = sorted({run['student_params'] for run in group})
    configs[name] = {
        'runs': [{
            'member': run['member'], 'seed': run['seed'],
            'student_scores': {t: run['tasks'][t]['student_score']
                               for t in tasks},
            'teacher_scores': {t: run['tasks'][t]['teacher_score']
                               for t in tasks},
            'dataset_scores': {t: run['tasks'][t].get('dataset_score')
                               for t in tasks},
            'student_params': run['student_params'],
            'wall_s': run.get('wall_s')} for run in group],
        'n': len(group),
        'student': interval_estimates(student_RxT, reps, seed),
        'teacher': interval_estimates(teacher_RxT, reps, seed),
        'probability_of_improvement': improvement,
        'student_teacher_ratio': float(student_RxT.mean()
                                       / teacher_RxT.mean()),
        'student_params': params[0] if len(params) == 1 else params,
        'teacher_params': group[0].get('teacher_params'),
        'per_task': {t: {
            'student_mean': float(student_RxT[:, i].mean()),
            'student_std': (float(student_RxT[:, i].std(ddof=1))
                            if len(group) > 1 else None),
            'teacher_mean': float(teacher_RxT[:, i].mean())}
                     for i, t in enumerate(tasks)},
    }
    profiles[name] = performance_profile(student_RxT, taus_U, reps, seed)
  return {
      'tasks': tasks, 'baseline': baseline,
      'score': 'D4RL-normalized student score (results.json student_score)',
      'bootstrap': {'method': f'stratified bootstrap, {METHOD} (rliable)',
                    'confidence': CONFIDENCE, 'reps': reps, 'seed': seed},
      'configurations': configs,
      'performance_profile': {'taus': taus_U.tolist(),
                              'configurations': profiles},
      'missing': list(missing)}


def render_markdown(summary: Mapping[str, Any], title: str = 'Sweep') -> str:
  """`sweep.json` as Markdown tables.

  Args:
    summary: from `summarize`.
    title: the heading.

  Returns:
    The Markdown text of `sweep.md`.
  """
  configs, tasks = summary['configurations'], summary['tasks']
  base, boot = summary['baseline'], summary['bootstrap']
  runs = sum(c['n'] for c in configs.values())
  lines = [f'# {title}', '',
           f'{len(configs)} configurations, {runs} runs, tasks'
           f' {", ".join(tasks)}. Scores are D4RL-normalized student scores;'
           f' IQM and mean over tasks x seeds with {boot["confidence"]:.0%}'
           f' {boot["method"]} intervals ({boot["reps"]} replications). A'
           ' configuration with one run has no interval (n=1).', '']
  p_head = f'P(better than `{base}`)' if base else 'P(better)'
  lines += ['## Configurations', '',
            f'| configuration | runs | IQM | mean | {p_head} |'
            ' student / teacher | student params |',
            '|---|---:|---|---|---|---:|---:|']
  for name, c in configs.items():
    n = c['n']
    if name == base:
      p = 'baseline'
    elif c['probability_of_improvement'] is None:
      p = '-'
    else:
      n_base = configs[base]['n']
      p = format_estimate(c['probability_of_improvement'], min(n, n_base), 2)
    params = c['student_params']
    params = (f'{params:,}' if isinstance(params, int)
              else ', '.join(f'{x:,}' for x in params))
    lines.append(f'| `{name}` | {n} | {format_estimate(c["student"]["iqm"], n)}'
                 f' | {format_estimate(c["student"]["mean"], n)} | {p}'
                 f' | {format_number(c["student_teacher_ratio"], 2)}'
                 f' | {params} |')
  lines += ['', '## Per task', '',
            'Student score, mean over seeds (std over seeds in parentheses);'
            ' the last row is the teachers (mean over seeds).', '',
            '| configuration | ' + ' | '.join(tasks) + ' |',
            '|---|' + '---:|' * len(tasks)]
  for name, c in configs.items():
    cells = []
    for t in tasks:
      pt = c['per_task'][t]
      cells.append(format_number(pt['student_mean']) + (
          f' ({format_number(pt["student_std"])})'
          if pt['student_std'] is not None else ' (n=1)'))
    lines.append(f'| `{name}` | ' + ' | '.join(cells) + ' |')
  teacher = [np.mean([c['per_task'][t]['teacher_mean']
                      for c in configs.values()]) for t in tasks]
  lines.append('| teachers | ' + ' | '.join(format_number(float(x))
                                            for x in teacher) + ' |')
  lines += ['', '## Plots', '', '![IQM per configuration](sweep_iqm.png)', '']
  if base:
    lines += ['![Probability of improvement](sweep_improvement.png)', '']
  lines += ['![Performance profiles](sweep_profiles.png)', '',
            '![Scores per task](sweep_tasks.png)', '']
  if summary['missing']:
    lines += ['## Members without results', '', '| member | status | log |',
              '|---|---|---|']
    lines += [f'| `{m["name"]}` | {m["status"]} | {m["log"]} |'
              for m in summary['missing']]
    lines.append('')
  return '\n'.join(lines)


def write_sweep_report(directory: str, summary: Mapping[str, Any],
                       title: str = 'Sweep') -> None:
  """Writes `sweep.json`, `sweep.md` and the PNG plots into `directory`.

  Args:
    directory: the sweep directory.
    summary: from `summarize`.
    title: the heading of `sweep.md`.
  """
  configs, tasks = summary['configurations'], summary['tasks']

  def path(name):
    return os.path.join(directory, name)

  plot_estimates(path('sweep_iqm.png'),
                 {n: c['student']['iqm'] for n, c in configs.items()},
                 xlabel='IQM of the normalized student score (95% CI)')
  if summary['baseline']:
    plot_estimates(path('sweep_improvement.png'),
                   {n: c['probability_of_improvement']
                    for n, c in configs.items()
                    if c['probability_of_improvement'] is not None},
                   xlabel=f'P(better than {summary["baseline"]})',
                   reference=0.5)
  prof = summary['performance_profile']
  plot_profiles(path('sweep_profiles.png'), prof['taus'],
                prof['configurations'])
  plot_task_scores(path('sweep_tasks.png'), tasks, {
      n: [c['per_task'][t]['student_mean'] for t in tasks]
      for n, c in configs.items()})
  write_json(path('sweep.json'), summary)
  write_atomic(path('sweep.md'), render_markdown(summary, title))
