r"""Writes `docs/results.md` from the published study (`docs/study/`).

  python -m experiments.study_report --study=docs/study --out=docs/results.md

Reads what `python -m experiments.sweep --config=configs/study.py
--publish=docs/study` published (`sweep.json` and each member's
`results.json`, `sweep_job.json` and `curves.json`) and writes the study's
tables and plots: IQM per configuration with 95% intervals, per-task
scores, the share of the teachers' score each student keeps, parameter
counts; the probability that `max_kl + previous` improves on each baseline;
performance profiles; how often each surgery projected; how the `max_kl`
choices spread over teachers and over time; KL-per-teacher curves of the
main variants; the size curve (score against parameters, distilled and from
scratch). The conclusion is written by hand in `<study>/conclusion.md` and
included as it is. Every number comes from the published files, so anyone
can recompute them.
"""

import json
import os
from typing import Any

from absl import app
from absl import flags
import numpy as np

from configs import study as study_config
from distill import aggregate
from distill import fileio
from distill import plots
from distill import sweeps

_STUDY = flags.DEFINE_string('study', 'docs/study', 'Published study.')
_OUT = flags.DEFINE_string('out', 'docs/results.md', 'Markdown to write.')
_REPS = flags.DEFINE_integer('reps', 2000, 'Bootstrap replications.')

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


def _load(path: str) -> Any:
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def _member_files(study: str, name: str) -> dict[str, Any]:
  out = {}
  for key, rel in (('results', 'results.json'), ('record', sweeps.RECORD),
                   ('curves', 'curves.json')):
    path = os.path.join(study, 'members', name, rel)
    if os.path.exists(path):
      out[key] = _load(path)
  return out


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


def improvement_table(summary: dict[str, Any], reps: int
                      ) -> tuple[list[str], dict[str, Any]]:
  """P(METHOD > baseline) for each baseline that has results."""
  configs = summary['configurations']
  lines, estimates = [], {}
  if METHOD not in configs:
    return ['`max_kl + previous` has no finished runs yet.'], estimates

  lines += ['| X | runs of X | P(max_kl + previous > X) |', '|---|---:|---|']
  for base in BASELINES:
    if base not in configs:
      lines.append(f'| `{base}` | 0 | not run yet |')
      continue
    estimates[base], cell = _improvement(summary, METHOD, base, reps)
    lines.append(f'| `{base}` | {configs[base]["n"]} | {cell} |')
  return lines, estimates


def found_table(summary: dict[str, Any], found: dict[str, str], reps: int
                ) -> list[str]:
  """Each row found after the data against the row it varies."""
  configs = summary['configurations']
  rows = [(n, p) for n, p in found.items() if n in configs and p in configs]
  if not rows:
    return []
  lines = ['### Rows found after seeing the data', '',
           'Each against the configuration it varies (the same method'
           ' without the changed field). These rows were chosen after'
           ' looking at the first 60 members, so an interval here is weaker'
           ' evidence than the same interval for a row fixed in advance.',
           '', '| row | varies | IQM of the row | IQM of the parent |'
           ' P(row > parent) | P(row > its curriculum without surgery) |',
           '|---|---|---|---|---|---|']

  def iqm(name):
    return aggregate.format_estimate(configs[name]['student']['iqm'],
                                     configs[name]['n'])

  for name, parent in rows:
    rest = [p for p in parent.split(',') if not p.startswith('surgery')]
    bare = ','.join(rest[:1] + ['surgery=none'] + rest[1:])
    cell = '-'
    if bare in configs and bare != parent:
      cell = _improvement(summary, name, bare, reps)[1] + f' (`{bare}`)'
    lines.append(f'| `{name}` | `{parent}` | {iqm(name)} | {iqm(parent)}'
                 f' | {_improvement(summary, name, parent, reps)[1]}'
                 f' | {cell} |')
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
           '| with surgery | without | P(with > without) |', '|---|---|---|']
  for name, other in rows:
    lines.append(f'| `{name}` | `{other}` |'
                 f' {_improvement(summary, name, other, reps)[1]} |')
  return lines + ['']


