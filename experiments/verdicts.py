r"""The pre-registered verdicts of the second study (docs/preregistration.md).

  python -m experiments.verdicts docs/study2 --gate=not_passed \
      --out=docs/study2/verdicts
  python -m experiments.verdicts runs/study2_mt10 --metric=success_rate \
      --gate=...

Reads a study's finished members (a sweep directory or a published study)
and applies the analysis fixed in docs/preregistration.md, nothing else:
for each comparison, the difference of the mean over tasks (X - Y, each
configuration's runs resampled within each task: `aggregate.mean_difference`,
2000 replications, seed 0) with its 95% interval and its interval at the
Bonferroni level over the comparisons read (1 - 0.05 / `len(COMPARISONS)`),
and the per-task probability of improvement. A comparison is *supported*
when its 95% interval lies above 0, *contradicted* when it lies below 0,
*inconclusive* otherwise. H1 is supported when its three comparisons are,
contradicted when any is; H3 at a size likewise over its two; H2 and H4
are their one comparison. In H3 the cloning baseline is the better of
`scratch` and %BC at that size by mean over tasks in this study's data (a
choice made after the data, which favours the baseline).
"""

from collections.abc import Mapping, Sequence
import os
from typing import Any

from absl import app
from absl import flags
import numpy as np

from configs import study2
from distill.io import fileio
from distill.report import aggregate
from distill.run import sweeps


REPS = 2000
SEED = 0
KEY = {'score': 'student_score', 'success_rate': 'student_success_rate'}


def _name(overrides: Mapping[str, Any]) -> str:
  return sweeps.configuration_name(overrides)


def _configs() -> dict[str, str]:
  """Short labels of the study's configurations -> configuration names."""
  row = study2._row  # pylint: disable=protected-access
  bc = {'student.bc_top_fraction': study2.BC_FRACTION}
  small = study2.SMALL
  return {
      'max_kl+previous': _name(row('max_kl', 'previous')),
      'round_robin': _name(row('round_robin')),
      'uniform': _name(row('uniform')),
      'mixture': _name(row('mixture')),
      'max_kl': _name(row('max_kl')),
      'scratch': _name(row('scratch')),
      '%BC': _name(row('scratch', **bc)),
      'max_kl+previous 1x8': _name(row('max_kl', 'previous', **small)),
      'mixture 1x8': _name(row('mixture', **small)),
      'scratch 1x8': _name(row('scratch', **small)),
      '%BC 1x8': _name(row('scratch', **small, **bc)),
      'max_kl+previous decay 0.9': _name(
          row('max_kl', 'previous', **{'surgery.decay': 0.9})),
  }


# (hypothesis, X, Y); Y 'cloning' / 'cloning 1x8' is the better baseline.
COMPARISONS = (
    ('H1', 'max_kl+previous', 'round_robin'),
    ('H1', 'max_kl+previous', 'uniform'),
    ('H1', 'max_kl+previous', 'mixture'),
    ('H2', 'max_kl+previous', 'max_kl'),
    ('H3 2x32', 'max_kl+previous', 'cloning'),
    ('H3 2x32', 'mixture', 'cloning'),
    ('H3 1x8', 'max_kl+previous 1x8', 'cloning 1x8'),
    ('H3 1x8', 'mixture 1x8', 'cloning 1x8'),
    ('H4', 'max_kl+previous decay 0.9', 'max_kl+previous'),
)
CLONING = {'cloning': ('scratch', '%BC'),
           'cloning 1x8': ('scratch 1x8', '%BC 1x8')}


def _verdict(est: Mapping[str, float]) -> str:
  if 'ci_low' not in est:
    return 'inconclusive'
  if est['ci_low'] > 0:
    return 'supported'
  if est['ci_high'] < 0:
    return 'contradicted'
  return 'inconclusive'


def _combine(verdicts: Sequence[str]) -> str:
  if all(v == 'supported' for v in verdicts):
    return 'supported'
  if any(v == 'contradicted' for v in verdicts):
    return 'contradicted'
  return 'inconclusive'


