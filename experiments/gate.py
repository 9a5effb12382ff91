r"""The gate's table: do the teachers beat the best cloning of their data?

  python -m experiments.gate runs/gate --out=docs/gate/locomotion
  python -m experiments.gate runs/gate_mt10 --metric=success_rate \
      --min_tasks=3 --out=docs/gate/mt10

Reads a finished (or partly finished) sweep of `configs/gate.py` (members:
cloning students, `curriculum.name=scratch`, at several sizes and %BC
fractions; each seed's teachers evaluated by its teacher job) and prints,
per task: the dataset's score, the best behaviour policy's, the teachers'
mean over seeds, each cloning configuration's mean, the best of them and
the teachers' margin over it with a 95% stratified bootstrap interval
(teachers and baseline resampled independently over seeds). A task passes
when the margin's point estimate is at least `--margin`; the gate passes
when at least `--min_tasks` tasks pass. The best baseline is chosen per
task after seeing the data, which favours the baselines: a conservative
choice for a gate.

`--metric=score` (normalized return, 0-100) or `success_rate` (Meta-World;
shown in points, 0-100, so `--margin=10` is 10 points of success rate).
Writes `<out>.json` and `<out>.md` with `--out`.
"""

from collections.abc import Mapping, Sequence
import os
from typing import Any

from absl import app
from absl import flags
import numpy as np

from distill.data import scores as score_refs
from distill.io import fileio
from distill.report import aggregate
from distill.run import sweeps


# Member results' per-task keys of each measure.
KEYS = {'score': ('teacher_score', 'student_score', 'dataset_score'),
        'success_rate': ('teacher_success_rate', 'student_success_rate',
                         'dataset_success_rate')}


def _value(per_task: Mapping[str, Any], key: str, metric: str) -> float:
  if key not in per_task:
    raise ValueError(f'a member result lacks {key!r} (has'
                     f' {sorted(per_task)}): is --metric={metric} measured'
                     ' for these tasks?')
  v = float(per_task[key])
  return 100.0 * v if metric == 'success_rate' else v


def gate_table(runs: Sequence[Mapping[str, Any]], *, metric: str = 'score',
               margin: float = 10.0, min_tasks: int = 2, reps: int = 2000
               ) -> dict[str, Any]:
  """The gate's per-task table from a sweep's runs.

  Args:
    runs: `distill.run.sweeps.collect_runs`'s runs (`configuration`, `seed`,
      `tasks`: each task's results.json entry).
    metric: 'score' or 'success_rate'.
    margin: points the teachers must lead the best baseline by on a task.
    min_tasks: tasks that must pass.
    reps: bootstrap replications.

  Returns:
    `{'metric', 'margin', 'min_tasks', 'seeds', 'configurations', 'tasks':
    [{'task', 'dataset', 'behaviour', 'teacher', 'baselines': {name: est},
    'best', 'margin', 'passed'}], 'passed_tasks', 'passed'}`; estimates
    are `{'value'[, 'ci_low', 'ci_high']}`.
  """
  if not runs:
    raise ValueError('no finished gate members to tabulate')
  teacher_key, student_key, dataset_key = KEYS[metric]
  tasks = list(runs[0]['tasks'])
  configurations = sorted({r['configuration'] for r in runs})
  teacher_by_seed: dict[int, list[float]] = {}
  dataset: list[float] = []
  for r in runs:
    if list(r['tasks']) != tasks:
      raise ValueError(f'member {r["member"]} has tasks {list(r["tasks"])},'
                       f' others {tasks}')
    row = [_value(r['tasks'][t], teacher_key, metric) for t in tasks]
    if teacher_by_seed.setdefault(r['seed'], row) != row:
      raise ValueError(f'seed {r["seed"]}: members report different teacher'
                       ' scores (they should share one teacher job)')
    dataset = [_value(r['tasks'][t], dataset_key, metric) for t in tasks]
  seeds = sorted(teacher_by_seed)
  teacher_SxT = np.array([teacher_by_seed[s] for s in seeds])
  by_config = {c: np.array([[_value(r['tasks'][t], student_key, metric)
                             for t in tasks] for r in runs
                            if r['configuration'] == c])
               for c in configurations}
  teacher_est = aggregate.per_task_means(teacher_SxT, reps=reps)
  config_est = {c: aggregate.per_task_means(x, reps=reps)
                for c, x in by_config.items()}
  rows = []
  for t, task in enumerate(tasks):
    best = max(configurations, key=lambda c: config_est[c][t]['value'])
    diff = aggregate.mean_difference(teacher_SxT[:, [t]],
                                     by_config[best][:, [t]], reps=reps)
    behaviour = score_refs.behaviour_score(task) if metric == 'score' else None
    rows.append({'task': task, 'dataset': dataset[t], 'behaviour': behaviour,
                 'teacher': teacher_est[t],
                 'baselines': {c: config_est[c][t] for c in configurations},
                 'runs': {c: len(by_config[c]) for c in configurations},
                 'best': best, 'margin': diff,
                 'passed': diff['value'] >= margin})
  passed_tasks = [r['task'] for r in rows if r['passed']]
  return {'metric': metric, 'margin': margin, 'min_tasks': min_tasks,
          'seeds': seeds, 'configurations': configurations, 'tasks': rows,
          'passed_tasks': passed_tasks,
          'passed': len(passed_tasks) >= min_tasks}


