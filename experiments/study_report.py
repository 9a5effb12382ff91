r"""Writes a study's results page from its published members.

  python -m experiments.study_report --design=study2,study2_mt10 \
      --study=docs/study2,docs/study2_mt10 --gate=not_passed \
      --out=docs/results.md
  python -m experiments.study_report --design=study --study=docs/study \
      --out=docs/results_study1.md

Reads what `python -m experiments.sweep --config=configs/study.py
--publish=docs/study` published (`sweep.json`, `sweep_state.json` and
`members.jsonl`, each member's record, results and curves on one line) and
writes the study's
tables and plots: per configuration the mean normalized score over tasks
with its 95% interval (the primary aggregate), each task's mean with its
interval, P(X > baseline) overall and per task, the IQM (secondary, with
the tasks its kept values come from), the share of the teachers' score
each student keeps and parameter counts, beside each task's dataset score
and best behaviour policy; what `max_kl + previous` does against each
baseline (probability of improvement and difference of means); performance
profiles; how often each surgery projected; how the `max_kl` choices spread
over teachers and over time and the KL-per-teacher curves (labelled from
each member's own task order, experiments/study_curves.py); the size curve;
the code each member ran, as far as its record says. The conclusion is
written by hand in `<study>/conclusion.md` and included as it is. Every
number comes from the published files, so anyone can recompute them.

`--design` names the study's config (`configs/study.py`, the first study;
`configs/study2.py`, the pre-registered second study, whose `study2_mt10`
design is its MT10 testbed): its rows, the rows found after the data (the
first study's), and for the second study the pre-registered verdicts
(`experiments/verdicts.py`, under the gate's label) and the gate's table,
included as the gate published it. MT10's primary measure is the success
rate: its page recomputes the summary from the members' success rates (the
published `sweep.json` holds normalized scores). Several studies, one
design each, make one page with a part per testbed, headed by the first
study's conclusion. Each part also measures the evaluation's noise against
the seed-to-seed spread, as the pre-registration asks.
"""

import dataclasses

import json
import os
from typing import Any

from absl import app
from absl import flags
import numpy as np

from configs import study as study_config
from configs import study2 as study2_config
from distill.io import fileio
from distill.report import aggregate
from distill.report import plots
from distill.report import sweep_summary
from distill.run import sweeps
from experiments import publish
from experiments import study_curves
from experiments import verdicts as verdicts_lib

_STUDY = flags.DEFINE_string(
    'study', 'docs/study',
    'Published study; several (comma-separated) make one page with a part'
    ' per testbed.')
_OUT = flags.DEFINE_string('out', 'docs/results.md', 'Markdown to write.')
_REPS = flags.DEFINE_integer('reps', 2000, 'Bootstrap replications.')
_DESIGN = flags.DEFINE_string(
    'design', 'study',
    "The study's design: 'study' (configs/study.py, the first study),"
    " 'study2' (configs/study2.py, pre-registered, locomotion) or"
    " 'study2_mt10' (configs/study2.py:mt10); with several --study, one"
    ' per study, comma-separated.')
_GATE = flags.DEFINE_string(
    'gate', None,
    "Pre-registered designs: whether the testbed passed its gate"
    " (docs/gate.md), 'passed' or 'not_passed', said above the verdicts"
    ' (required there); one for all studies or one per study.')

METHOD = 'curriculum=max_kl,surgery=previous'
BASELINES = ('curriculum=round_robin,surgery=none',
             'curriculum=uniform,surgery=none',
             'curriculum=mixture,surgery=none',
             'curriculum=scratch,surgery=none',
             'curriculum=max_kl,surgery=none')
CURVE_VARIANTS = ('curriculum=max_kl,surgery=previous',
                  'curriculum=max_kl,surgery=none',
                  'curriculum=round_robin,surgery=none',
                  'curriculum=uniform,surgery=none',
                  'curriculum=mixture,surgery=none')
SIZE_FIELDS = ('student.model.num_layers', 'student.model.width')
FOUND_MARK = ' †'  # rows added after seeing the data (configs/study.py)
SCRATCH = 'curriculum=scratch,surgery=none'
PCT_BC = sweeps.configuration_name(
    {'curriculum.name': 'scratch', 'surgery.name': 'none',
     'student.bc_top_fraction': study2_config.BC_FRACTION})


def found_after_data() -> dict[str, str]:
  """Configuration added after seeing the data -> the row it varies.

  The parent is the configuration without the found row's extra fields
  (`curriculum.temperature`, `surgery.decay`): each found row is compared
  with it.
  """
  out = {}
  for overrides in study_config.found_after_data():
    name = sweeps.configuration_name(overrides)
    parent = {k: v for k, v in overrides.items()
              if k not in ('curriculum.temperature', 'surgery.decay')}
    out[name] = sweeps.configuration_name(parent)
  return out


