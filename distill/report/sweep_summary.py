r"""A sweep's configurations aggregated: `sweep.json`, `sweep.md`, plots.

  python -m experiments.aggregate runs/study

`summarize` turns a sweep's finished runs (`distill.run.sweeps.collect_runs`)
into the contents of `sweep.json`: per configuration (its seeds), the mean
normalized score over tasks with its 95% stratified bootstrap interval (the
primary aggregate), each task's mean with its interval, the probability of
improvement over the baseline overall and per task, the IQM (secondary,
with the tasks its kept values come from) and performance profiles; beside
them each task's dataset score and best behaviour policy.
`write_sweep_report` writes it with `sweep.md` and the plots. The
statistics themselves are in `distill.report.aggregate`.
"""

from collections.abc import Mapping, Sequence
import os
from typing import Any

import numpy as np

from distill.data import scores as score_refs
from distill.io.fileio import write_atomic
from distill.io.fileio import write_json
from distill.report import aggregate
from distill.report import plots

# The measures a summary can aggregate: the suffix of `results.json`'s
# per-task keys (`student<suffix>`, `teacher<suffix>`, `dataset<suffix>`),
# the factor to the summary's units, and what the units are.
METRICS = {
    'score': ('_score', 1.0,
              'D4RL-normalized student score (results.json student_score)'),
    'success_rate': ('_success_rate', 100.0,
                     'success rate in points, 0-100 (results.json'
                     ' student_success_rate x 100)'),
}


def _matrix(runs: Sequence[Mapping[str, Any]], tasks: Sequence[str],
            key: str, scale: float = 1.0) -> np.ndarray:
  return scale * np.array([[run['tasks'][t][key] for t in tasks]
                           for run in runs], dtype=np.float64)


