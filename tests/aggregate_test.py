"""distill/report/aggregate.py and sweep_summary.py against hand values."""

import itertools
import json

import numpy as np
import pytest

from distill.report import aggregate
from distill.report import sweep_summary

X_2x2 = np.array([[10.0, 20.0], [30.0, 40.0]])


def test_iqm_of_known_arrays():
  # Four scores: the 25% trim drops one from each end, mean(20, 30).
  assert aggregate.iqm(X_2x2) == pytest.approx(25.0)
  # Eight scores: drops 2 from each end (1, 2 and 100, 7): mean(3..6).
  x = np.array([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 100.0]])
  assert aggregate.iqm(x) == pytest.approx(4.5)
  assert aggregate.iqm([[7.0]]) == 7.0


def test_one_run_has_no_interval():
  est = aggregate.interval_estimates([[10.0, 20.0, 60.0]], reps=50)
  assert est['runs'] == 1 and est['tasks'] == 3
  # Three scores: trim_mean cuts int(0.25 * 3) = 0 from each end.
  assert est['iqm'] == {'value': pytest.approx(30.0)}  # no ci_low/ci_high
  assert est['mean'] == {'value': pytest.approx(30.0)}
  assert aggregate.format_estimate(est['iqm'], 1) == '30.0 (n=1)'


def _stratified_iqms(scores_RxT):
  """Every IQM a stratified bootstrap can draw (runs resampled per task)."""
  runs, tasks = scores_RxT.shape
  out = []
  for rows in itertools.product(itertools.product(range(runs), repeat=runs),
                                repeat=tasks):
    sample = np.stack([scores_RxT[list(rows[t]), t] for t in range(tasks)],
                      axis=1)
    out.append(aggregate.iqm(sample))
  return np.array(out)


def test_two_runs_give_a_stratified_bootstrap_interval():
  est = aggregate.interval_estimates(X_2x2, reps=4000, seed=3)
  assert est['runs'] == 2
  assert est['iqm']['value'] == pytest.approx(25.0)
  assert est['mean']['value'] == pytest.approx(25.0)
  # Enumerated: each task column resampled from its two runs gives 16
  # equally likely draws (e.g. hopper (10, 10) with walker2d (20, 40): IQM of
  # 10, 10, 20, 40 = 15), whose IQMs are 15 and 35 with probability 3/16
  # each. 3/16 > 2.5%, so the 2.5% and 97.5% percentiles of 4000 draws are
  # exactly 15 and 35 (the chance that fewer than 2.5% of them are 15 is
  # negligible).
  possible = _stratified_iqms(X_2x2)
  values, counts = np.unique(possible, return_counts=True)
  assert values.tolist() == [15.0, 20.0, 25.0, 30.0, 35.0]
  assert counts.tolist() == [3, 2, 6, 2, 3]
  assert est['iqm']['ci_low'] == 15.0 and est['iqm']['ci_high'] == 35.0
  # Same inputs and seed: the same interval.
  np.random.seed(123)
  again = aggregate.interval_estimates(X_2x2, reps=4000, seed=3)
  assert again == est
  assert aggregate.format_estimate(est['iqm'], 2).startswith('25.0 [')


def test_intervals_do_not_depend_on_numpy_global_random_state():
  # rliable draws its resampling indices from NumPy's global generator. With
  # 3 runs x 2 tasks and 30 replications, the 2.5% percentile interpolates
  # between the two lowest of 30 draws, so it moves with the draws: before
  # the bootstrap seeded them itself, these differed between global states.
  x = [[0.3, 1.7], [1.1, 0.2], [2.9, 1.3]]
  results = []
  for global_seed in (0, 1, 2):
    np.random.seed(global_seed)
    before = np.random.get_state()[1].copy()
    results.append((aggregate.interval_estimates(x, reps=30, seed=5),
                    aggregate.probability_of_improvement(
                        x, np.array(x)[::-1] * 0.9, reps=30, seed=5)))
    # The caller's global stream is left where it was.
    np.testing.assert_array_equal(np.random.get_state()[1], before)
  assert results[0] == results[1] == results[2]
  # A different bootstrap seed gives different draws (the check can fail).
  assert aggregate.interval_estimates(x, reps=30, seed=6) != results[0][0]