@dataclasses.dataclass(frozen=True)
class Design:
  """What differs between the studies' pages.

  Attributes:
    title: the page's heading.
    config: the study's config file, for the reproduce line.
    baselines: the rows `max_kl + previous` is compared with, in order.
    size_labels: configuration (without its size fields) -> label of the
      size curve; the first is compared with `scratch` at each size.
    size_note: what the size curve can and cannot separate.
    preregistered: whether the pre-registered verdicts
      (`experiments/verdicts.py`) and the gate's table head the page.
    gate_table: the gate's published table (`experiments.gate --out`),
      relative to the repository, or ''.
    metric: the primary measure (`sweep_summary.METRICS`): 'score', or
      'success_rate' (MT10), which the page recomputes from the members
      (the published `sweep.json` holds normalized scores).
    config_arg: the config's argument (':mt10'), for the reproduce line.
    testbed: the testbed's name, the heading of its part of a page that
      holds several testbeds.
    intro: what the measure is and how to read the IQM on this testbed.
  """
  title: str
  config: str
  baselines: tuple[str, ...]
  size_labels: dict[str, str]
  size_note: str
  preregistered: bool = False
  gate_table: str = ''
  metric: str = 'score'
  config_arg: str = ''
  testbed: str = ''
  intro: str = ''

  def found(self) -> dict[str, str]:
    return found_after_data() if self.config == 'configs/study.py' else {}


_LOCOMOTION_INTRO = (
    'Scores are D4RL-normalized returns of the last student checkpoint, 16'
    ' deterministic episodes per task. The primary aggregate is the mean'
    ' over tasks x seeds; each task\'s mean over seeds and P(X > Y) per task'
    ' stand beside it, then the IQM; all with 95% stratified bootstrap'
    ' intervals ({reps} replications, rliable). One seed has no interval'
    ' (n=1). With four tasks the IQM is no summary of all four: it drops the'
    ' lowest and highest quarter of the 20 runs x tasks, which here are'
    ' mostly the hopper and walker2d runs, so its kept values come mostly or'
    ' only from the two halfcheetah tasks (column *IQM keeps*).')
_MT10_INTRO = (
    'The primary measure is the success rate of the last student'
    ' checkpoint, in points (0-100), over 16 deterministic episodes per task'
    ' (`results.json` `student_success_rate`; the normalized returns are in'
    ' the published `sweep.json`). The primary aggregate is the mean over'
    ' the ten tasks x seeds; each task\'s mean over seeds and P(X > Y) per'
    ' task stand beside it, then the IQM; all with 95% stratified bootstrap'
    ' intervals ({reps} replications, rliable). Success rates pile up at 0'
    ' and 100, so the IQM, which drops the lowest and highest quarter of'
    ' runs x tasks, mostly drops whole tasks (column *IQM keeps*).')

DESIGNS = {
    'study': Design(
        title='The study: results',
        config='configs/study.py',
        baselines=BASELINES,
        size_labels={METHOD: 'distilled (max_kl + previous)',
                     SCRATCH: 'from scratch'},
        size_note=(
            'The distilled students differ from those trained from scratch'
            ' in two ways at once: they learn from the teachers, and they'
            ' learn through the curriculum and surgery of `max_kl +'
            ' previous`. So the curve confounds the teachers with the'
            ' curriculum; separating them needs a distilled row with the'
            ' baseline\'s curriculum (`round_robin`, or the mixture) at'
            ' each size, which this study did not run.'),
        intro=_LOCOMOTION_INTRO),
    'study2': Design(
        title='The second study (pre-registered): results',
        config='configs/study2.py',
        baselines=BASELINES + (PCT_BC,),
        size_labels={METHOD: 'distilled (max_kl + previous)',
                     'curriculum=mixture,surgery=none':
                         'distilled (mixture)',
                     SCRATCH: 'from scratch',
                     PCT_BC: f'%BC (best {study2_config.BC_FRACTION:.0%})'},
        size_note=(
            'Both distilled rows and both cloning rows ran at each size:'
            ' the mixture row separates the teachers from the curriculum,'
            ' %BC is the filtered cloning baseline. The pre-registered'
            ' comparison at each size (H3) is against the better of'
            ' `scratch` and %BC (the verdicts above).'),
        preregistered=True,
        gate_table='docs/gate/mixed.md',
        testbed='Locomotion (`mixed` data)',
        intro=_LOCOMOTION_INTRO),
    # Rows 8-11 (the 1 x 8 size) were cut by the budget rule (amendment 2
    # of docs/preregistration.md): one size, so no size curve.
    'study2_mt10': Design(
        title='The second study (pre-registered), Meta-World MT10: results',
        config='configs/study2.py',
        config_arg=':mt10',
        baselines=BASELINES + (PCT_BC,),
        size_labels={},
        size_note='',
        preregistered=True,
        gate_table='docs/gate/mt10_mixed.md',
        metric='success_rate',
        testbed='Meta-World MT10 (`mixed` data)',
        intro=_MT10_INTRO),
}
UNITS = {'score': 'normalized score', 'success_rate': 'success rate (points)'}


