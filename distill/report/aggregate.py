r"""Aggregates over runs and tasks: means, IQM, intervals, improvement.

The statistics of Agarwal et al. 2021 through `rliable`: the mean and the
interquartile mean (IQM) of normalized scores over runs x tasks with 95%
stratified bootstrap intervals (runs resampled within each task), each
task's mean with its interval, the probability that one configuration
improves on another (overall and per task), the difference of two means,
and performance profiles (the fraction of runs x tasks scoring above tau).
One run has no spread to resample, so with fewer than two runs no interval
is reported (`n=1`); `format_estimate` writes it that way in every table.

With few tasks the mean over tasks is the primary aggregate: the IQM drops
the lowest and highest quarter of runs x tasks, and when the tasks' scales
differ those quarters can hold whole tasks (with four tasks and five seeds
the study's round-robin IQM kept only halfcheetah values). `iqm_kept` counts
each task's kept values and `iqm_uneven` applies the rule the reports state
(`IQM_RULE`).

`distill.report.sweep_summary` aggregates a sweep's configurations with these
(`sweep.json`, `sweep.md`); `distill.report.run_report` a run's seeds.

Shapes: R runs (seeds), T tasks, U thresholds tau.

References:
  Agarwal, Schwarzer, Castro, Courville, Bellemare 2021, "Deep Reinforcement
  Learning at the Edge of the Statistical Precipice".
"""

from collections.abc import Mapping, Sequence
import math
from typing import Any
import warnings

import numpy as np


CONFIDENCE = 0.95
# The IQM's kept values are called uneven when some task holds less than
# this fraction of its even share (kept / T): the IQM then mostly measures
# the other tasks, and the reports name the tasks it keeps.
IQM_MIN_SHARE = 0.5
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
               seed: int, confidence: float = CONFIDENCE
               ) -> tuple[np.ndarray, np.ndarray]:
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
          confidence_interval_size=confidence,
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


def improvement_T(x_RxT: np.ndarray, y_RxT: np.ndarray) -> np.ndarray:
  """P(X > Y) per task: the Mann-Whitney U statistic over R_x * R_y.

  The pairs of runs where X's score beats Y's, ties counting 1/2: the value
  rliable's `probability_of_improvement` computes task by task with
  `scipy.stats.mannwhitneyu`, bit for bit (U is a whole or half count, the
  division the same), in one NumPy expression (the bootstrap calls it once
  per replication).

  Args:
    x_RxT: scores of configuration X.
    y_RxT: scores of configuration Y, the same tasks in the same order.

  Returns:
    [tasks] probabilities.
  """
  x_XxYxT, y_XxYxT = x_RxT[:, None, :], y_RxT[None, :, :]
  u_T = ((x_XxYxT > y_XxYxT).sum(axis=(0, 1))
         + 0.5 * (x_XxYxT == y_XxYxT).sum(axis=(0, 1)))
  return u_T / (len(x_RxT) * len(y_RxT))


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
  x_RxT, y_RxT = _scores(x_RxT, 'x_RxT'), _scores(y_RxT, 'y_RxT')
  if x_RxT.shape[1] != y_RxT.shape[1]:
    raise ValueError(f'x_RxT and y_RxT must have the same tasks, got shapes'
                     f' {x_RxT.shape} and {y_RxT.shape}')
  if min(len(x_RxT), len(y_RxT)) < 2:
    return _estimate(improvement_T(x_RxT, y_RxT).mean())

  def fn(x, y):
    return np.array([improvement_T(x, y).mean()])

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


def per_task_means(scores_RxT: Any, reps: int = 2000, seed: int = 0
                   ) -> list[dict[str, float]]:
  """Each task's mean over runs, with its 95% bootstrap interval.

  Args:
    scores_RxT: normalized scores, one row per run, one column per task.
    reps: bootstrap replications.
    seed: seed of the bootstrap.

  Returns:
    One `{'value'[, 'ci_low', 'ci_high']}` per task (runs resampled within
    the task; no interval for one run).
  """
  scores_RxT = _scores(scores_RxT)
  if len(scores_RxT) < 2:
    return [_estimate(v) for v in scores_RxT.mean(0)]
  point, interval = _bootstrap(scores_RxT, lambda x: x.mean(0), reps=reps,
                               seed=seed)
  return [_estimate(point[t], interval[0, t], interval[1, t])
          for t in range(scores_RxT.shape[1])]