def test_identical_runs_give_a_zero_width_interval():
  est = aggregate.interval_estimates([[5.0, 9.0], [5.0, 9.0]], reps=100)
  assert est['iqm']['ci_low'] == est['iqm']['ci_high'] == pytest.approx(7.0)


def test_probability_of_improvement():
  better = X_2x2 + 100.0
  p = aggregate.probability_of_improvement(better, X_2x2, reps=200)
  assert p == {'value': 1.0, 'ci_low': 1.0, 'ci_high': 1.0}
  p = aggregate.probability_of_improvement(X_2x2, better, reps=200)
  assert p['value'] == 0.0
  # Equal configurations: every task a tie, 1/2.
  assert aggregate.probability_of_improvement(
      X_2x2, X_2x2, reps=50)['value'] == 0.5
  # Task 0: 2 of 4 pairs better; task 1: 4 of 4 -> mean(0.5, 1.0).
  x = np.array([[15.0, 50.0], [25.0, 60.0]])
  assert aggregate.probability_of_improvement(
      x, X_2x2, reps=50)['value'] == pytest.approx(0.75)
  # One run on either side: a point, no interval.
  p = aggregate.probability_of_improvement(better[:1], X_2x2, reps=50)
  assert p == {'value': 1.0}
  with pytest.raises(ValueError, match='same tasks'):
    aggregate.probability_of_improvement(X_2x2, X_2x2[:, :1])


def test_performance_profile():
  prof = aggregate.performance_profile(X_2x2, [0.0, 15.0, 35.0, 50.0],
                                       reps=100)
  assert prof['fraction'] == [1.0, 0.75, 0.25, 0.0]
  assert len(prof['ci_low']) == 4
  assert all(lo <= f <= hi for lo, f, hi in zip(
      prof['ci_low'], prof['fraction'], prof['ci_high']))
  one = aggregate.performance_profile(X_2x2[:1], [15.0])
  assert one == {'fraction': [0.5]}


def test_bad_scores_are_refused():
  with pytest.raises(ValueError, match='runs, tasks'):
    aggregate.interval_estimates(np.zeros(3))
  with pytest.raises(ValueError, match='non-finite'):
    aggregate.interval_estimates([[1.0, np.nan]])


def _run(member, configuration, seed, student, teacher=(50.0, 60.0)):
  tasks = ('hopper', 'walker2d')
  return {'member': member, 'configuration': configuration, 'seed': seed,
          'tasks': {t: {'student_score': s, 'teacher_score': tt,
                        'dataset_score': 40.0}
                    for t, s, tt in zip(tasks, student, teacher)},
          'student_params': 1000, 'teacher_params': dict.fromkeys(tasks, 5000),
          'wall_s': 1.0}


