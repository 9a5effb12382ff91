"""Tests of Meta-World MT10: tasks, datasets, success rates, configs."""

import subprocess
import sys

import numpy as np
import pytest

from configs import mt10 as mt10_config
from configs import study
from distill import datasets
from distill import pipeline
from distill import preflight
from distill import report
from distill import evaluation
from distill.data import d4rl
from distill.data import scores
from distill.data import summary
from distill.envs import mt10
from distill.envs import mt10_suite
from distill.envs import rollout
from distill.envs import suite
from distill.envs import tasks
from distill.train import student as student_lib

# data_sha256 of `_tiny()` (metaworld 3.1.1, mujoco 3.3.0, generator 1).
PINNED = '76ba15323620b99b3e6e35a47b6960a583db82943fd306a5088df7825e44e365'


def _tiny(num_workers=1):
  return mt10_suite.generate('reach-v3', 'mixed', num_transitions=200,
                             seed=0, num_envs=2, num_workers=num_workers)


@pytest.fixture(name='data_dir')
def fixture_data_dir(tmp_path, monkeypatch):
  monkeypatch.setenv('DISTILL_DATA_DIR', str(tmp_path / 'cache'))
  monkeypatch.setitem(mt10_suite.DEFAULTS, 'num_workers', 1)
  return tmp_path / 'cache'


def test_the_task_table_holds_mt10():
  assert set(mt10.TASK_NAMES) <= set(tasks.ALL_TASKS)
  assert not set(mt10.TASK_NAMES) & set(tasks.TASKS)
  task = tasks.get_task('pick-place-v3')
  assert (task.obs_dim, task.act_dim, task.max_episode_steps) == (39, 4, 500)
  assert (task.ref_min, task.ref_max) == scores.REF_RETURNS['pick-place-v3']
  assert scores.reference_returns('suite:mt10/push-v3-mixed') == (
      scores.REF_RETURNS['push-v3'])


@pytest.mark.slow  # A Python start (a few seconds on a busy CPU).
def test_importing_distill_does_not_import_metaworld():
  code = ('import sys, distill.pipeline, distill.evaluation, distill.datasets;'
          ' print("metaworld" in sys.modules)')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                       text=True, check=True)
  assert out.stdout.strip() == 'False'


def test_goals_follow_the_seed():
  env = tasks.make_env('reach-v3')
  goals = []
  for seed in (3, 3, 4):
    obs, _ = env.reset(seed=seed)
    goals.append(obs[-3:].copy())
  next_obs, _ = env.reset()
  env.close()
  assert obs.shape == (39,)
  np.testing.assert_array_equal(goals[0], goals[1])
  assert not np.array_equal(goals[0], goals[2])
  assert not np.array_equal(goals[2], next_obs[-3:])


@pytest.mark.slow  # The same rollout in a worker process.
def test_worker_processes_do_not_change_the_data():
  assert _tiny(num_workers=2)[1]['data_sha256'] == PINNED


def test_tiny_dataset_is_the_same_twice_and_pinned():
  data, card = _tiny()
  data2, card2 = _tiny()
  assert card['data_sha256'] == card2['data_sha256'] == PINNED
  assert card['data_sha256'] == d4rl.data_sha256(data2,
                                                  mt10_suite.DATA_KEYS)
  assert card['noise_stds'] == list(mt10_suite.NOISE_STDS['mixed'])
  assert card['versions']['metaworld'] == '3.1.1'


def test_datasets_are_valid_d4rl_cached_and_checked(data_dir):
  data = datasets.load_dataset('suite:mt10/reach-v3-medium',
                               suite_transitions=120)
  d4rl.validate(data, source='mt10')
  assert data['observations'].shape == (120, 39)
  assert data['actions'].shape == (120, 4)
  assert np.all(np.abs(data['actions']) <= 1.0)
  assert not data['terminals'].any()
  assert data['timeouts'].sum() == 10  # 10 sub-envs, each cut by the budget
  assert set(np.unique(data[mt10_suite.SUCCESS_KEY])) <= {0.0, 1.0}
  card = suite.read_card('reach-v3', 'medium', num_transitions=120)
  path = mt10_suite.dataset_path('reach-v3', 'medium', num_transitions=120)
  assert path.startswith(str(data_dir / 'mt10'))
  assert card['file_sha256'] and card['data_sha256'] == d4rl.data_sha256(
      data, mt10_suite.DATA_KEYS)
  assert datasets.fingerprint('suite:mt10/reach-v3-medium',
                              suite_transitions=120)['suite_file'] == (
                                  path.rsplit('/', 1)[1])