def summarize(runs: Sequence[Mapping[str, Any]], *, baseline: str = '',
              reps: int = 2000, seed: int = 0,
              missing: Sequence[Mapping[str, Any]] = (),
              metric: str = 'score') -> dict[str, Any]:
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
    metric: a key of `METRICS`: the normalized score, or the success rate
      in points (MT10's primary measure). Every `*_scores` field, mean and
      interval of the summary is in its units; `score` names them.

  Returns:
    `{'tasks', 'baseline', 'primary', 'datasets': {task: {'dataset_mean',
    'behaviour_score'}}, 'bootstrap', 'configurations': {name: {'runs',
    'n', 'student', 'iqm_kept', 'iqm_uneven', 'teacher',
    'probability_of_improvement', 'student_teacher_ratio',
    'student_params', 'teacher_params', 'per_task': {task:
    {'student_mean', 'student_std', 'teacher_mean',
    'student_mean_estimate', 'probability_of_improvement'}}}},
    'performance_profile': {'taus', 'configurations'}, 'missing'}`. The
    mean over tasks is the primary aggregate; `iqm_kept` counts each task's
    values among those the IQM keeps (`iqm_uneven`: see
    `aggregate.iqm_uneven`). Every aggregate is recomputable from `runs`'
    scores: `aggregate.interval_estimates([[run['student_scores'][t] for t
    in tasks] for run in runs], reps, seed)`.
  """
  if not runs:
    raise ValueError('no finished runs to aggregate')
  if metric not in METRICS:
    raise ValueError(f'metric {metric!r}: expected one of {list(METRICS)}')
  suffix, scale, units = METRICS[metric]
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
  scores = {name: _matrix(g, tasks, 'student' + suffix, scale)
            for name, g in groups.items()}
  low = min(0.0, min(float(s.min()) for s in scores.values()))
  high = max(float(s.max()) for s in scores.values())
  taus_U = np.linspace(low, max(high, low + 1.0), 41)
  configs, profiles = {}, {}
  for name, group in groups.items():
    student_RxT = scores[name]
    teacher_RxT = _matrix(group, tasks, 'teacher' + suffix, scale)
    improvement, task_improvement = None, [None] * len(tasks)
    if baseline and name != baseline:
      improvement = aggregate.probability_of_improvement(
          student_RxT, scores[baseline], reps=reps, seed=seed)
      task_improvement = aggregate.per_task_improvement(
          student_RxT, scores[baseline], reps=reps, seed=seed)
    task_means = aggregate.per_task_means(student_RxT, reps=reps, seed=seed)
    kept = aggregate.iqm_kept(student_RxT)
    params = sorted({run['student_params'] for run in group})
    configs[name] = {
        'runs': [{
            'member': run['member'], 'seed': run['seed'],
            'student_scores': dict(zip(tasks, student_RxT[i].tolist())),
            'teacher_scores': dict(zip(tasks, teacher_RxT[i].tolist())),
            'dataset_scores': {t: _scaled(run['tasks'][t].get(
                'dataset' + suffix), scale) for t in tasks},
            'student_params': run['student_params'],
            'wall_s': run.get('wall_s')} for i, run in enumerate(group)],
        'n': len(group),
        'student': aggregate.interval_estimates(student_RxT, reps, seed),
        'iqm_kept': dict(zip(tasks, kept)),
        'iqm_uneven': aggregate.iqm_uneven(kept),
        'teacher': aggregate.interval_estimates(teacher_RxT, reps, seed),
        'probability_of_improvement': improvement,
        'student_teacher_ratio': float(student_RxT.mean()
                                       / teacher_RxT.mean()),
        'student_params': params[0] if len(params) == 1 else params,
        'teacher_params': group[0].get('teacher_params'),
        'per_task': {t: {
            'student_mean': float(student_RxT[:, i].mean()),
            'student_std': (float(student_RxT[:, i].std(ddof=1))
                            if len(group) > 1 else None),
            'teacher_mean': float(teacher_RxT[:, i].mean()),
            'student_mean_estimate': task_means[i],
            'probability_of_improvement': task_improvement[i]}
                     for i, t in enumerate(tasks)},
    }
    profiles[name] = aggregate.performance_profile(student_RxT, taus_U,
                                                   reps, seed)
  datasets = {}
  for t in tasks:
    values = [_scaled(run['tasks'][t].get('dataset' + suffix), scale)
              for run in runs]
    values = [v for v in values if v is not None]
    datasets[t] = {
        'dataset_mean': float(np.mean(values)) if values else None,
        # The behaviour policies' deterministic scores are returns.
        'behaviour_score': (score_refs.behaviour_score(t)
                            if metric == 'score' else None)}
  return {
      'tasks': tasks, 'baseline': baseline, 'metric': metric,
      'score': units,
      'primary': 'mean over tasks (the IQM is secondary; see iqm_kept)',
      'datasets': datasets,
      'bootstrap': {'method': f'stratified bootstrap, {aggregate.METHOD}'
                              ' (rliable)',
                    'confidence': aggregate.CONFIDENCE, 'reps': reps,
                    'seed': seed},
      'configurations': configs,
      'performance_profile': {'taus': taus_U.tolist(),
                              'configurations': profiles},
      'missing': list(missing)}


def _scaled(value: float | None, scale: float) -> float | None:
  return None if value is None else scale * float(value)


def reference_rows(summary: Mapping[str, Any], tasks: Sequence[str]
                   ) -> list[list[str]]:
  """Per-task cells of the dataset row and the best behaviour policy row.

  Args:
    summary: from `summarize` (older ones without `datasets` give '-').
    tasks: the tasks, in the table's order.

  Returns:
    `[dataset cells, behaviour cells]`, '-' where a score is unknown.
  """
  datasets = summary.get('datasets') or {}
  rows = []
  for key in ('dataset_mean', 'behaviour_score'):
    rows.append([aggregate.format_number((datasets.get(t) or {}).get(key))
                 for t in tasks])
  return rows


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
           f' mean over tasks x seeds (primary), per-task means and IQM with'
           f' {boot["confidence"]:.0%} {boot["method"]} intervals'
           f' ({boot["reps"]} replications). A configuration with one run'
           ' has no interval (n=1). ' + aggregate.IQM_RULE, '']
  p_head = f'P(better than `{base}`)' if base else 'P(better)'
  lines += ['## Configurations', '',
            f'| configuration | runs | mean | {p_head} | IQM | IQM keeps |'
            ' student / teacher | student params |',
            '|---|---:|---|---|---|---|---:|---:|']
  for name, c in configs.items():
    n = c['n']
    if name == base:
      p = 'baseline'
    elif c['probability_of_improvement'] is None:
      p = '-'
    else:
      n_base = configs[base]['n']
      p = aggregate.format_estimate(c['probability_of_improvement'],
                                    min(n, n_base), 2)
    params = c['student_params']
    params = (f'{params:,}' if isinstance(params, int)
              else ', '.join(f'{x:,}' for x in params))
    kept = c.get('iqm_kept')
    kept = (aggregate.format_iqm_kept(tasks, [kept[t] for t in tasks])
            if kept else '-')
    mean = aggregate.format_estimate(c['student']['mean'], n)
    iqm = aggregate.format_estimate(c['student']['iqm'], n)
    ratio = aggregate.format_number(c['student_teacher_ratio'], 2)
    lines.append(f'| `{name}` | {n} | {mean} | {p} | {iqm} | {kept}'
                 f' | {ratio} | {params} |')
  lines += ['', '## Per task', '',
            'Student score, mean over seeds with its 95% interval; then P(a'
            ' run beats a run of the baseline on that task). The last rows'
            ' are the teachers (mean over seeds), the datasets (their'
            ' normalized mean return) and the best behaviour policy that'
            ' generated them (its deterministic normalized score; - where'
            ' none was measured).', '',
            '| configuration | ' + ' | '.join(tasks) + ' |',
            '|---|' + '---|' * len(tasks)]
  for name, c in configs.items():
    cells = []
    for t in tasks:
      pt = c['per_task'][t]
      est = pt.get('student_mean_estimate') or {'value': pt['student_mean']}
      cell = aggregate.format_estimate(est, c['n'])
      imp = pt.get('probability_of_improvement')
      if imp:
        cell += f'; P {aggregate.format_estimate(imp, c["n"], 2)}'
      cells.append(cell)
    lines.append(f'| `{name}` | ' + ' | '.join(cells) + ' |')
  teacher = [np.mean([c['per_task'][t]['teacher_mean']
                      for c in configs.values()]) for t in tasks]
  dataset, behaviour = reference_rows(summary, tasks)
  lines.append('| teachers | ' + ' | '.join(aggregate.format_number(float(x))
                                            for x in teacher) + ' |')
  lines.append('| dataset | ' + ' | '.join(dataset) + ' |')
  lines.append('| best behaviour policy | ' + ' | '.join(behaviour) + ' |')
  lines += ['', '## Plots', '',
            '![mean per configuration](sweep_mean.png)', '',
            '![IQM per configuration](sweep_iqm.png)', '']
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

  plots.plot_estimates(
      path('sweep_mean.png'),
      {n: c['student']['mean'] for n, c in configs.items()},
      xlabel='mean normalized student score over tasks (95% CI)')
  plots.plot_estimates(path('sweep_iqm.png'),
                       {n: c['student']['iqm'] for n, c in configs.items()},
                       xlabel='IQM of the normalized student score (95% CI)')
  if summary['baseline']:
    plots.plot_estimates(path('sweep_improvement.png'),
                         {n: c['probability_of_improvement']
                          for n, c in configs.items()
                          if c['probability_of_improvement'] is not None},
                         xlabel=f'P(better than {summary["baseline"]})',
                         reference=0.5)
  prof = summary['performance_profile']
  plots.plot_profiles(path('sweep_profiles.png'), prof['taus'],
                      prof['configurations'])
  plots.plot_task_scores(path('sweep_tasks.png'), tasks, {
      n: [c['per_task'][t]['student_mean'] for t in tasks]
      for n, c in configs.items()})
  write_json(path('sweep.json'), summary)
  write_atomic(path('sweep.md'), render_markdown(summary, title))