def _plot_curves(path: str, curves: dict[str, list[dict[str, Any]]],
                 tasks: list[str]) -> None:
  """KL per teacher over steps, one panel per variant (mean over seeds)."""
  names = [n for n in CURVE_VARIANTS if curves.get(n)]
  if not names:
    return
  fig = plots.figure(width=3.2 * len(names), height=3.0)
  for i, name in enumerate(names):
    ax = fig.add_subplot(1, len(names), i + 1)
    runs = [c for c in curves[name] if c.get('kl_mean')]
    kl = np.mean([np.asarray(c['kl_mean']) for c in runs], axis=0)
    steps = runs[0]['step_end']
    for t, task in enumerate(tasks):
      ax.plot(steps, kl[:, t], label=task, lw=1.2)
    ax.set_yscale('log')
    ax.set_title(name.replace('curriculum=', '').replace(',surgery=', ' + '),
                 fontsize=8)
    ax.set_xlabel('step', fontsize=8)
    if not i:
      ax.set_ylabel('KL(teacher || student), probes', fontsize=8)
      ax.legend(fontsize=6)
    ax.grid(alpha=0.3)
  plots.save_png(fig, path)


def _plot_choices(path: str, runs: list[dict[str, Any]],
                  tasks: list[str]) -> None:
  """Share of steps learning from each teacher over time (max_kl)."""
  runs = [c for c in runs if c.get('choices')]
  if not runs:
    return
  share = np.mean([np.asarray(c['choices'], float)
                   / np.asarray(c['choices']).sum(1, keepdims=True)
                   for c in runs], axis=0)
  fig = plots.figure(width=6.0, height=3.2)
  ax = fig.add_subplot(1, 1, 1)
  ax.stackplot(runs[0]['step_end'], share.T, labels=tasks)
  ax.set_xlabel('step')
  ax.set_ylabel('share of steps per teacher')
  ax.set_ylim(0, 1)
  ax.legend(fontsize=7, loc='upper right')
  plots.save_png(fig, path)


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
  ax.set_xlabel('student parameters')
  ax.set_ylabel('IQM normalized score (95% CI)')
  ax.legend(fontsize=8)
  ax.grid(alpha=0.3)
  plots.save_png(fig, path)