def verdicts(runs: Sequence[Mapping[str, Any]], metric: str = 'score'
             ) -> dict[str, Any]:
  """The pre-registered comparisons and verdicts from a study's runs.

  Args:
    runs: `sweeps.collect_runs`'s runs (`configuration`, `seed`, `tasks`).
    metric: 'score' or 'success_rate' (as points, 0-100).

  Returns:
    `{'metric', 'confidence_corrected', 'comparisons': [...],
    'hypotheses': {name: verdict}, 'missing': [labels without runs]}`.
  """
  key = KEY[metric]
  scale = 100.0 if metric == 'success_rate' else 1.0
  names = _configs()
  tasks = list(runs[0]['tasks']) if runs else []
  matrices = {}
  for label, name in names.items():
    rows = [[scale * float(r['tasks'][t][key]) for t in tasks]
            for r in runs if r['configuration'] == name]
    if rows:
      matrices[label] = np.array(rows)
  missing = [label for label in names if label not in matrices]
  for label, (a, b) in CLONING.items():
    have = [c for c in (a, b) if c in matrices]
    if len(have) == 2:
      better = a if matrices[a].mean() >= matrices[b].mean() else b
      matrices[label] = matrices[better]
      names[label] = names[better]
  corrected = 1.0 - 0.05 / len(COMPARISONS)
  out = []
  for hypothesis, x, y in COMPARISONS:
    row = {'hypothesis': hypothesis, 'x': x, 'y': y,
           'y_chosen': names.get(y) if y in CLONING else None}
    if x not in matrices or y not in matrices:
      row['verdict'] = 'not run'
      out.append(row)
      continue
    a, b = matrices[x], matrices[y]
    row.update(
        runs=[len(a), len(b)],
        difference=aggregate.mean_difference(a, b, reps=REPS, seed=SEED),
        difference_corrected=aggregate.mean_difference(
            a, b, reps=REPS, seed=SEED, confidence=corrected),
        improvement=dict(zip(tasks, aggregate.per_task_improvement(
            a, b, reps=REPS, seed=SEED))))
    row['verdict'] = _verdict(row['difference'])
    row['verdict_corrected'] = _verdict(row['difference_corrected'])
    out.append(row)
  hypotheses = {}
  for hypothesis in dict.fromkeys(h for h, _, _ in COMPARISONS):
    vs = [r['verdict'] for r in out if r['hypothesis'] == hypothesis]
    hypotheses[hypothesis] = ('not run' if 'not run' in vs
                              else _combine(vs))
  return {'metric': metric, 'confidence_corrected': corrected,
          'tasks': tasks, 'comparisons': out, 'hypotheses': hypotheses,
          'missing': missing}


GATE_LABELS = {
    'passed': 'Testbed passed its gate (docs/gate.md).',
    'not_passed': ('**Testbed did not pass its gate** (docs/gate.md): its'
                   ' teachers do not beat the best cloning of their data,'
                   ' so these verdicts are read as such.'),
}


def render_markdown(result: Mapping[str, Any], gate: str | None = None
                    ) -> str:
  """The verdict table as Markdown, under the gate's label when given.

  Args:
    result: `verdicts`'s result.
    gate: None, or a key of `GATE_LABELS`: whether the testbed passed its
      gate, said above the tables.
  """
  fmt = aggregate.format_estimate
  lines = [GATE_LABELS[gate], ''] if gate else []
  lines += ['| hypothesis | X | Y | runs | X - Y, 95% | corrected interval'
           ' | verdict | corrected |', '|---|---|---|---|---|---|---|---|']
  for r in result['comparisons']:
    y = r['y'] + (f' ({r["y_chosen"]})' if r.get('y_chosen') else '')
    if r['verdict'] == 'not run':
      lines.append(f'| {r["hypothesis"]} | {r["x"]} | {y} | | | | not run |'
                   ' |')
      continue
    n = min(r['runs'])
    lines.append(
        f'| {r["hypothesis"]} | {r["x"]} | {y} | {r["runs"][0]} /'
        f' {r["runs"][1]} | {fmt(r["difference"], n)} |'
        f' {fmt(r["difference_corrected"], n)} | {r["verdict"]} |'
        f' {r["verdict_corrected"]} |')
  lines += ['', '| hypothesis | verdict |', '|---|---|']
  lines += [f'| {h} | {v} |' for h, v in result['hypotheses'].items()]
  return '\n'.join(lines) + '\n'


def define_flags() -> None:
  """Defines the command's flags, only when it runs as a command (other
  commands define flags of the same names)."""
  flags.DEFINE_enum(
      'metric', 'score', ['score', 'success_rate'],
      'The primary measure: normalized score, or success rate (MT10, points).')
  flags.DEFINE_string('out', '', 'Write <out>.json and <out>.md.')
  flags.DEFINE_enum(
      'gate', None, list(GATE_LABELS),
      "Whether the testbed passed its gate (docs/gate.md): 'passed' or"
      " 'not_passed', said above every table (required).")
  flags.mark_flag_as_required('gate')


def main(argv: Sequence[str]) -> None:
  if len(argv) != 2:
    raise app.UsageError('usage: python -m experiments.verdicts STUDY_DIR')
  _, runs, _ = sweeps.collect_runs(argv[1])
  result = verdicts(runs, flags.FLAGS.metric)
  result['gate'] = flags.FLAGS.gate
  text = render_markdown(result, flags.FLAGS.gate)
  print(text)
  if flags.FLAGS.out:
    os.makedirs(os.path.dirname(flags.FLAGS.out) or '.', exist_ok=True)
    fileio.write_json(flags.FLAGS.out + '.json', result)
    fileio.write_atomic(flags.FLAGS.out + '.md', text)


if __name__ == '__main__':
  define_flags()
  app.run(main)