def _short(configuration: str) -> str:
  # 'student.model.num_layers=2,student.model.width=32,
  # student.bc_top_fraction=0.1' -> '2x32 %BC 0.1'.
  parts = dict(p.split('=', 1) for p in configuration.split(',') if p)
  parts = {k.split('.')[-1]: v for k, v in parts.items()}
  size = f"{parts.get('num_layers', '?')}x{parts.get('width', '?')}"
  fraction = parts.get('bc_top_fraction', '1.0')
  return size + ('' if float(fraction) == 1.0 else f' %BC {fraction}')


def render_markdown(table: Mapping[str, Any]) -> str:
  """The gate table as Markdown."""
  fmt = aggregate.format_estimate
  n = len(table['seeds'])
  names = [_short(c) for c in table['configurations']]
  head = (['task', 'dataset', 'best behaviour', 'teachers'] + names
          + ['best cloning', 'teachers - best', 'passed'])
  lines = ['| ' + ' | '.join(head) + ' |',
           '|' + '---|' * 1 + '---:|' * (len(head) - 2) + '---|']
  for row in table['tasks']:
    cells = [row['task'], aggregate.format_number(row['dataset']),
             aggregate.format_number(row['behaviour']),
             fmt(row['teacher'], n)]
    cells += [fmt(row['baselines'][c], row['runs'][c])
              for c in table['configurations']]
    cells += [_short(row['best']), fmt(row['margin'], n),
              'yes' if row['passed'] else 'no']
    lines.append('| ' + ' | '.join(cells) + ' |')
  unit = ('success rate, points' if table['metric'] == 'success_rate'
          else 'normalized score')
  verdict = 'PASSED' if table['passed'] else 'NOT PASSED'
  lines += ['', f'Means over seeds {table["seeds"]} ({unit}) with 95%'
            ' stratified bootstrap intervals. A task passes when the'
            f' teachers lead the best cloning baseline by at least'
            f' {table["margin"]:g} points; the gate needs'
            f' {table["min_tasks"]}: {len(table["passed_tasks"])} passed'
            f' ({", ".join(table["passed_tasks"]) or "none"}): **{verdict}**.']
  return '\n'.join(lines) + '\n'


def write_table(table: Mapping[str, Any], out: str) -> None:
  """Writes `<out>.json` (the table) and `<out>.md` (its Markdown)."""
  os.makedirs(os.path.dirname(out) or '.', exist_ok=True)
  fileio.write_json(out + '.json', table)
  fileio.write_atomic(out + '.md', render_markdown(table))


def define_flags() -> None:
  """Defines the command's flags, only when it runs as a command (other
  commands define flags of the same names)."""
  flags.DEFINE_enum(
      'metric', 'score', ['score', 'success_rate'],
      'Per-task measure: the normalized return or the success rate (points).')
  flags.DEFINE_float(
      'margin', 10.0, 'Points by which the teachers must beat the best'
      ' cloning baseline on a task for that task to pass.')
  flags.DEFINE_integer(
      'min_tasks', 2, 'Tasks that must pass for the gate to pass.')
  flags.DEFINE_string(
      'out', '', 'Write <out>.json and <out>.md (the table); empty: print'
      ' only.')
  flags.DEFINE_integer('reps', 2000, 'Bootstrap replications.')


def main(argv: Sequence[str]) -> None:
  if len(argv) != 2:
    raise app.UsageError('usage: python -m experiments.gate SWEEP_DIR'
                         ' [--metric=...] [--out=PATH]')
  root = argv[1]
  _, runs, missing = sweeps.collect_runs(root)
  if missing:
    print(f'{len(missing)} member(s) not finished: the table covers'
          f' {len(runs)} run(s)')
  f = flags.FLAGS
  table = gate_table(runs, metric=f.metric, margin=f.margin,
                     min_tasks=f.min_tasks, reps=f.reps)
  text = render_markdown(table)
  print(text)
  if flags.FLAGS.out:
    write_table(table, flags.FLAGS.out)


if __name__ == '__main__':
  define_flags()
  app.run(main)