def _load(path: str) -> Any:
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def _size_key(name: str) -> tuple[str, str]:
  """(method part, size part) of a configuration name."""
  parts = name.split(',')
  size = [p for p in parts if p.startswith('student.model.')]
  rest = [p for p in parts if not p.startswith('student.model.')]
  return ','.join(rest), ','.join(size)


def _mean_sd(values: list[float]) -> str:
  if not values:
    return '-'
  if len(values) == 1:
    return f'{values[0]:.2f} (n=1)'
  return f'{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f}'


def _scores(summary: dict[str, Any], name: str) -> np.ndarray:
  """[runs, tasks] student scores of one configuration in `sweep.json`."""
  return np.array([[r['student_scores'][t] for t in summary['tasks']]
                   for r in summary['configurations'][name]['runs']])


def _improvement(summary: dict[str, Any], x: str, y: str, reps: int
                 ) -> tuple[dict[str, float], str]:
  """P(X > Y) and its table cell (n: the smaller of the two run counts)."""
  configs = summary['configurations']
  est = aggregate.probability_of_improvement(_scores(summary, x),
                                             _scores(summary, y), reps=reps)
  n = min(configs[x]['n'], configs[y]['n'])
  return est, aggregate.format_estimate(est, n, 2)


def _difference(summary: dict[str, Any], x: str, y: str, reps: int
                ) -> tuple[dict[str, float], str]:
  """Mean of X minus mean of Y over tasks x seeds, and its table cell."""
  configs = summary['configurations']
  est = aggregate.mean_difference(_scores(summary, x), _scores(summary, y),
                                  reps=reps)
  n = min(configs[x]['n'], configs[y]['n'])
  cell = aggregate.format_estimate(est, n)
  return est, ('+' + cell if est['value'] > 0 else cell)


def _mean(configs: dict[str, Any], name: str) -> str:
  return aggregate.format_estimate(configs[name]['student']['mean'],
                                   configs[name]['n'])


def improvement_table(summary: dict[str, Any], reps: int,
                      baselines: tuple[str, ...] = BASELINES
                      ) -> tuple[list[str], dict[str, Any]]:
  """P(METHOD > baseline) and the difference of means for each baseline."""
  configs = summary['configurations']
  lines, estimates = [], {}
  if METHOD not in configs:
    return ['`max_kl + previous` has no finished runs yet.'], estimates

  lines += ['| X | runs of X | mean of X | P(max_kl + previous > X) |'
            ' mean of max_kl + previous - mean of X |',
            '|---|---:|---|---|---|']
  for base in baselines:
    if base not in configs:
      lines.append(f'| `{base}` | 0 | - | not run yet | - |')
      continue
    estimates[base], cell = _improvement(summary, METHOD, base, reps)
    diff = _difference(summary, METHOD, base, reps)[1]
    lines.append(f'| `{base}` | {configs[base]["n"]} | {_mean(configs, base)}'
                 f' | {cell} | {diff} |')
  return lines, estimates


def _bare(parent: str) -> str:
  """The configuration of `parent`'s curriculum without surgery."""
  rest = [p for p in parent.split(',') if not p.startswith('surgery')]
  return ','.join(rest[:1] + ['surgery=none'] + rest[1:])


def found_table(summary: dict[str, Any], found: dict[str, str], reps: int
                ) -> list[str]:
  """Each row found after the data against the row it varies."""
  configs = summary['configurations']
  rows = [(n, p) for n, p in found.items() if n in configs and p in configs]
  if not rows:
    return []
  lines = ['### Rows found after seeing the data', '',
           'Each against the configuration it varies (the same method'
           ' without the changed field) and against its curriculum without'
           ' surgery. These rows were chosen after looking at the first 60'
           ' members, so an interval here is weaker evidence than the same'
           ' interval for a row fixed in advance.',
           '', '| row | varies | mean of the row | mean of the parent |'
           ' row - parent | P(row > parent) | row - its curriculum without'
           ' surgery | P(row > its curriculum without surgery) |',
           '|---|---|---|---|---|---|---|---|']
  for name, parent in rows:
    bare = _bare(parent)
    diff, cell = '-', '-'
    if bare in configs and bare != parent:
      diff = _difference(summary, name, bare, reps)[1] + f' (`{bare}`)'
      cell = _improvement(summary, name, bare, reps)[1]
    lines.append(f'| `{name}` | `{parent}` | {_mean(configs, name)}'
                 f' | {_mean(configs, parent)}'
                 f' | {_difference(summary, name, parent, reps)[1]}'
                 f' | {_improvement(summary, name, parent, reps)[1]}'
                 f' | {diff} | {cell} |')
  return lines + ['']


def surgery_table(summary: dict[str, Any], reps: int) -> list[str]:
  """P(X with surgery > X without) for every configuration run both ways."""
  configs = summary['configurations']
  rows = []
  for name in configs:
    for surgery in ('previous', 'pcgrad'):
      other = name.replace(f'surgery={surgery}', 'surgery=none')
      if f'surgery={surgery}' in name and other in configs:
        rows.append((name, other))
  if not rows:
    return []

  lines = ['### The surgery\'s own effect', '',
           '| with surgery | without | P(with > without) |'
           ' mean with - mean without |', '|---|---|---|---|']
  for name, other in rows:
    lines.append(f'| `{name}` | `{other}` |'
                 f' {_improvement(summary, name, other, reps)[1]}'
                 f' | {_difference(summary, name, other, reps)[1]} |')
  return lines + ['']


