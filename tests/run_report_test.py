"""distill/report/run_report.py: the mean first, per-task intervals, reference
scores."""

import numpy as np
import pytest

from distill.report import aggregate
from distill.report import run_report


def _member(seed, student):
  tasks = ('halfcheetah-forward', 'hopper', 'walker2d', 'other')
  return {
      'seed': seed,
      'tasks': {t: {'dataset_score': 40.0, 'teacher_score': 50.0,
                    'teacher_score_std': 1.0, 'student_score': s,
                    'student_score_std': 1.0}
                for t, s in zip(tasks, student)},
      'teacher_params': dict.fromkeys(tasks, 100), 'student_params': 50,
      'latency_ms': {}, 'student_checkpoint': 'last', 'student_steps': 10,
      'teacher_steps': 10, 'wall_s': {},
      'curriculum': {'name': 'max_kl', 'counts': {}},
      'surgery': {'name': 'previous', 'projected_fraction': 0.0}}


def test_population_report_puts_the_mean_first_and_names_the_iqm_tasks():
  # Four tasks on different scales: the IQM of the 8 values keeps the
  # middle 4, those of halfcheetah-forward and walker2d.
  members = [_member(0, (41.0, 70.0, 30.0, 1.0)),
             _member(1, (42.0, 75.0, 31.0, 2.0))]
  results = run_report.population_results(members, reps=200)
  student = results['aggregate']['student']
  assert student['iqm_kept'] == {'halfcheetah-forward': 2, 'hopper': 0,
                                 'walker2d': 2, 'other': 0}
  est = results['tasks']['hopper']['student_score_estimate']
  assert est['value'] == pytest.approx(72.5)
  assert (est['ci_low'], est['ci_high']) == (70.0, 75.0)
  text = run_report.render_population_markdown(results)
  assert '| policy | runs | mean | IQM |' in text
  mean = aggregate.format_estimate(student['mean'], 2)
  assert f'| student | 2 | {mean} |' in text
  assert ('The student IQM keeps values of: halfcheetah-forward 2,'
          ' walker2d 2; none of hopper, other.') in text
  # Per task: the interval, the teacher, the dataset, the best behaviour
  # policy (measured for the suite's tasks, '-' for others).
  assert '| hopper | 72.5 [70.0, 75.0] | 50.0 | 40.0 | 69.9 |' in text
  assert '| other | 1.5 [1.0, 2.0] | 50.0 | 40.0 | - |' in text


def test_single_run_report_shows_the_best_behaviour_policy():
  results = _member(0, (41.0, 70.0, 30.0, 1.0))
  results['aggregate'] = {'student': aggregate.interval_estimates(
      np.array([[41.0, 70.0, 30.0, 1.0]]))}
  text = run_report.render_markdown(results)
  assert ('| task | dataset | teacher | student | student / teacher |'
          ' best behaviour policy |') in text
  assert '| 0.82 | 42.9 |' in text  # halfcheetah-forward: 41 / 50
  assert '| 0.02 | - |' in text  # no measured behaviour policy
