r"""Writes a study's results page from its published members.

  python -m experiments.study_report --design=study2 --study=docs/study2 \
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
`configs/study2.py`, the pre-registered second study): its rows, the rows
found after the data (the first study's), and for the second study the
pre-registered verdicts (`experiments/verdicts.py`, under the gate's label)
and the gate's table, included as the gate published it.
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

_STUDY = flags.DEFINE_string('study', 'docs/study', 'Published study.')
_OUT = flags.DEFINE_string('out', 'docs/results.md', 'Markdown to write.')
_REPS = flags.DEFINE_integer('reps', 2000, 'Bootstrap replications.')
_DESIGN = flags.DEFINE_enum(
    'design', 'study', ['study', 'study2'],
    "The study's config: 'study' (configs/study.py, the first study) or"
    " 'study2' (configs/study2.py, pre-registered).")
_GATE = flags.DEFINE_enum(
    'gate', None, list(verdicts_lib.GATE_LABELS),
    "--design=study2: whether the testbed passed its gate (docs/gate.md),"
    " said above the verdicts (required there).")

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
  """
  title: str
  config: str
  baselines: tuple[str, ...]
  size_labels: dict[str, str]
  size_note: str
  preregistered: bool = False
  gate_table: str = ''

  def found(self) -> dict[str, str]:
    return found_after_data() if self.config == 'configs/study.py' else {}


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
            ' each size, which this study did not run.')),
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
        gate_table='docs/gate/mixed.md'),
}


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
      '| dataset (normalized mean return) | | | ' + ' | '.join(dataset)
      + f' | {blank} |',
      '| best behaviour policy (deterministic) | | | '
      + ' | '.join(behaviour) + f' | {blank} |', '',
      '*mean*: mean normalized score over tasks x seeds, the primary'
      ' aggregate; per-task cells: mean over seeds; all with 95% stratified'
      ' bootstrap intervals. *P(X > baseline)*: the probability that a run'
      ' of the row beats a run of the baseline'
      f' `{summary.get("baseline")}` on a task (rliable); per task in the'
      ' next table. ' + aggregate.IQM_RULE + ' *kept of teachers*: mean'
      ' student score / mean teacher score over tasks x seeds. *surgery'
      ' projected*: fraction of steps whose gradient was projected (mean ±'
      ' sd over seeds). *dataset*: the mean normalized return of the'
      ' episodes the student learns from (`results.json` `dataset_score`,'
      ' mean over seeds); *best behaviour policy*: the deterministic score'
      ' of the best snapshot that generated them'
      ' (`distill.data.scores.BEHAVIOUR_SCORES`, distill/envs/SNAPSHOTS.md;'
      ' - where none was measured).'
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


def verdicts_section(study: str, gate: str | None) -> list[str]:
  """The pre-registered verdicts (experiments/verdicts.py), as registered."""
  _, runs, _ = sweeps.collect_runs(study)
  result = verdicts_lib.verdicts(runs, 'score')
  return ['## The pre-registered verdicts', '',
          'As fixed in `docs/preregistration.md` before the first member'
          ' ran, computed by `python -m experiments.verdicts'
          f' {study} --gate={gate}` from the members\' own results: X - Y'
          ' is the difference of the means over tasks x seeds with its 95%'
          ' stratified bootstrap interval, and at the Bonferroni level over'
          f' the {len(verdicts_lib.COMPARISONS)} comparisons'
          f' ({result["confidence_corrected"]:.2%}).', '',
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


def render(study: str, out_path: str, reps: int,
           design: Design = DESIGNS['study'], gate: str | None = None
           ) -> str:
  """The Markdown of a study's results page (writes plots beside `study`).

  Args:
    study: the published study (`sweep.json`, `members.jsonl`, ...).
    out_path: where the page will be written (for relative links).
    reps: bootstrap replications of the page's own intervals.
    design: the study's `Design`.
    gate: with a pre-registered design, 'passed' or 'not_passed'.
  """
  if design.preregistered and gate not in verdicts_lib.GATE_LABELS:
    raise ValueError(f'{design.config}: the pre-registered verdicts need'
                     f' the gate\'s outcome, got gate={gate!r}')
  summary = _load(os.path.join(study, 'sweep.json'))
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
      f' {", ".join(tasks)}. Scores are D4RL-normalized returns of the'
      ' last student checkpoint, 16 deterministic episodes per task. The'
      ' primary aggregate is the mean over tasks x seeds; each task\'s mean'
      ' over seeds and P(X > Y) per task stand beside it, then the IQM;'
      ' all with 95% stratified bootstrap intervals'
      f' ({summary["bootstrap"]["reps"]} replications, rliable). One seed'
      ' has no interval (n=1). With four tasks the IQM is no summary of'
      ' all four: it drops the lowest and highest quarter of the 20 runs x'
      ' tasks, which here are mostly the hopper and walker2d runs, so its'
      ' kept values come mostly or only from the two halfcheetah tasks'
      ' (column *IQM keeps*).', '',
      f'Reproduce: `python -m experiments.sweep --config={design.config}'
      f' --workdir=runs/{os.path.basename(os.path.normpath(study))}'
      f' --parallel=2 --publish={study} --publish_commit` (a rerun skips'
      ' finished members), then `python -m experiments.study_report'
      f' --design={os.path.basename(design.config)[:-3]} --study={study}'
      + (f' --gate={gate}' if design.preregistered else '')
      + '`. Each member\'s own command, record, results and curves are one'
      f' line of `{study}/members.jsonl`; the intervals are recomputed from'
      ' the members\' results there by `python -m experiments.aggregate'
      f' {study}`.', '',
      publish.provenance_note(state, records), '']
  if os.path.exists(os.path.join(study, 'conclusion.md')):
    with open(os.path.join(study, 'conclusion.md'), encoding='utf-8') as f:
      lines += ['## Conclusion', '', f.read().strip(), '']
  if design.preregistered:
    lines += verdicts_section(study, gate)
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
    plots.plot_profiles(plot('results_profiles.png'), prof['taus'], main)
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


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  study = _STUDY.value
  if not os.path.exists(os.path.join(study, 'sweep.json')):
    raise app.UsageError(f'--study={study}: no sweep.json (publish a sweep'
                         ' there with experiments.sweep --publish)')
  if _REPS.value < 1:
    raise app.UsageError(f'--reps={_REPS.value}: must be >= 1')
  design = DESIGNS[_DESIGN.value]
  if design.preregistered and _GATE.value is None:
    raise app.UsageError(f'--design={_DESIGN.value}: give --gate=passed or'
                         ' --gate=not_passed (whether the testbed passed its'
                         ' gate, docs/gate.md)')
  text = render(study, _OUT.value, _REPS.value, design, _GATE.value)
  fileio.write_atomic(_OUT.value, text + '\n')
  print(_OUT.value)


if __name__ == '__main__':
  app.run(main)