def _plot_sizes(path: str, points: dict[str, list[tuple[int, dict, int]]]
                ) -> None:
  fig = plots.figure(width=6.0, height=3.5)
  ax = fig.add_subplot(1, 1, 1)
  for i, (label, pts) in enumerate(points.items()):
    pts = sorted(pts, key=lambda p: p[0])
    x = [p[0] for p in pts]
    y = [p[1]['value'] for p in pts]
    ax.plot(x, y, 'o-', color=f'C{i}', label=label)
    for xp, (_, est, _) in zip(x, pts):
      if est.get('ci_low') is not None:
        ax.plot([xp, xp], [est['ci_low'], est['ci_high']], color=f'C{i}',
                lw=4, alpha=0.35)
  ax.set_xscale('log')
  plots.label_axes(ax, xlabel='student parameters',
                   ylabel='mean normalized score over tasks (95% CI)')
  plots.save_png(fig, path)


def main_table(summary: dict[str, Any],
               by_config: dict[str, list[dict[str, Any]]],
               found: dict[str, str] | None = None) -> list[str]:
  """One row per configuration, then the teachers, datasets and behaviour."""
  configs, tasks = summary['configurations'], summary['tasks']
  success = summary.get('metric') == 'success_rate'
  found = found_after_data() if found is None else found
  lines = ['## Students per configuration', '',
           '| configuration | seeds | mean | ' + ' | '.join(tasks)
           + ' | P(X > baseline) | IQM | IQM keeps | kept of teachers |'
           ' surgery projected | params |',
           '|---|---:|---|' + '---|' * len(tasks)
           + '---|---|---|---:|---|---:|']
  for name, c in configs.items():
    n = c['n']
    projected = [m['results'].get('surgery', {}).get('projected_fraction')
                 for m in by_config.get(name, [])]
    projected = [p for p in projected if p is not None]
    cells = [aggregate.format_estimate(
        c['per_task'][t].get('student_mean_estimate')
        or {'value': c['per_task'][t]['student_mean']}, n) for t in tasks]
    imp = c.get('probability_of_improvement')
    imp = ('(baseline)' if name == summary.get('baseline') else
           aggregate.format_estimate(imp, n, 2) if imp else '-')
    kept = c.get('iqm_kept')
    kept = (aggregate.format_iqm_kept(tasks, [kept[t] for t in tasks])
            if kept else '-')
    mark = FOUND_MARK if name in found else ''
    lines.append(
        f'| `{name}`{mark} | {n} | {_mean(configs, name)} | '
        + ' | '.join(cells)
        + f' | {imp} | {aggregate.format_estimate(c["student"]["iqm"], n)}'
        f' | {kept} | {c["student_teacher_ratio"]:.2f}'
        f' | {_mean_sd(projected)} | {c["student_params"]:,} |')
  teacher = [np.mean([c['per_task'][t]['teacher_mean']
                      for c in configs.values()]) for t in tasks]
  t_params = next(iter(configs.values()))['teacher_params'] or {}
  dataset, behaviour = sweep_summary.reference_rows(summary, tasks)
  blank = ' | '.join([''] * 6)
  lines += [
      f'| teachers (mean over seeds) | | {np.mean(teacher):.1f} | '
      + ' | '.join(f'{x:.1f}' for x in teacher)
      + f' | | | | 1.00 | | {sum(t_params.values()):,}'
      f' ({len(t_params)} teachers) |',
      ('| dataset (success rate of its episodes) | | | ' if success else
       '| dataset (normalized mean return) | | | ') + ' | '.join(dataset)
      + f' | {blank} |']
  if not success:  # no behaviour policy of MT10 was scored on its own
    lines.append('| best behaviour policy (deterministic) | | | '
                 + ' | '.join(behaviour) + f' | {blank} |')
  dataset_note = (
      ' *dataset*: the share of the episodes the student learns from that'
      ' succeed (`results.json` `dataset_success_rate`, mean over seeds).'
      if success else
      ' *dataset*: the mean normalized return of the'
      ' episodes the student learns from (`results.json` `dataset_score`,'
      ' mean over seeds); *best behaviour policy*: the deterministic score'
      ' of the best snapshot that generated them'
      ' (`distill.data.scores.BEHAVIOUR_SCORES`, distill/envs/SNAPSHOTS.md;'
      ' - where none was measured).')
  lines += [
      '',
      f'*mean*: mean {UNITS[summary.get("metric", "score")]} over tasks x'
      ' seeds, the primary'
      ' aggregate; per-task cells: mean over seeds; all with 95% stratified'
      ' bootstrap intervals. *P(X > baseline)*: the probability that a run'
      ' of the row beats a run of the baseline'
      f' `{summary.get("baseline")}` on a task (rliable); per task in the'
      ' next table. ' + aggregate.IQM_RULE + ' *kept of teachers*: mean'
      ' student / mean teacher over tasks x seeds. *surgery'
      ' projected*: fraction of steps whose gradient was projected (mean ±'
      ' sd over seeds). *params*: the student\'s parameters, beside the'
      ' teachers\' sum.' + dataset_note
      + (f' {FOUND_MARK.strip()}: added after seeing the data'
         ' (`configs/study.py` `found_after_data`, which says why).'
         if found else ''), '']
  return lines