def test_summarize_and_write_sweep_report(tmp_path):
  runs = [_run('a,seed=0', 'a', 0, (10.0, 20.0)),
          _run('a,seed=1', 'a', 1, (30.0, 40.0)),
          _run('b,seed=0', 'b', 0, (110.0, 120.0)),
          _run('b,seed=1', 'b', 1, (130.0, 140.0)),
          _run('c,seed=0', 'c', 0, (5.0, 60.0))]
  summary = sweep_summary.summarize(runs, baseline='a', reps=300, seed=1,
                                missing=[{'name': 'c,seed=1',
                                          'status': 'failed', 'log': 'x.log'}])
  a, b, c = (summary['configurations'][k] for k in 'abc')
  assert summary['tasks'] == ['hopper', 'walker2d']
  assert a['n'] == 2 and c['n'] == 1
  assert a['student']['iqm']['value'] == pytest.approx(25.0)
  assert a['student'] == aggregate.interval_estimates(X_2x2, 300, 1)
  assert a['probability_of_improvement'] is None  # the baseline itself
  assert b['probability_of_improvement'] == {'value': 1.0, 'ci_low': 1.0,
                                             'ci_high': 1.0}
  assert 'ci_low' not in c['student']['iqm']
  assert 'ci_low' not in c['probability_of_improvement']
  # Student / teacher: mean 25 over mean 55.
  assert a['student_teacher_ratio'] == pytest.approx(25.0 / 55.0)
  assert a['student_params'] == 1000
  hopper = a['per_task']['hopper']
  assert hopper == {'student_mean': 20.0,
                    'student_std': pytest.approx(np.std([10.0, 30.0], ddof=1)),
                    'teacher_mean': 50.0,
                    'student_mean_estimate': hopper['student_mean_estimate'],
                    'probability_of_improvement': None}  # the baseline
  # Hopper's two runs, 10 and 30: resampled means 10, 20 or 30.
  assert hopper['student_mean_estimate']['value'] == 20.0
  assert hopper['student_mean_estimate']['ci_low'] == 10.0
  assert hopper['student_mean_estimate']['ci_high'] == 30.0
  assert b['per_task']['walker2d']['probability_of_improvement'] == {
      'value': 1.0, 'ci_low': 1.0, 'ci_high': 1.0}
  assert 'ci_low' not in c['per_task']['hopper']['student_mean_estimate']
  # Four values per configuration: the IQM keeps the middle two, one of each
  # task for a (20, 30), so it is even.
  assert a['iqm_kept'] == {'hopper': 1, 'walker2d': 1}
  assert not a['iqm_uneven']
  assert summary['datasets'] == {
      'hopper': {'dataset_mean': 40.0, 'behaviour_score': 69.9},
      'walker2d': {'dataset_mean': 40.0, 'behaviour_score': 46.7}}
  assert c['per_task']['walker2d']['student_std'] is None
  assert [r['student_scores'] for r in a['runs']] == [
      {'hopper': 10.0, 'walker2d': 20.0}, {'hopper': 30.0, 'walker2d': 40.0}]
  prof = summary['performance_profile']
  assert len(prof['taus']) == len(prof['configurations']['b']['fraction'])

  sweep_summary.write_sweep_report(str(tmp_path), summary, title='Sweep t')
  with open(tmp_path / 'sweep.json') as f:
    assert json.load(f) == json.loads(json.dumps(summary))
  text = (tmp_path / 'sweep.md').read_text()
  assert '| `a` | 2 | 25.0 [' in text  # the mean comes first
  assert '| dataset | 40.0 | 40.0 |' in text
  assert '| best behaviour policy | 69.9 | 46.7 |' in text
  assert '| `b` | 120.0 [110.0, 130.0]; P 1.00 [1.00, 1.00] |' in text
  assert '| `c` | 1 | ' in text and '(n=1)' in text
  assert 'baseline' in text and '| `c,seed=1` | failed | x.log |' in text
  for png in ('sweep_mean.png', 'sweep_iqm.png', 'sweep_improvement.png',
              'sweep_profiles.png', 'sweep_tasks.png'):
    assert (tmp_path / png).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert f'({png})' in text


def test_summarize_success_rates_in_points():
  runs = [_run('a,seed=0', 'a', 0, (10.0, 20.0)),
          _run('a,seed=1', 'a', 1, (30.0, 40.0))]
  for run, rates in zip(runs, ((0.25, 0.5), (0.75, 1.0))):
    for t, p in zip(('hopper', 'walker2d'), rates):
      run['tasks'][t].update(student_success_rate=p, teacher_success_rate=1.0,
                             dataset_success_rate=0.5)
  summary = sweep_summary.summarize(runs, reps=300, seed=1,
                                    metric='success_rate')
  a = summary['configurations']['a']
  assert summary['metric'] == 'success_rate'
  assert 'success rate' in summary['score']
  assert a['student'] == aggregate.interval_estimates(
      np.array([[25.0, 50.0], [75.0, 100.0]]), 300, 1)
  assert [r['student_scores'] for r in a['runs']] == [
      {'hopper': 25.0, 'walker2d': 50.0}, {'hopper': 75.0, 'walker2d': 100.0}]
  assert a['per_task']['walker2d']['teacher_mean'] == 100.0
  assert a['student_teacher_ratio'] == pytest.approx(62.5 / 100.0)
  # The behaviour policies were scored in returns, not successes.
  assert summary['datasets']['hopper'] == {'dataset_mean': 50.0,
                                           'behaviour_score': None}
  with pytest.raises(ValueError, match="metric 'return'"):
    sweep_summary.summarize(runs, reps=10, metric='return')


