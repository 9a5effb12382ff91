"""Bench sections `eval` and `mt10_eval`: evaluation rollouts.

  eval_teacher  paper-size teacher, HalfCheetah: vector envs vs the same
                model driving one environment at a time
  eval_student  the default student in all four suite tasks, one policy
                call per vector step (`evaluation.evaluate_tasks`) vs one
                environment at a time
  mt10_eval     a randomly initialised MT10 student (configs/mt10.py) in
                all ten Meta-World MT10 tasks in one vectorised loop
                (`evaluate_tasks`, `envs` environments per task) vs one
                environment at a time, the same policy; the environments
                are built beforehand (Meta-World builds one in ~0.2 s), so
                both loops time stepping and acting alone

The vector and one-env loops take turns in rounds, each keeping its best
rate; rates are env-steps per wall second and per second of this process's
CPU time (the steadier figure on a shared machine; it does not credit
threads).
"""

import time

import jax
import numpy as np

from configs import mt10 as mt10_config
from configs import mt_distill
from distill.envs import evaluation
from distill.envs import mt10
from distill.models import model as model_lib
from experiments.benches import common
from experiments.benches import train


def _eval_common(model, steps, make_envs=evaluation.default_make_envs):
  return dict(context_len=model.context_len, rtg_scale=1000.0,
              max_timestep=model.max_timestep, state_size=model.state_size,
              action_size=model.action_size, max_episode_steps=steps,
              make_envs=make_envs)


def _one_env_steps(policy, tasks, task_ids, obs_dims, model, steps, episodes,
                   target_returns, make_envs=evaluation.default_make_envs):
  """Env-steps of `episodes` episodes, one environment at a time, tasks in
  turn (episode i in task i % len(tasks), seed i)."""
  total = 0
  for i in range(episodes):
    t = i % len(tasks)
    r = evaluation.evaluate(
        lambda *a, t=t: policy(*a, task=np.full(1, task_ids[t])), tasks[t],
        episodes=1, num_envs=1, seed=i, target_return=target_returns[t],
        state_mean=np.zeros(obs_dims[t]), state_std=np.ones(obs_dims[t]),
        **_eval_common(model, steps, make_envs))
    total += r['env_steps']
  return total


def _all_tasks_steps(policy, tasks, obs_dims, model, steps, num_envs,
                     target_returns, make_envs=evaluation.default_make_envs):
  """Env-steps of `evaluate_tasks` in all `tasks`, `num_envs` each."""
  out = evaluation.evaluate_tasks(
      policy, tasks, task_ids=list(range(len(tasks))), episodes=num_envs,
      num_envs=num_envs, seed=0, target_returns=target_returns,
      state_means=[np.zeros(d) for d in obs_dims],
      state_stds=[np.ones(d) for d in obs_dims],
      **_eval_common(model, steps, make_envs))
  return sum(r['env_steps'] for r in out.values())


def _rates(vector, single, rounds):
  """Best env-steps/s of `vector()` and `single()` over rounds taking turns.

  Each returns the env-steps it took. Returns {'vector', 'single'} rates
  per wall second and per second of this process's CPU time.
  """
  best = {f'{k}_{c}': 0.0 for k in ('vector', 'single') for c in ('wall',
                                                                 'cpu')}
  for _ in range(rounds):
    for k, run in (('vector', vector), ('single', single)):
      wall, cpu = time.perf_counter(), time.process_time()
      n = run()
      wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
      best[f'{k}_wall'] = max(best[f'{k}_wall'], n / wall)
      best[f'{k}_cpu'] = max(best[f'{k}_cpu'], n / cpu)
  return best


def _eval_row(best):
  return dict(
      vector_env_steps_per_s=round(best['vector_wall']),
      one_env_steps_per_s=round(best['single_wall']),
      speedup=round(best['vector_wall'] / best['single_wall'], 2),
      vector_env_steps_per_cpu_s=round(best['vector_cpu']),
      one_env_steps_per_cpu_s=round(best['single_cpu']),
      speedup_cpu=round(best['vector_cpu'] / best['single_cpu'], 2))


def _student(config, dims):
  model = model_lib.make_model(
      config.student.model, obs_dims=[d[0] for d in dims],
      act_dims=[d[1] for d in dims], context_len=config.data.context_len,
      max_timestep=config.data.max_timestep)
  return model, evaluation.make_policy(
      model, model_lib.init_params(model, jax.random.key(0)))