def per_task_improvement_table(summary: dict[str, Any]) -> list[str]:
  """P(X > baseline) on each task, from `sweep.json`."""
  configs, tasks = summary['configurations'], summary['tasks']
  rows = [(n, c) for n, c in configs.items()
          if (c['per_task'][tasks[0]].get('probability_of_improvement'))]
  if not rows:
    return []
  lines = ['### P(X > baseline) per task', '',
           '| configuration | ' + ' | '.join(tasks) + ' |',
           '|---|' + '---|' * len(tasks)]
  for name, c in rows:
    lines.append(f'| `{name}` | ' + ' | '.join(
        aggregate.format_estimate(c['per_task'][t]['probability_of_improvement'],
                                  c['n'], 2) for t in tasks) + ' |')
  return lines + ['']


def size_table(summary: dict[str, Any], reps: int, plot_path: str,
               rel_plot: str, design: Design = DESIGNS['study']
               ) -> list[str]:
  """Each size's rows; the first label's against from scratch."""
  configs, found = summary['configurations'], design.found()
  points: dict[str, list[tuple[int, dict, int]]] = {}
  names: dict[tuple[str, int], str] = {}
  labels = design.size_labels
  if not labels:
    return []
  first = next(iter(labels))
  for name, c in configs.items():
    method, _ = _size_key(name)
    if method in labels and name not in found:
      points.setdefault(labels[method], []).append(
          (c['student_params'], c['student']['mean'], c['n']))
      names[(method, c['student_params'])] = name
  if not points:
    return []
  _plot_sizes(plot_path, points)
  lines = ['## Size curve', '', design.size_note, '',
           '| student | params | mean | P(distilled > from scratch) |'
           ' mean distilled - mean from scratch |', '|---|---:|---|---|---|']
  for label, pts in points.items():
    for params, est, n in sorted(pts, key=lambda p: p[0]):
      pair = [names.get((m, params)) for m in (first, SCRATCH)]
      cell, diff = '-', '-'
      if label == labels[first] and all(pair):
        cell = _improvement(summary, pair[0], pair[1], reps)[1]
        diff = _difference(summary, pair[0], pair[1], reps)[1]
      lines.append(f'| {label} | {params:,} |'
                   f' {aggregate.format_estimate(est, n)} | {cell} | {diff} |')
  return lines + ['', f'![size curve]({rel_plot})', '']


def curves_section(summary: dict[str, Any],
                   by_config: dict[str, list[dict[str, Any]]],
                   plot: Any, rel: Any) -> list[str]:
  """The curriculum's choices and the KL per teacher, correctly labelled."""
  tasks = summary['tasks']
  members = [m for ms in by_config.values() for m in ms if 'curves' in m]
  # No study member overrides config.tasks, so every member runs the same
  # task list in the same order: one member whose counts tell the order
  # labels those that cannot (round-robin's equal counts, the mixture).
  order = study_curves.curriculum_order(members)
  lines = ['## What the curriculum chose and what the KL did', '']
  shares = study_curves.choice_shares(
      [m for m in by_config.get(METHOD, []) if 'curves' in m], tasks, order)
  if shares is not None:
    lines += ['`max_kl + previous`, all seeds: share of steps per teacher: '
              + ', '.join(f'{t} {s:.2f}' for t, s in zip(tasks, shares[0]))
              + '. Each member\'s curves have their columns in its config\'s'
              f' task order ({", ".join(order)}), relabelled here from the'
              ' member\'s own per-task counts (`results.json`'
              ' `curriculum.counts`).', '']
    study_curves.plot_choices(plot('results_choices.png'),
                              by_config[METHOD], tasks, order)
    lines += [f'![choices over time]({rel(plot("results_choices.png"))})', '']
  variants = {n: [m for m in by_config.get(n, []) if 'curves' in m]
              for n in CURVE_VARIANTS}
  variants = {n: ms for n, ms in variants.items() if ms}
  if variants:
    study_curves.plot_kl(plot('results_kl.png'), variants, tasks, order)
    lines += ['KL(teacher || student) on each teacher\'s probes, mean over'
              ' seeds, per window of steps:', '',
              f'![KL per teacher]({rel(plot("results_kl.png"))})', '']
  return lines


def _episode_std(task: dict[str, Any], metric: str) -> float | None:
  """One member's episode-to-episode std on a task, in the metric's units."""
  if metric == 'success_rate':
    p = task.get('student_success_rate')
    return None if p is None else 100.0 * float(np.sqrt(p * (1.0 - p)))
  return task.get('student_score_std')