def per_task_improvement(x_RxT: Any, y_RxT: Any, reps: int = 2000,
                         seed: int = 0) -> list[dict[str, float]]:
  """P(X > Y) on each task separately, with 95% bootstrap intervals.

  Args:
    x_RxT: scores of configuration X.
    y_RxT: scores of configuration Y, the same tasks in the same order.
    reps: bootstrap replications.
    seed: seed of the bootstrap.

  Returns:
    One estimate per task: `probability_of_improvement` of that task's
    column alone (their mean is the overall P(X > Y)).
  """
  x_RxT, y_RxT = _scores(x_RxT, 'x_RxT'), _scores(y_RxT, 'y_RxT')
  tasks = x_RxT.shape[1]
  if min(len(x_RxT), len(y_RxT)) < 2:
    return [_estimate(v) for v in improvement_T(x_RxT, y_RxT)]
  point, interval = _bootstrap((x_RxT, y_RxT), improvement_T, reps=reps,
                               seed=seed)
  return [_estimate(point[t], interval[0, t], interval[1, t])
          for t in range(tasks)]


def mean_difference(x_RxT: Any, y_RxT: Any, reps: int = 2000, seed: int = 0,
                    confidence: float = CONFIDENCE) -> dict[str, float]:
  """Mean over tasks of X minus that of Y, with a 95% bootstrap interval.

  Args:
    x_RxT: scores of configuration X.
    y_RxT: scores of configuration Y, the same tasks in the same order.
    reps: bootstrap replications.
    seed: seed of the bootstrap.
    confidence: the interval's coverage (0.95; a multiple-comparison
      correction asks for more).

  Returns:
    `{'value'[, 'ci_low', 'ci_high']}`; X and Y are resampled independently,
    each stratified by task, as for `probability_of_improvement`.
  """
  x_RxT, y_RxT = _scores(x_RxT, 'x_RxT'), _scores(y_RxT, 'y_RxT')
  if x_RxT.shape[1] != y_RxT.shape[1]:
    raise ValueError(f'x_RxT and y_RxT must have the same tasks, got shapes'
                     f' {x_RxT.shape} and {y_RxT.shape}')

  def fn(x, y):
    return np.array([x.mean() - y.mean()])

  if min(len(x_RxT), len(y_RxT)) < 2:
    return _estimate(fn(x_RxT, y_RxT)[0])
  point, interval = _bootstrap((x_RxT, y_RxT), fn, reps=reps, seed=seed,
                               confidence=confidence)
  return _estimate(point[0], interval[0, 0], interval[1, 0])


def iqm_kept(scores_RxT: Any) -> list[int]:
  """How many of each task's values the IQM keeps.

  The IQM (scipy's `trim_mean(x, 0.25)` over all R x T values) drops the
  int(R T / 4) lowest and highest values. With few tasks whose scales
  differ, whole tasks can fall into the dropped quarters (from T = 4 on a
  task's R values fit in one quarter), so the IQM then measures the
  remaining tasks only.

  Args:
    scores_RxT: normalized scores, one row per run, one column per task.

  Returns:
    Per task, the number of its values among the kept ones (ties are broken
    by position, as a stable sort orders them).
  """
  scores_RxT = _scores(scores_RxT)
  flat = scores_RxT.ravel()
  cut = int(0.25 * flat.size)
  order = np.argsort(flat, kind='stable')[cut:flat.size - cut]
  tasks = scores_RxT.shape[1]
  return np.bincount(order % tasks, minlength=tasks).tolist()


def iqm_uneven(kept_T: Sequence[int]) -> bool:
  """Whether the IQM's kept values over-represent some tasks.

  Args:
    kept_T: from `iqm_kept`.

  Returns:
    True when some task holds less than IQM_MIN_SHARE of its even share
    of the kept values (with 4 tasks x 5 seeds: at most 1 of the 10).
  """
  total = sum(kept_T)
  if not total or len(kept_T) < 2:
    return False
  even = total / len(kept_T)
  return any(k < IQM_MIN_SHARE * even for k in kept_T)


def format_iqm_kept(tasks: Sequence[str], kept_T: Sequence[int]) -> str:
  """'even' or the tasks the IQM keeps values of ('a 5, b 5; none of c')."""
  if not iqm_uneven(kept_T):
    return 'even'
  held = [f'{t} {k}' for t, k in zip(tasks, kept_T) if k]
  none = [t for t, k in zip(tasks, kept_T) if not k]
  return ', '.join(held) + (f'; none of {", ".join(none)}' if none else '')


IQM_RULE = (
    'The mean over tasks is the primary aggregate: with few tasks of'
    ' different scales the IQM, which drops the lowest and highest quarter'
    ' of runs x tasks, can drop whole tasks. *IQM keeps* counts the values'
    ' of each task among the IQM\'s kept ones when some task holds less'
    f' than {IQM_MIN_SHARE:g}x its even share (otherwise *even*): the IQM'
    ' then scores mostly the tasks named.')