def test_summarize_refuses_a_baseline_without_runs_and_mixed_tasks():
  runs = [_run('a,seed=0', 'a', 0, (1.0, 2.0))]
  with pytest.raises(ValueError, match="baseline 'z'"):
    sweep_summary.summarize(runs, baseline='z', reps=10)
  other = _run('b,seed=0', 'b', 0, (1.0, 2.0))
  other['tasks'] = {'hopper': other['tasks']['hopper']}
  with pytest.raises(ValueError, match='has tasks'):
    sweep_summary.summarize(runs + [other], reps=10)


def test_per_task_means_and_improvement():
  est = aggregate.per_task_means(X_2x2, reps=500)
  assert [e['value'] for e in est] == [20.0, 30.0]
  assert (est[0]['ci_low'], est[0]['ci_high']) == (10.0, 30.0)
  assert aggregate.per_task_means(X_2x2[:1]) == [{'value': 10.0},
                                                 {'value': 20.0}]
  # Task 0: 2 of 4 pairs better; task 1: 4 of 4 (their mean is the 0.75 of
  # probability_of_improvement).
  x = np.array([[15.0, 50.0], [25.0, 60.0]])
  per_task = aggregate.per_task_improvement(x, X_2x2, reps=50)
  assert [p['value'] for p in per_task] == [0.5, 1.0]
  assert per_task[1]['ci_low'] == per_task[1]['ci_high'] == 1.0


def test_mean_difference():
  diff = aggregate.mean_difference(X_2x2 + 4.0, X_2x2, reps=500)
  assert diff['value'] == pytest.approx(4.0)
  assert diff['ci_low'] < 4.0 < diff['ci_high']
  assert aggregate.mean_difference(X_2x2[:1], X_2x2) == {
      'value': pytest.approx(-10.0)}
  with pytest.raises(ValueError, match='same tasks'):
    aggregate.mean_difference(X_2x2, X_2x2[:, :1])


def test_iqm_kept_names_the_tasks_when_they_differ_in_scale():
  # Five seeds of four tasks as in the study: hopper high, walker2d low, the
  # two halfcheetah tasks in between. The IQM drops 5 values at each end:
  # all of hopper's and walker2d's.
  rng = np.random.default_rng(0)
  x = np.stack([41 + rng.normal(size=5) * 0.3, 40 + rng.normal(size=5) * 0.3,
                70 + rng.normal(size=5) * 5, 20 + rng.normal(size=5) * 5],
               axis=1)
  kept = aggregate.iqm_kept(x)
  assert kept == [5, 5, 0, 0]
  assert aggregate.iqm(x) == pytest.approx(np.mean(x[:, :2]))
  assert aggregate.iqm_uneven(kept)
  tasks = ['hc-b', 'hc-f', 'hopper', 'walker2d']
  assert aggregate.format_iqm_kept(tasks, kept) == (
      'hc-b 5, hc-f 5; none of hopper, walker2d')
  # Tasks of one scale: each keeps about half its values.
  even = rng.normal(size=(5, 4))
  assert sum(aggregate.iqm_kept(even)) == 10
  assert aggregate.iqm_uneven([3, 2, 3, 2]) is False
  assert aggregate.iqm_uneven([2, 4, 2, 2]) is False  # none under 1.25
  assert aggregate.iqm_uneven([4, 1, 3, 2]) is True  # 1 < 0.5 x 2.5
  assert aggregate.format_iqm_kept(tasks, [3, 2, 3, 2]) == 'even'


def test_improvement_is_rliables_statistic_bit_for_bit():
  from rliable import metrics  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(3)
  for runs_x, runs_y in ((5, 5), (10, 5), (3, 7)):
    # Whole numbers in a small range: many ties between and within rows.
    x = rng.integers(0, 6, size=(runs_x, 4)).astype(np.float64)
    y = rng.integers(0, 6, size=(runs_y, 4)).astype(np.float64)
    got = aggregate.improvement_T(x, y)
    want = [metrics.probability_of_improvement(x[:, [t]], y[:, [t]])
            for t in range(4)]
    assert got.tolist() == want
    assert got.mean() == metrics.probability_of_improvement(x, y)
  assert aggregate.improvement_T(x, x).tolist() == [0.5] * 4