def noise_section(by_config: dict[str, list[dict[str, Any]]],
                  tasks: list[str], metric: str, episodes: int
                  ) -> list[str]:
  """The evaluation's share of the variance of a member's task mean.

  Per task: the episode-to-episode std of each member (a success is a
  Bernoulli episode: 100 sqrt(p (1 - p))), its median and its root mean
  square over members, and the seed-to-seed variance of the members' task
  means pooled over the configurations with at least 3 seeds; the share,
  as docs/preregistration.md defines it, is (episode std)^2 / episodes
  over that variance, with the mean episode variance over members (the
  median std is 0 where most members succeed on every episode or on none,
  as on most MT10 tasks, and would hide the others' noise).
  """
  suffix, scale, _ = sweep_summary.METRICS[metric]
  key = 'student' + suffix
  rows = []
  for t in tasks:
    stds, variances = [], []
    for members in by_config.values():
      per = [m['results']['tasks'][t] for m in members
             if t in m.get('results', {}).get('tasks', {})]
      stds += [s for s in (_episode_std(x, metric) for x in per)
               if s is not None]
      if len(per) >= 3:
        variances.append(np.var([scale * x[key] for x in per], ddof=1))
    if not stds or not variances:
      continue
    median = float(np.median(stds))
    rms = float(np.sqrt(np.mean(np.square(stds))))
    seed_var = float(np.mean(variances))
    share = (rms ** 2 / episodes / seed_var) if seed_var > 0 else None
    rows.append(f'| {t} | {median:.1f} | {rms:.1f} |'
                f' {rms / np.sqrt(episodes):.1f} | {np.sqrt(seed_var):.1f} |'
                f' {"-" if share is None else f"{share:.2f}"} |')
  if not rows:
    return []
  return ['## Evaluation noise against the seed-to-seed spread', '',
          f'Each member is evaluated on {episodes} episodes per task, in'
          f' {UNITS[metric]}. *episode std*: each member\'s'
          ' episode-to-episode std' + (
              ', 100 sqrt(p (1 - p)) for a success rate p'
              if metric == 'success_rate' else '')
          + ', its median and its root mean square (RMS) over members;'
          f' *noise of a member\'s mean*: the RMS / sqrt({episodes});'
          ' *seed-to-seed std*: of the members\' task means within a'
          ' configuration, pooled (mean variance) over the configurations'
          ' with at least 3 seeds; *share*: the evaluation\'s share of that'
          ' variance, RMS^2 / episodes over it (- where the members do not'
          ' vary), as docs/preregistration.md fixed it.', '',
          '| task | episode std, median | episode std, RMS | noise of a'
          ' member\'s mean | seed-to-seed std | share |',
          '|---|---:|---:|---:|---:|---:|', *rows, '']


def verdicts_section(study: str, runs: list[dict[str, Any]],
                     gate: str | None, metric: str = 'score') -> list[str]:
  """The pre-registered verdicts (experiments/verdicts.py), as registered.

  Args:
    study: the published study, for the command that recomputes them.
    runs: its finished members (`sweeps.collect_runs`).
    gate: 'passed' or 'not_passed'.
    metric: the primary measure.
  """
  result = verdicts_lib.verdicts(runs, metric)
  flag = f' --metric={metric}' if metric != 'score' else ''
  not_run = sum(r['verdict'] == 'not run' for r in result['comparisons'])
  read = len(result['comparisons']) - not_run
  cut = (f' This testbed reads {read} of them; the {not_run} marked *not run*'
         ' compare rows that the pre-registered budget rule cut'
         ' (docs/preregistration.md, amendment 2), and the level stays as'
         ' fixed.' if not_run else '')
  return ['## The pre-registered verdicts', '',
          'As fixed in `docs/preregistration.md` before the first member'
          ' ran, computed by `python -m experiments.verdicts'
          f' {study}{flag} --gate={gate}` from the members\' own results:'
          ' X - Y is the difference of the means over tasks x seeds'
          f' ({UNITS[metric]}) with its 95%'
          ' stratified bootstrap interval, and at the Bonferroni level over'
          f' the {len(verdicts_lib.COMPARISONS)} comparisons'
          f' ({result["confidence_corrected"]:.2%}).{cut}', '',
          verdicts_lib.render_markdown(result, gate).rstrip(), '',
          *_improvement_lines(result), '']


def _improvement_lines(result: dict[str, Any]) -> list[str]:
  """Each comparison's per-task P(X > Y) (reported; decides nothing)."""
  rows = [r for r in result['comparisons'] if r.get('improvement')]
  if not rows:
    return []
  tasks = result['tasks']
  lines = ['P(X > Y) per task for each comparison (reported beside the'
           ' verdicts; decides nothing):', '',
           '| hypothesis | X | Y | ' + ' | '.join(tasks) + ' |',
           '|---|---|---|' + '---|' * len(tasks)]
  for r in rows:
    n = min(r['runs'])
    lines.append(f'| {r["hypothesis"]} | {r["x"]} | {r["y"]} | ' + ' | '.join(
        aggregate.format_estimate(r['improvement'][t], n, 2) for t in tasks)
                 + ' |')
  return lines


