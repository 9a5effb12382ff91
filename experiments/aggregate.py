r"""Aggregates a sweep directory: `sweep.json`, `sweep.md` and plots.

  python -m experiments.aggregate runs/study
  python -m experiments.aggregate runs/study \
      --baseline=curriculum=uniform,surgery=none --reps=10000

Reads `DIR/sweep_state.json` (written by `experiments.sweep`, which also
runs this at its end) and every finished member's `results.json` (a
published study's `members.jsonl`, experiments/publish.py). Members
that differ only by seed form one configuration; per configuration: the
mean of the normalized student score over tasks x seeds (the primary
aggregate) and each task's mean, with 95% stratified bootstrap intervals
(rliable; none for a single run, which says n=1), the probability of
improvement over `--baseline` (default: the sweep's declared baseline)
overall and per task, the IQM (secondary; with four tasks its kept values
can come from a subset of them, which `sweep.md` names), performance
profiles, the student / teacher score ratio and the parameter count; and
each task's dataset score and best behaviour policy. `sweep.json` keeps each
run's per-task scores, so the aggregates can be recomputed from it (see
`distill.report.sweep_summary.summarize`).
"""

import os

from absl import app
from absl import flags
from absl import logging

from distill.report import aggregate
from distill.report import sweep_summary
from distill.run import sweeps

_BASELINE = flags.DEFINE_string(
    'baseline', None, "Configuration the others are compared with (default:"
    " the sweep's; '' for none).")
_REPS = flags.DEFINE_integer(
    'reps', None, 'Bootstrap replications (default: the sweep config\'s'
    ' report.reps).')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the bootstrap.')


def main(argv):
  if len(argv) != 2:
    raise app.UsageError('usage: python -m experiments.aggregate DIR'
                         ' [--baseline=NAME] [--reps=N]')
  root = argv[1]
  if _REPS.value is not None and _REPS.value < 1:
    raise app.UsageError(f'--reps={_REPS.value}: must be >= 1')
  try:
    state, runs, missing = sweeps.collect_runs(root)
  except FileNotFoundError as e:
    raise app.UsageError(str(e)) from e
  names = list(dict.fromkeys(j['configuration'] for j in state['jobs']
                             if j['kind'] == 'member'))
  baseline = (state.get('baseline', '') if _BASELINE.value is None
              else _BASELINE.value)
  if baseline and baseline not in names:
    raise app.UsageError(f'--baseline={baseline!r} is not a configuration of'
                         f' {root}; configurations: {names}')
  if not runs:
    raise app.UsageError(f'{root}: no member has results yet')
  finished = {r['configuration'] for r in runs}
  if baseline and baseline not in finished:
    if _BASELINE.value is not None:
      raise app.UsageError(f'--baseline={baseline!r}: no finished member of'
                           f' that configuration in {root}')
    logging.warning('the baseline %s has no results yet; no probability of'
                    ' improvement', baseline)
    baseline = ''
  reps = _REPS.value or state.get('reps', 2000)
  summary = sweep_summary.summarize(runs, baseline=baseline, reps=reps,
                                seed=_SEED.value, missing=missing)
  sweep_summary.write_sweep_report(
      root, summary, title=f'Sweep {os.path.basename(os.path.abspath(root))}')
  for name, c in summary['configurations'].items():
    logging.info('%s: mean %s, IQM %s', name,
                 aggregate.format_estimate(c['student']['mean'], c['n']),
                 aggregate.format_estimate(c['student']['iqm'], c['n']))
  if missing:
    logging.warning('%d members without results: %s', len(missing),
                    [m['name'] for m in missing])
  print(os.path.join(root, 'sweep.md'))


if __name__ == '__main__':
  app.run(main)