def test_spec_errors_name_the_mt10_form():
  with pytest.raises(d4rl.DatasetError, match='suite:mt10/reach-v3'):
    suite.load_spec('suite:reach-v3-medium')
  with pytest.raises(d4rl.DatasetError, match='valid: medium, mixed'):
    suite.parse_name('mt10/reach-v3-expert')
  with pytest.raises(d4rl.DatasetError, match='unknown MT10 task'):
    suite.parse_name('mt10/hopper-medium')
  assert suite.parse_name('mt10/pick-place-v3-mixed') == ('pick-place-v3',
                                                          'mixed')


def test_success_rate_is_read_from_infos():
  timeouts = np.zeros(12, bool)
  timeouts[[3, 7, 11]] = True
  success = np.zeros(12, np.float32)
  success[2] = 1.0  # episode 0 succeeds before its last step
  success[11] = 1.0  # episode 2 at its last step
  data = dict(observations=np.zeros((12, 39), np.float32),
              actions=np.zeros((12, 4), np.float32),
              rewards=np.ones(12, np.float32), terminals=np.zeros(12, bool),
              timeouts=timeouts, **{mt10_suite.SUCCESS_KEY: success})
  info = summary.summarize(data, 'suite:mt10/push-v3-medium')
  assert info['success_rate'] == pytest.approx(2 / 3)
  np.testing.assert_array_equal(
      mt10_suite.episode_stats(data)['successes'], [1.0, 0.0, 1.0])
  # A vector step: env 1's episode ended (its success in final_info).
  info = {'success': np.array([1.0, 0.0]), '_success': np.array([True, False]),
          'final_info': {'success': np.array([0.0, 1.0]),
                         '_success': np.array([False, True])}}
  np.testing.assert_array_equal(
      rollout.step_successes(info, np.array([False, True])), [1.0, 1.0])
  assert np.isnan(rollout.step_successes({}, np.array([False]))).all()


def _zero_policy(rtg, states, actions, timesteps, mask, key, task=None):
  del rtg, actions, timesteps, mask, key, task
  return np.zeros((states.shape[0], 4), np.float32)


def test_evaluation_reports_success_rates_for_all_tasks_at_once():
  common = dict(episodes=2, num_envs=2, seed=0, context_len=2,
                rtg_scale=1000.0, max_timestep=500, state_size=39,
                action_size=4, max_episode_steps=5, env_threads=1)
  results = evaluation.evaluate_tasks(
      _zero_policy, ['reach-v3', 'drawer-close-v3'], task_ids=[0, 1],
      target_returns=[4000.0, 4000.0], state_means=[np.zeros(39)] * 2,
      state_stds=[np.ones(39)] * 2, **common)
  for r in results.values():
    assert r['success_rate'] in (0.0, 0.5, 1.0)
    assert len(r['successes']) == 2 and r['lengths'] == [5, 5]
  alone = evaluation.evaluate(
      _zero_policy, 'reach-v3', target_return=4000.0,
      state_mean=np.zeros(39), state_std=np.ones(39), **common)
  assert alone['successes'] == results['reach-v3']['successes']
  assert alone['returns'] == results['reach-v3']['returns']


def test_report_shows_success_rates():
  tasks_ = {'push-v3': dict(dataset_success_rate=0.5,
                            teacher_success_rate=0.25,
                            student_success_rate=1.0)}
  lines = '\n'.join(report._success_table(tasks_))  # pylint: disable=protected-access
  assert '| push-v3 | 0.50 | 0.25 | 1.00 |' in lines
  assert not report._success_table({'hopper': {}})  # pylint: disable=protected-access


@pytest.mark.parametrize('arg', [None, 'smoke'])
def test_mt10_configs_build_and_pass_the_checks(arg):
  config = mt10_config.get_config(arg)
  student_lib.check_config(config)
  preflight.check_config(config)
  assert tuple(config.tasks) == mt10.TASK_NAMES
  assert config.eval.max_episode_steps == (50 if arg else 500)
  assert config.teacher.steps == (20 if arg else 1000)
  for task in config.tasks:
    assert pipeline.dataset_spec(config, task).startswith(
        f'suite:mt10/{task}-')
  assert study.get_config('mt10' if arg is None else 'mt10_smoke').tasks == (
      config.tasks)
  assert len(study.get_sweep('mt10').members) == len(
      study.get_sweep().members)
  with pytest.raises(ValueError, match='unknown'):
    mt10_config.get_config('nope')