def _episodes(design: Design) -> int:
  """Evaluation episodes per task of the study's members (its config)."""
  if design.config == 'configs/study.py':
    return study_config.get_config().eval.episodes
  return study2_config.get_config(design.config_arg.lstrip(':')
                                  ).eval.episodes


def _compression(summary: dict[str, Any]) -> str:
  """The students' sizes against one teacher and all of them."""
  configs = summary['configurations']
  t_params = next(iter(configs.values())).get('teacher_params') or {}
  if not t_params:
    return ''
  one, total = max(t_params.values()), sum(t_params.values())
  sizes = sorted({c['student_params'] for c in configs.values()
                  if isinstance(c['student_params'], int)})
  return ('Parameters: one teacher ' + f'{one:,}, the {len(t_params)}'
          f' teachers {total:,}; ' + '; '.join(
              f'a student of {p:,} is {one / p:.1f}x smaller than one teacher'
              f' and {total / p:.0f}x smaller than all' for p in sizes)
          + '.')


def _design_key(design: Design) -> str:
  return next(k for k, d in DESIGNS.items() if d is design)


def render(study: str, out_path: str, reps: int,
           design: Design = DESIGNS['study'], gate: str | None = None,
           conclusion: bool = True) -> str:
  """The Markdown of a study's results page (writes plots beside `study`).

  Args:
    study: the published study (`sweep.json`, `members.jsonl`, ...).
    out_path: where the page will be written (for relative links).
    reps: bootstrap replications of the page's own intervals.
    design: the study's `Design`.
    gate: with a pre-registered design, 'passed' or 'not_passed'.
    conclusion: include `<study>/conclusion.md` (a page of several
      testbeds includes its first testbed's once, at its head).
  """
  if design.preregistered and gate not in verdicts_lib.GATE_LABELS:
    raise ValueError(f'{design.config}: the pre-registered verdicts need'
                     f' the gate\'s outcome, got gate={gate!r}')
  summary = _load(os.path.join(study, 'sweep.json'))
  _, runs, missing = sweeps.collect_runs(study)
  if design.metric != summary.get('metric', 'score'):
    # The published summary holds another measure: recompute it from the
    # members' results, with the same baseline.
    summary = sweep_summary.summarize(
        runs, baseline=summary['baseline'], reps=reps, missing=missing,
        metric=design.metric)
  state = _load(os.path.join(study, sweeps.STATE))
  tasks = summary['tasks']
  members = [j for j in state['jobs'] if j['kind'] == 'member']
  published = sweeps.published_members(study) or {}
  by_config: dict[str, list[dict[str, Any]]] = {}
  for j in members:
    if j['name'] in published:
      by_config.setdefault(j['configuration'], []).append(
          published[j['name']])
  rel = lambda p: os.path.relpath(p, os.path.dirname(out_path))
  plot = lambda name: os.path.join(study, name)
  done = sum(len(v) for v in by_config.values())
  records = [f['record'] for ms in by_config.values() for f in ms
             if 'record' in f]
  lines = [
      f'# {design.title}', '',
      f'{done} of {len(members)} members finished'
      f' ({len(by_config)} of'
      f' {len(dict.fromkeys(j["configuration"] for j in members))}'
      ' configurations with at least one seed). Tasks:'
      f' {", ".join(tasks)}. '
      + design.intro.format(reps=summary['bootstrap']['reps']), '',
      _compression(summary), '',
      'Reproduce: `python -m experiments.sweep'
      f' --config={design.config}{design.config_arg}'
      f' --workdir=runs/{os.path.basename(os.path.normpath(study))}'
      f' --parallel=2 --publish={study} --publish_commit` (a rerun skips'
      ' finished members), then `python -m experiments.study_report'
      f' --design={_design_key(design)} --study={study}'
      + (f' --gate={gate}' if design.preregistered else '')
      + '`. Each member\'s own command, record, results and curves are one'
      f' line of `{study}/members.jsonl`; the intervals are recomputed from'
      ' the members\' results there by `python -m experiments.aggregate'
      f' {study}`.', '',
      publish.provenance_note(state, records), '']
  if conclusion and os.path.exists(os.path.join(study, 'conclusion.md')):
    with open(os.path.join(study, 'conclusion.md'), encoding='utf-8') as f:
      lines += ['## Conclusion', '', f.read().strip(), '']
  if design.preregistered:
    lines += verdicts_section(study, runs, gate, design.metric)
  if design.gate_table:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, design.gate_table), encoding='utf-8') as f:
      gate_text = f.read().strip()
    lines += ['## The gate (measured before the study)', '',
              f'`{design.gate_table}`, as `experiments.gate` published it'
              ' (docs/gate.md tells how it was run):', '',
              gate_text.replace('\n# ', '\n### ').lstrip('# '), '']

  found = design.found()
  lines += main_table(summary, by_config, found)
  lines += noise_section(by_config, tasks, design.metric, _episodes(design))
  lines += per_task_improvement_table(summary)
  lines += found_table(summary, found, reps)

  # Improvement and profiles.
  imp_lines, estimates = improvement_table(summary, reps, design.baselines)
  lines += ['## Does `max_kl + previous` improve on the baselines?', '']
  lines += imp_lines + ['']
  if estimates:
    plots.plot_estimates(plot('results_improvement.png'), {
        k.replace('curriculum=', '').replace(',surgery=', ' + '): v
        for k, v in estimates.items()},
                         xlabel='P(max_kl + previous > X)', reference=0.5)
    lines += [f'![P(improvement)]({rel(plot("results_improvement.png"))})',
              '']
  prof = summary['performance_profile']
  main = {k: v for k, v in prof['configurations'].items()
          if k in CURVE_VARIANTS or k == 'curriculum=scratch,surgery=none'}
  if main:
    plots.plot_profiles(plot('results_profiles.png'), prof['taus'], main,
                        xlabel=f'{UNITS[design.metric]} tau')
    lines += ['Performance profiles (fraction of runs x tasks above a score,'
              ' 95% bands):', '',
              f'![profiles]({rel(plot("results_profiles.png"))})', '']

  lines += surgery_table(summary, reps)
  lines += curves_section(summary, by_config, plot, rel)
  lines += size_table(summary, reps, plot('results_sizes.png'),
                      rel(plot('results_sizes.png')), design)
  if summary.get('missing'):
    lines += [f'{len(summary["missing"])} members have no results yet.', '']
  return '\n'.join(lines)