def render(study: str, out_path: str, reps: int) -> str:
  """The Markdown of docs/results.md (writes the plots beside `study`)."""
  summary = _load(os.path.join(study, 'sweep.json'))
  state = _load(os.path.join(study, sweeps.STATE))
  configs, tasks = summary['configurations'], summary['tasks']
  members = [j for j in state['jobs'] if j['kind'] == 'member']
  files = {j['name']: _member_files(study, j['name']) for j in members}
  by_config: dict[str, list[dict[str, Any]]] = {}
  for j in members:
    if 'results' in files[j['name']]:
      by_config.setdefault(j['configuration'], []).append(files[j['name']])
  rel = lambda p: os.path.relpath(p, os.path.dirname(out_path))
  plot = lambda name: os.path.join(study, name)
  done = sum(len(v) for v in by_config.values())
  lines = [
      '# The study: results', '',
      f'{done} of {len(members)} members finished'
      f' ({len(by_config)} of'
      f' {len(dict.fromkeys(j["configuration"] for j in members))}'
      ' configurations with at least one seed). Tasks:'
      f' {", ".join(tasks)}. Scores are D4RL-normalized returns of the'
      ' last student checkpoint, 16 deterministic episodes per task; IQM'
      ' and mean over tasks x seeds with 95% stratified bootstrap'
      f' intervals ({summary["bootstrap"]["reps"]} replications, rliable).'
      ' One seed has no interval (n=1).', '',
      'Reproduce: `python -m experiments.sweep --config=configs/study.py'
      ' --workdir=runs/study --parallel=2 --publish=docs/study'
      ' --publish_commit --publish_aggregate_s=1800` (a rerun skips'
      ' finished members), then'
      ' `python -m experiments.study_report`. Each member\'s own command is'
      ' in `docs/study/members/<name>/sweep_job.json`; the intervals are'
      ' recomputed from `docs/study/sweep.json` by `python -m'
      ' experiments.aggregate docs/study`.'
      + (f' The members ran the code of commit `{state["code_commit"][:7]}`'
         f' (`{sweeps.STATE}`); check it out to reproduce their scores to the'
         ' last digit: later commits change results in the last float bits'
         ' (docs/performance.md).' if state.get('code_commit') else ''),
      '']
  if os.path.exists(os.path.join(study, 'conclusion.md')):
    with open(os.path.join(study, 'conclusion.md'), encoding='utf-8') as f:
      lines += ['## Conclusion', '', f.read().strip(), '']

  # The table.
  lines += ['## Students per configuration', '',
            '| configuration | seeds | IQM | mean | P(X > baseline) |'
            ' kept of teachers | surgery projected | params | '
            + ' | '.join(tasks) + ' |',
            '|---|---:|---|---|---|---:|---|---:|' + '---:|' * len(tasks)]
  found = found_after_data()
  for name, c in configs.items():
    n = c['n']
    projected = [m['results'].get('surgery', {}).get('projected_fraction')
                 for m in by_config.get(name, [])]
    projected = [p for p in projected if p is not None]
    cells = [f'{c["per_task"][t]["student_mean"]:.1f}' for t in tasks]
    iqm = aggregate.format_estimate(c['student']['iqm'], n)
    imp = c.get('probability_of_improvement')
    imp = ('(baseline)' if name == summary.get('baseline') else
           aggregate.format_estimate(imp, n, 2) if imp else '-')
    mark = FOUND_MARK if name in found else ''
    lines.append(
        f'| `{name}`{mark} | {n} | {iqm}'
        f' | {aggregate.format_estimate(c["student"]["mean"], n)}'
        f' | {imp} | {c["student_teacher_ratio"]:.2f}'
        f' | {_mean_sd(projected)}'
        f' | {c["student_params"]:,} | ' + ' | '.join(cells) + ' |')
  teacher = [np.mean([c['per_task'][t]['teacher_mean']
                      for c in configs.values()]) for t in tasks]
  t_params = next(iter(configs.values()))['teacher_params'] or {}
  lines += ['| teachers (mean over seeds) | | | | | 1.00 | | '
            + f'{sum(t_params.values()):,} ({len(t_params)} teachers) | '
            + ' | '.join(f'{x:.1f}' for x in teacher) + ' |', '',
            '*kept of teachers*: mean student score / mean teacher score'
            ' over tasks x seeds. *surgery projected*: fraction of steps'
            ' whose gradient was projected (mean ± sd over seeds). Per-task'
            ' cells are means over seeds. *P(X > baseline)*: the'
            ' probability that a run of the row beats a run of the'
            f' baseline `{summary.get("baseline")}` on a task (rliable).'
            f'{FOUND_MARK.strip()}: added after seeing the data'
            ' (`configs/study.py` `found_after_data`, which says why).', '']
  lines += found_table(summary, found, reps)

  # Improvement and profiles.
  imp_lines, estimates = improvement_table(summary, reps)
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

  # Choices and curves.
  curves = {name: [m['curves'] for m in ms if 'curves' in m]
            for name, ms in by_config.items()}
  lines += ['## What the curriculum chose and what the KL did', '']
  maxkl = curves.get(METHOD, [])
  if maxkl:
    totals = np.sum([np.asarray(c['choices']).sum(0) for c in maxkl
                     if c.get('choices')], axis=0)
    share = totals / max(totals.sum(), 1)
    lines += ['`max_kl + previous`, all seeds: share of steps per teacher: '
              + ', '.join(f'{t} {s:.2f}' for t, s in zip(tasks, share)) + '.',
              '']
    _plot_choices(plot('results_choices.png'), maxkl, tasks)
    lines += [f'![choices over time]({rel(plot("results_choices.png"))})', '']
  _plot_curves(plot('results_kl.png'), curves, tasks)
  if any(curves.get(n) for n in CURVE_VARIANTS):
    lines += ['KL(teacher || student) on each teacher\'s probes, mean over'
              ' seeds, per window of steps:', '',
              f'![KL per teacher]({rel(plot("results_kl.png"))})', '']

  # Size curve.
  points: dict[str, list[tuple[int, dict, int]]] = {}
  names: dict[tuple[str, int], str] = {}
  for name, c in configs.items():
    method, _ = _size_key(name)
    label = {'curriculum=max_kl,surgery=previous': 'distilled (max_kl +'
             ' previous)', 'curriculum=scratch,surgery=none':
             'from scratch'}.get(method)
    if label and name not in found:
      points.setdefault(label, []).append((c['student_params'],
                                           c['student']['iqm'], c['n']))
      names[(method, c['student_params'])] = name
  if points:
    _plot_sizes(plot('results_sizes.png'), points)
    lines += ['## Size curve', '',
              '| student | params | IQM | P(distilled > from scratch) |',
              '|---|---:|---|---|']
    for label, pts in points.items():
      for params, est, n in sorted(pts, key=lambda p: p[0]):
        pair = [names.get((m, params)) for m in (
            'curriculum=max_kl,surgery=previous',
            'curriculum=scratch,surgery=none')]
        cell = '-'
        if label.startswith('distilled') and all(pair):
          cell = _improvement(summary, pair[0], pair[1], reps)[1]
        lines.append(f'| {label} | {params:,} |'
                     f' {aggregate.format_estimate(est, n)} | {cell} |')
    lines += ['', f'![size curve]({rel(plot("results_sizes.png"))})', '']
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
  text = render(study, _OUT.value, _REPS.value)
  fileio.write_atomic(_OUT.value, text + '\n')
  print(_OUT.value)


if __name__ == '__main__':
  app.run(main)