def bench_eval(steps, num_envs, rounds):
  """`eval_teacher` and `eval_student` (see the module docstring)."""
  # (1) The paper-size teacher in HalfCheetah.
  model = model_lib.make_model(train.teacher_config(3, 128).model,
                               obs_dims=(17,), act_dims=(6,), context_len=20,
                               max_timestep=1000)
  params = model_lib.init_params(model, jax.random.key(0))
  policy = evaluation.make_policy(model, params)
  task = ['halfcheetah-forward']

  def vector(n_steps):
    return evaluation.evaluate(
        policy, task[0], episodes=num_envs, num_envs=num_envs, seed=0,
        target_return=6000.0, state_mean=np.zeros(17), state_std=np.ones(17),
        **_eval_common(model, n_steps))['env_steps']

  def single(n_steps, episodes):
    return _one_env_steps(policy, task, [0], [17], model, n_steps, episodes,
                          [3000.0])

  vector(2)  # Compile both batch shapes first.
  single(2, 1)
  best = _rates(lambda: vector(steps),
                lambda: single(steps, max(2, num_envs // 4)), rounds)
  common.emit('eval_teacher', model='3x128', task=task[0], envs=num_envs,
              steps_per_episode=steps,
              env_threads=evaluation.default_env_threads(), rounds=rounds,
              **_eval_row(best))

  # (2) The default student in all four tasks at once.
  dims = common.SUITE_DIMS
  student, policy = _student(mt_distill.get_config(), dims)
  tasks, obs_dims = list(common.SUITE_TASKS), [d[0] for d in dims]

  def together(n_steps):
    return _all_tasks_steps(policy, tasks, obs_dims, student, n_steps,
                            num_envs, [3000.0] * len(tasks))

  def alone(n_steps, episodes):
    return _one_env_steps(policy, tasks, list(range(len(tasks))), obs_dims,
                          student, n_steps, episodes, [3000.0] * len(tasks))

  together(2)
  alone(2, len(tasks))
  best = _rates(lambda: together(steps),
                lambda: alone(steps, max(4, num_envs // 2)), rounds)
  common.emit('eval_student', model='2x32', tasks=len(tasks),
              envs_per_task=num_envs, steps_per_episode=steps,
              env_threads=evaluation.default_env_threads(), rounds=rounds,
              **_eval_row(best))


def _built_envs():
  """A `make_envs` that builds each (task, num_envs, seed) once.

  `evaluate_tasks` closes its environments when done; these stay open for
  the next call (a reset with a seed restarts them as new ones would).
  """
  cache = {}

  def make(task, num_envs, seed):
    key = (task, num_envs, seed)
    if key not in cache:
      envs = evaluation.default_make_envs(task, num_envs, seed)
      envs.close = lambda **kwargs: None
      cache[key] = envs
    return cache[key]

  return make


def bench_mt10_eval(steps, num_envs, rounds):
  """`mt10_eval` (see the module docstring)."""
  config = mt10_config.get_config()
  tasks = list(config.tasks)
  dims = [(mt10.OBS_DIM, mt10.ACT_DIM)] * len(tasks)
  student, policy = _student(config, dims)
  obs_dims = [d[0] for d in dims]
  returns = [config.eval.target_return[t.replace('-', '_')] for t in tasks]
  make_envs = _built_envs()

  def together(n_steps):
    return _all_tasks_steps(policy, tasks, obs_dims, student, n_steps,
                            num_envs, returns, make_envs)

  def alone(n_steps):  # One episode per task, each with seed i.
    return _one_env_steps(policy, tasks, list(range(len(tasks))), obs_dims,
                          student, n_steps, len(tasks), returns, make_envs)

  together(2)  # Builds the environments and compiles both batch shapes.
  alone(2)
  best = _rates(lambda: together(steps), lambda: alone(steps), rounds)
  common.emit('mt10_eval', model=(f'{config.student.model.num_layers}x'
                                  f'{config.student.model.width}'),
              tasks=len(tasks), envs_per_task=num_envs,
              steps_per_episode=steps,
              env_threads=evaluation.default_env_threads(), rounds=rounds,
              target='speedup >= 5', **_eval_row(best))