def _demote(text: str) -> str:
  """Every Markdown heading of `text` one level deeper."""
  return '\n'.join('#' + line if line.startswith('#') else line
                   for line in text.split('\n'))


def render_page(parts: list[tuple[str, Design, str | None]], out_path: str,
                reps: int) -> str:
  """One page of one or several testbeds of a study.

  Args:
    parts: (published study, its design, its gate's outcome) per testbed,
      in the page's order; the first study's `conclusion.md` heads the
      page and speaks for all of them.
    out_path: where the page will be written (for relative links).
    reps: bootstrap replications of the page's own intervals.
  """
  if len(parts) == 1:
    study, design, gate = parts[0]
    return render(study, out_path, reps, design, gate)
  first = parts[0][0]
  lines = [f'# {parts[0][1].title}', '',
           'Testbeds: ' + '; '.join(
               f'{d.testbed or d.title} (`{s}`)' for s, d, _ in parts)
           + '. Each has its own part below: its members, verdicts, gate,'
           ' tables and plots.', '']
  if os.path.exists(os.path.join(first, 'conclusion.md')):
    with open(os.path.join(first, 'conclusion.md'), encoding='utf-8') as f:
      lines += ['## Conclusion', '', f.read().strip(), '']
  for study, design, gate in parts:
    text = render(study, out_path, reps, design, gate, conclusion=False)
    body = text.split('\n', 1)[1]  # without the part's own title
    lines += [f'## {design.testbed or design.title}', '',
              _demote(body).strip(), '']
  return '\n'.join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  studies = _STUDY.value.split(',')
  keys = _DESIGN.value.split(',')
  if len(keys) != len(studies):
    raise app.UsageError(f'--design={_DESIGN.value}: one design per study'
                         f' of --study={_STUDY.value}, in the same order')
  for key in keys:
    if key not in DESIGNS:
      raise app.UsageError(f'--design={_DESIGN.value}: unknown design'
                           f' {key!r}; valid: {", ".join(DESIGNS)}')
  gates = (_GATE.value or '').split(',') if _GATE.value else [None]
  if len(gates) == 1:
    gates = gates * len(studies)
  if len(gates) != len(studies):
    raise app.UsageError(f'--gate={_GATE.value}: one outcome, or one per'
                         f' study of --study={_STUDY.value}')
  for study in studies:
    if not os.path.exists(os.path.join(study, 'sweep.json')):
      raise app.UsageError(f'--study={study}: no sweep.json (publish a'
                           ' sweep there with experiments.sweep --publish)')
  if _REPS.value < 1:
    raise app.UsageError(f'--reps={_REPS.value}: must be >= 1')
  parts = []
  for study, key, gate in zip(studies, keys, gates):
    design = DESIGNS[key]
    if design.preregistered and gate not in verdicts_lib.GATE_LABELS:
      raise app.UsageError(
          f'--design={key}: give --gate=passed or --gate=not_passed (whether'
          ' the testbed passed its gate, docs/gate.md), one for all studies'
          f' or one per study; got --gate={_GATE.value}')
    parts.append((study, design, gate))
  text = render_page(parts, _OUT.value, _REPS.value)
  fileio.write_atomic(_OUT.value, text + '\n')
  print(_OUT.value)


if __name__ == '__main__':
  app.run(main)
