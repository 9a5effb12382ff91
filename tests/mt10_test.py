"""Tests of Meta-World MT10: tasks, datasets, success rates, configs."""

import subprocess
import sys

import numpy as np
import pytest

from configs import mt10 as mt10_config
from configs import study
from distill.data import d4rl
from distill.data import scores
from distill.data import summary
from distill.envs import datasets
from distill.envs import evaluation
from distill.envs import mt10
from distill.envs import mt10_suite
from distill.envs import rollout
from distill.envs import suite
from distill.envs import tasks
from distill.report import run_report
from distill.run import pipeline
from distill.run import preflight
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
  code = ('import sys, distill.run.pipeline, distill.envs.evaluation,'
          ' distill.envs.datasets;'
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
  assert card['data_sha256'] == d4rl.data_sha256(data2)  # dataset_info's
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
  lines = '\n'.join(run_report._success_table(tasks_))  # pylint: disable=protected-access
  assert '| push-v3 | 0.50 | 0.25 | 1.00 |' in lines
  assert not run_report._success_table({'hopper': {}})  # pylint: disable=protected-access


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


def _reference_switch_actions(seed, env_id, first_T, levels, every,
                               carry=True):
  """A naive per-step version of the switching noise (zero scripted mean).

  Returns the actions and stds of one sub-environment: the std index is
  drawn from its stream at steps 0, every, 2 every, ... of each episode,
  before that step's noise; the AR(1) state restarts with an episode (and,
  with `carry=False`, also with a segment).
  """
  g = mt10.noise_stream(seed, env_id)
  rho = mt10.NOISE_CORR
  z, t, std = np.zeros(mt10.ACT_DIM), 0, None
  actions, stds = [], []
  for first in first_T:
    t = 0 if first else t + 1
    if t % every == 0:
      std = levels[g.integers(len(levels))]
    eps = g.standard_normal(mt10.ACT_DIM)
    restart = first or (not carry and t % every == 0)
    z = eps if restart else rho * z + np.sqrt(1.0 - rho**2) * eps
    out = np.clip(0.0 + std * z, -1.0, 1.0)
    actions.append(np.round(out / mt10.ACTION_QUANTUM) * mt10.ACTION_QUANTUM)
    stds.append(std)
  return np.array(actions), np.array(stds)


def test_switching_noise_follows_its_schedule(monkeypatch):
  monkeypatch.setattr(mt10, 'scripted_policy',
                      lambda task: lambda obs: np.zeros(mt10.ACT_DIM))
  levels = mt10_suite.NOISE_STDS['switch']
  every, steps = 50, 200
  # Episodes of 120 (env 0) and 75 (env 1) steps: not multiples of 50, so
  # a clock that did not restart per episode would switch elsewhere.
  first_TxE = np.zeros((steps, 2), bool)
  first_TxE[::120, 0] = True
  first_TxE[::75, 1] = True

  def run(seed):
    log = []
    policy = mt10.behavior_policy('reach-v3', levels, seed, [3, 5],
                                  switch_steps=every, std_log=log)
    obs_ExS = np.zeros((2, mt10.OBS_DIM))
    acts = [policy(t, obs_ExS, np.zeros(2), first_TxE[t])
            for t in range(steps)]
    return np.stack(acts, axis=1), np.stack(log, axis=1)  # [E, T(, A)]

  act_ExTxA, std_ExT = run(seed=7)
  for e, env_id in enumerate([3, 5]):
    ref_act, ref_std = _reference_switch_actions(7, env_id, first_TxE[:, e],
                                                 levels, every)
    np.testing.assert_array_equal(act_ExTxA[e], ref_act)
    np.testing.assert_array_equal(std_ExT[e], ref_std)
  assert set(std_ExT.ravel()) <= set(levels)
  # The std changes only where a segment starts: 0, 50, 100 of each
  # episode (env 0: steps 0, 50, 100, 120, 170; env 1: 0, 50, 75, 125, ...).
  starts = {0: {0, 50, 100, 120, 170}, 1: {0, 50, 75, 125, 150}}
  for e, allowed in starts.items():
    changes = set(np.flatnonzero(np.diff(std_ExT[e])) + 1)
    assert changes <= allowed and len(changes) >= 2
  # The AR(1) state carries over segment boundaries inside an episode.
  restarted, _ = _reference_switch_actions(7, 3, first_TxE[:, 0], levels,
                                           every, carry=False)
  assert not np.array_equal(act_ExTxA[0], restarted)
  np.testing.assert_array_equal(act_ExTxA[0, :50], restarted[:50])
  # Reproducible per seed.
  np.testing.assert_array_equal(run(seed=7)[0], act_ExTxA)
  assert not np.array_equal(run(seed=8)[1], std_ExT)


def test_switching_noise_args_are_checked():
  with pytest.raises(ValueError, match='switch_steps'):
    mt10.behavior_policy('reach-v3', (0.1, 0.5), 0, [0])
  with pytest.raises(ValueError, match='switch_steps'):
    mt10.behavior_policy('reach-v3', 0.5, 0, [0], switch_steps=50)
  with pytest.raises(ValueError, match='switch_steps'):
    mt10.behavior_policy('reach-v3', (0.1,), 0, [0], switch_steps=0)


def test_switch_file_name_hashes_the_schedule(monkeypatch):
  path = lambda q: mt10_suite.dataset_path('reach-v3', q, num_transitions=10)
  mixed, switch = path('mixed'), path('switch')
  assert '-switch-n10-' in switch
  assert mixed.rsplit('-', 1)[1] != switch.rsplit('-', 1)[1]
  monkeypatch.setattr(mt10_suite, 'SWITCH_STEPS', 25)
  assert path('switch') != switch and path('mixed') == mixed
  assert suite.parse_name('mt10/reach-v3-switch') == ('reach-v3', 'switch')


@pytest.mark.slow  # Two 1,000-step rollouts (about 20 s on a busy CPU).
def test_switch_dataset_segments_and_card():
  levels = mt10_suite.NOISE_STDS['switch']
  # One sub-environment, two 500-step episodes.
  data, card = mt10_suite.generate('reach-v3', 'switch', num_transitions=1000,
                                   seed=0, num_envs=1)
  noise = data[mt10_suite.NOISE_KEY]
  assert noise.shape == (1000,) and noise.dtype == np.float32
  segments = noise.reshape(-1, mt10_suite.SWITCH_STEPS)  # 20 segments
  np.testing.assert_array_equal(
      segments, np.repeat(segments[:, :1], segments.shape[1], axis=1))
  assert set(segments[:, 0]) <= {np.float32(s) for s in levels}
  for episode in segments.reshape(2, -1, mt10_suite.SWITCH_STEPS):
    assert len(set(episode[:, 0])) > 1  # no episode at one std
  assert card['switch_steps'] == mt10_suite.SWITCH_STEPS == 50
  assert card['complete_episodes'] == 2
  assert [lv['noise_std'] for lv in card['levels']] == list(levels)
  assert sum(lv['transitions'] for lv in card['levels']) == 1000
  assert sum(lv['share'] for lv in card['levels']) == pytest.approx(1.0)
  for lv in card['levels']:
    assert lv['transitions'] == int(np.sum(noise == np.float32(
        lv['noise_std'])))
  # The noise key is part of the data digest, and the bytes repeat.
  assert card['data_sha256'] == d4rl.data_sha256(data, mt10_suite.DATA_KEYS)
  assert card['data_sha256'] != d4rl.data_sha256(
      data, mt10_suite.DATA_KEYS[:-1])
  # `experiments.dataset_info` prints the default digest of what a load
  # returns: the card's, so it can be compared with README's table.
  assert d4rl.data_sha256(data) == card['data_sha256']
  again, _ = mt10_suite.generate('reach-v3', 'switch', num_transitions=1000,
                                 seed=0, num_envs=1)
  assert d4rl.data_sha256(again, mt10_suite.DATA_KEYS) == card['data_sha256']
  with pytest.raises(ValueError, match='outside'):
    mt10_suite.switch_levels({**data, mt10_suite.NOISE_KEY: noise * 3},
                             levels)
