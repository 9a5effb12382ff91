"""The pre-registered verdicts (experiments/verdicts.py) on synthetic runs."""

import numpy as np

from distill.report import aggregate
from experiments import verdicts

TASKS = ('hopper', 'walker2d')


def _runs(means, seeds=5, spread=1.0):
  """Runs whose per-task scores are `means[label] + noise`."""
  rng = np.random.default_rng(0)
  names = verdicts._configs()  # pylint: disable=protected-access
  runs = []
  for label, mean in means.items():
    for seed in range(seeds):
      runs.append({'configuration': names[label], 'seed': seed,
                   'member': f'{names[label]},seed={seed}',
                   'tasks': {t: {'student_score': mean + spread
                                 * rng.standard_normal()} for t in TASKS}})
  return runs


def test_supported_contradicted_inconclusive_and_not_run():
  runs = _runs({'max_kl+previous': 50.0, 'round_robin': 40.0,
                'uniform': 40.0, 'mixture': 60.0, 'max_kl': 49.5,
                'scratch': 30.0, '%BC': 45.0})
  result = verdicts.verdicts(runs)
  by = {(r['hypothesis'], r['x'], r['y']): r
        for r in result['comparisons']}
  assert by['H1', 'max_kl+previous', 'round_robin']['verdict'] == 'supported'
  assert by['H1', 'max_kl+previous', 'mixture']['verdict'] == 'contradicted'
  # H1 needs all three: contradicted as soon as one is.
  assert result['hypotheses']['H1'] == 'contradicted'
  d = by['H2', 'max_kl+previous', 'max_kl']['difference']
  assert d['ci_low'] < 0 < d['ci_high']
  assert result['hypotheses']['H2'] == 'inconclusive'
  # H3: the better cloning baseline (%BC, 45 > 30) is the one compared.
  h3 = by['H3 2x32', 'max_kl+previous', 'cloning']
  assert h3['y_chosen'].endswith('student.bc_top_fraction=0.25')
  assert h3['difference']['value'] == np.mean(
      [r['tasks'][t]['student_score'] for r in runs
       if r['configuration'] == verdicts._configs()['max_kl+previous']  # pylint: disable=protected-access
       for t in TASKS]) - np.mean(
           [r['tasks'][t]['student_score'] for r in runs
            if r['configuration'] == h3['y_chosen'] for t in TASKS])
  assert result['hypotheses']['H4'] == 'not run'
  assert 'max_kl+previous decay 0.9' in result['missing']
  # The corrected interval is wider than the 95% one.
  c = by['H1', 'max_kl+previous', 'round_robin']
  assert (c['difference_corrected']['ci_high']
          - c['difference_corrected']['ci_low']
          > c['difference']['ci_high'] - c['difference']['ci_low'])
  text = verdicts.render_markdown(result)
  assert '| H1 | contradicted |' in text and 'not run' in text
  assert 'gate' not in text
  labelled = verdicts.render_markdown(result, 'not_passed')
  assert labelled.startswith('**Testbed did not pass its gate**')
  assert labelled.endswith(text)


def test_the_difference_is_aggregates_mean_difference():
  runs = _runs({'max_kl+previous': 50.0, 'max_kl': 45.0})
  result = verdicts.verdicts(runs)
  names = verdicts._configs()  # pylint: disable=protected-access
  x = np.array([[r['tasks'][t]['student_score'] for t in TASKS] for r in runs
                if r['configuration'] == names['max_kl+previous']])
  y = np.array([[r['tasks'][t]['student_score'] for t in TASKS] for r in runs
                if r['configuration'] == names['max_kl']])
  h2 = [r for r in result['comparisons'] if r['hypothesis'] == 'H2'][0]
  assert h2['difference'] == aggregate.mean_difference(x, y, reps=2000,
                                                       seed=0)
  assert h2['verdict'] == 'supported'
