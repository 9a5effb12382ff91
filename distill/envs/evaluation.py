"""Decision Transformer rollouts in vector environments; normalized scores.

Letters in shape suffixes: N environments, K context, S/A the model's
(padded) state/action size.

All N sub-environments step together and the policy is one jitted call per
vector step over all of them. Each environment keeps a rolling context of
its last K steps on the host (NumPy), right-aligned and left-padded as in
training: position K-1 is the current step. The return-to-go starts at the
target return and decreases by each reward (all divided by `rtg_scale`).

The episode loop is `distill.envs.rollout.run`; this module adds the
Decision Transformer's context as the policy's per-episode state. The vector
environments must use Gymnasium's SAME_STEP autoreset (the default of
`distill.envs.tasks.make_vector_env`). Each environment runs its share of the
episodes; episodes are counted once and the rollout stops when every
environment has finished its share.

    policy = evaluation.make_policy(model, params, task_id=0)
    result = evaluation.evaluate(policy, 'hopper', episodes=10, num_envs=10,
                                 target_return=3600.0, seed=0, ...)
    result = evaluation.evaluate_checkpoint('runs/x/teachers/hopper', ...)
    results = evaluation.evaluate_checkpoint_tasks('runs/x/student/last', ...)

A multi-task policy (the student) acts in all its tasks at once with
`evaluate_tasks`: the tasks' vector environments step side by side as one
(observations zero-padded to S, actions cut per task), so one policy call
per vector step serves every environment of every task; each environment
still gets the seed, the episodes and the context it would get alone.

The policy is `distill.models.model.make_policy_fn`, jitted once per model
(`policy_fn`), so evaluating many checkpoints or tasks of one model
compiles once per batch shape.
"""

from collections.abc import Callable, Sequence
import concurrent.futures
import functools
import logging
import os
import time
from typing import Any

import gymnasium
import jax
import numpy as np

from distill.data import scores
from distill.envs import rollout
from distill.envs import tasks as tasks_lib
from distill.models import model as model_lib
from distill.train import checkpointing

# policy(rtg_NxKx1, states_NxKxS, actions_NxKxA, timesteps_NxK, mask_NxK,
#        key, task=None) -> actions_NxA in [-1, 1]; `task` ([N] int task
# ids) is passed only by `evaluate_tasks`.
Policy = Callable[..., np.ndarray]


@functools.cache
def policy_fn(model: model_lib.DecisionTransformer,
              deterministic: bool = True) -> Callable[..., jax.Array]:
  """`jax.jit(model_lib.make_policy_fn(model))`, one per model.

  Args:
    model: a `DecisionTransformer` (hashable: equal modules share one).
    deterministic: act with tanh(mean); otherwise sample.

  Returns:
    The jitted `policy_fn(params, rtg, states, actions, timesteps, mask,
    task, key) -> actions_NxA`.
  """
  return jax.jit(model_lib.make_policy_fn(model, deterministic=deterministic))


def make_policy(model, params, *, task_id: int = 0,
                deterministic: bool = True) -> Policy:
  """Wraps a (teacher or student) Decision Transformer as a policy.

  Args:
    model: a `DecisionTransformer`.
    params: its parameters.
    task_id: the task id given to the model for every environment (the
      student's task index; 0 for a teacher) unless a call passes `task`.
    deterministic: act with tanh(mean); otherwise sample from the
      tanh-squashed Gaussian.

  Returns:
    `policy(rtg, states, actions, timesteps, mask, key, task=None) ->
    actions_NxA`, one jitted call (`policy_fn`) returning the action of the
    last context position.
  """
  act = policy_fn(model, deterministic)

  def policy(rtg, states, actions, timesteps, mask, key, task=None):
    task_N = (np.full((states.shape[0],), task_id, np.int32) if task is None
              else np.asarray(task, np.int32))
    return np.asarray(act(params, rtg, states, actions, timesteps, mask,
                          task_N, key))

  return policy


def batch1_latency_ms(model: model_lib.DecisionTransformer, params: Any, *,
                      repeats: int = 200) -> float:
  """Median wall time (ms) of one batch-1 action call, as deployed.

  The parameters are fixed inside the compiled call (as in the exported
  artifact, `distill.report.export`), so the figure is the policy's own cost,
  not that of passing its parameter tree on every call.

  Args:
    model: from `distill.models.model`.
    params: its parameters.
    repeats: timed calls after one warm-up call.

  Returns:
    The median, in milliseconds.
  """
  fn = model_lib.make_policy_fn(model)
  key = jax.random.key(0)
  params = jax.tree.map(jax.numpy.asarray, params)
  inputs = model_lib.dummy_inputs(model)
  act = jax.jit(lambda *x: fn(params, *x, key)).lower(*inputs).compile()
  jax.block_until_ready(act(*inputs))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(act(*inputs))
    times.append(time.perf_counter() - start)
  return float(np.median(times) * 1e3)


def default_make_envs(task: str, num_envs: int,
                      seed: int) -> gymnasium.vector.VectorEnv:
  """`distill.envs.tasks.make_vector_env` (SAME_STEP autoreset)."""
  return tasks_lib.make_vector_env(task, num_envs, seed)


def _with_context(policy: Policy, key: jax.Array, *, num_envs: int,
                  context_len: int, state_size: int, action_size: int,
                  start_rtg: np.ndarray, rtg_scale: float, max_timestep: int,
                  state_mean: np.ndarray, state_std: np.ndarray,
                  task_N: np.ndarray | None,
                  act_mask_NxA: np.ndarray) -> rollout.Policy:
  """Turns a Decision Transformer policy into a `rollout.Policy`.

  The returned callback keeps each environment's last K steps (right-aligned,
  left-padded, position K-1 the current step), its return-to-go and its
  timestep; `first_N` clears them. `start_rtg`, `state_mean` and
  `state_std` are per environment ([N], [N, S]); `act_mask_NxA` zeroes each
  environment's padded action dims. With `task_N` the policy gets the task
  ids (`task=`).
  """
  n, k = num_envs, context_len
  rtg_NxKx1 = np.zeros((n, k, 1), np.float32)
  states_NxKxS = np.zeros((n, k, state_size), np.float32)
  actions_NxKxA = np.zeros((n, k, action_size), np.float32)
  timesteps_NxK = np.zeros((n, k), np.int32)
  mask_NxK = np.zeros((n, k), np.float32)
  context = (rtg_NxKx1, states_NxKxS, actions_NxKxA, timesteps_NxK, mask_NxK)
  t_N = np.zeros(n, np.int64)
  rtg_N = np.zeros(n, np.float64) + start_rtg
  extra = {} if task_N is None else {'task': task_N}

  def act(step, obs_NxS, reward_N, first_N):
    rtg_N[:] = np.where(first_N, start_rtg, rtg_N - reward_N / rtg_scale)
    t_N[:] = np.where(first_N, 0, t_N + 1)
    for a in context:
      a[first_N] = 0
      a[:, :-1] = a[:, 1:]
    obs_dim = obs_NxS.shape[1]
    states_NxKxS[:, -1, :obs_dim] = (obs_NxS - state_mean) / state_std
    rtg_NxKx1[:, -1, 0] = rtg_N
    timesteps_NxK[:, -1] = np.minimum(t_N, max_timestep - 1)
    mask_NxK[:, -1] = 1.0
    actions_NxKxA[:, -1] = 0.0
    action_NxA = policy(*context, jax.random.fold_in(key, step), **extra)
    action_NxA = np.where(act_mask_NxA,
                          np.asarray(action_NxA, np.float32)[:, :action_size],
                          np.float32(0))
    actions_NxKxA[:, -1] = action_NxA
    return action_NxA

  return act


def evaluate(policy: Policy, task: str, *, target_return: float,
             state_mean: np.ndarray, state_std: np.ndarray,
             **kwargs) -> dict[str, Any]:
  """Rolls out a policy in one task: `evaluate_tasks` with that task alone.

  The policy is called without `task=`, so it acts with its own task id
  (`make_policy(..., task_id=)`).

  Args:
    policy: from `make_policy`.
    task: task name (for the environments and the reference returns).
    target_return: the return the policy is conditioned on (raw units).
    state_mean: [obs_dim] normalization mean of the policy's data.
    state_std: [obs_dim] normalization std.
    **kwargs: the other arguments of `evaluate_tasks` (episodes, num_envs,
      seed, context_len, rtg_scale, max_timestep, state_size, action_size,
      max_episode_steps, make_envs, env_threads).

  Returns:
    The task's result, as `evaluate_tasks` gives it.
  """
  return evaluate_tasks(policy, [task], task_ids=None,
                        target_returns=[target_return],
                        state_means=[state_mean], state_stds=[state_std],
                        **kwargs)[task]


def _result(task: str, episodes: int, target_return: float,
            returns: np.ndarray, lengths: np.ndarray,
            env_steps: int, successes: np.ndarray) -> dict[str, Any]:
  """The result dict of `evaluate_tasks` from one task's episodes."""
  refs = scores.reference_returns(task)
  if refs is None:
    logging.warning('evaluate: no reference returns for %r; normalized'
                    ' scores are NaN', task)
    normalized = np.full_like(returns, np.nan)
  else:
    normalized = scores.normalized_score(returns, refs)
  out = {
      'task': task,
      'episodes': int(episodes),
      'target_return': float(target_return),
      'returns': returns.tolist(),
      'normalized': normalized.tolist(),
      'lengths': lengths.tolist(),
      'return_mean': float(returns.mean()),
      'return_std': float(returns.std()),
      'normalized_mean': float(normalized.mean()),
      'normalized_std': float(normalized.std()),
      'env_steps': int(env_steps),
  }
  if len(successes) and not np.any(np.isnan(successes)):
    out['successes'] = successes.tolist()
    out['success_rate'] = float(successes.mean())
  return out


def default_env_threads() -> int:
  """Threads that step environments: the usable cores, at most 4."""
  return max(1, min(4, len(os.sched_getaffinity(0))))


def _direct_envs(g: gymnasium.vector.VectorEnv) -> list[Any] | None:
  """The sub-environments of a SAME_STEP `SyncVectorEnv`, else None."""
  if (isinstance(g, gymnasium.vector.SyncVectorEnv)
      and g.autoreset_mode == gymnasium.vector.AutoresetMode.SAME_STEP):
    return list(g.envs)
  return None


class _SideBySide(gymnasium.vector.VectorEnv):
  """Several tasks' vector environments stepped as one (SAME_STEP).

  Observations are zero-padded to `state_size`; each group's actions are
  cut to its action size. `reset(seed=s)` resets every group with `s`, so
  sub-environment i of a group gets seed s + i as it would alone.
  Sub-environments are ordered by `order` (rows of the concatenated
  groups), so that `rollout.run`'s episode shares fall on each group as
  they would alone.

  `step` steps the sub-environments of `SyncVectorEnv` groups itself, with
  `SyncVectorEnv`'s SAME_STEP semantics (a finished episode's environment
  is reset at once, without a seed) but without its per-step info dicts,
  split over `threads` threads (MuJoCo's `mj_step` releases the GIL). Each
  sub-environment still gets the same calls in the same order, so results
  are those of stepping the groups one after another. `info` holds only
  `success` (with its `_success` mask) where environments report it
  (Meta-World), each ended episode's own.
  """

  def __init__(self, groups: Sequence[gymnasium.vector.VectorEnv],
               state_size: int, order: np.ndarray, threads: int = 1):
    self.groups = list(groups)
    self.state_size = state_size
    sizes = [g.num_envs for g in self.groups]
    self.num_envs = int(sum(sizes))
    self.bounds = np.cumsum([0] + sizes)
    self.order = np.asarray(order)
    self.obs_dims = [g.single_observation_space.shape[0] for g in self.groups]
    self.act_dims = [g.single_action_space.shape[0] for g in self.groups]
    self.metadata = {'autoreset_mode': gymnasium.vector.AutoresetMode.SAME_STEP}
    for g in self.groups:
      mode = g.metadata.get('autoreset_mode')
      if mode is not None and mode != gymnasium.vector.AutoresetMode.SAME_STEP:
        raise ValueError(f'evaluation: a vector env uses autoreset mode'
                         f' {mode}; SAME_STEP is required (see'
                         ' tasks.make_vector_env)')
    self.subs = [_direct_envs(g) for g in self.groups]
    # Work item w steps the sub-environments (group, j) with j % threads
    # == w: every task's environments are spread over the threads alike.
    threads = max(1, min(int(threads), max(sizes)))
    self.chunks = [[(i, j) for i, sub in enumerate(self.subs) if sub
                    for j in range(w, len(sub), threads)]
                   for w in range(threads)]
    self.pool = (concurrent.futures.ThreadPoolExecutor(threads - 1)
                 if threads > 1 else None)

  def _gather(self, parts, width=None):
    """Concatenates per-group arrays (None: zeros) into this env's order."""
    rows = []
    for i, x in enumerate(parts):
      size = self.bounds[i + 1] - self.bounds[i]
      if width is not None:
        padded = np.zeros((size, width), np.float64)
        if x is not None:
          padded[:, :x.shape[1]] = x
        x = padded
      rows.append(x)
    return np.concatenate(rows)[self.order]

  def _split(self, x_N):
    concat = np.empty_like(x_N)
    concat[self.order] = x_N
    return [concat[self.bounds[i]:self.bounds[i + 1]]
            for i in range(len(self.groups))]

  def reset(self, *, seed=None, options=None):
    mask_N = (options or {}).get('reset_mask')
    masks = ([None] * len(self.groups) if mask_N is None
             else self._split(np.asarray(mask_N)))
    obs_list = []
    for g, m in zip(self.groups, masks):
      if m is None:
        obs_list.append(g.reset(seed=seed)[0])
      elif np.any(m):
        obs_list.append(g.reset(options={'reset_mask': m})[0])
      else:
        obs_list.append(None)
    return self._gather(obs_list, self.state_size), {}

  def step(self, actions_NxA):
    actions = [a[:, :d] for a, d in zip(self._split(actions_NxA),
                                        self.act_dims)]
    outs = [None if sub else g.step(a)
            for g, sub, a in zip(self.groups, self.subs, actions)]
    obs = [np.zeros((g.num_envs, self.state_size), np.float64)
           for g in self.groups]
    rew = [np.zeros(g.num_envs, np.float64) for g in self.groups]
    term = [np.zeros(g.num_envs, bool) for g in self.groups]
    trunc = [np.zeros(g.num_envs, bool) for g in self.groups]
    # NaN: the environment reports no success.
    won = [np.full(g.num_envs, np.nan) for g in self.groups]

    def work(chunk):
      for i, j in chunk:
        env = self.subs[i][j]
        o, rew[i][j], term[i][j], trunc[i][j], info = env.step(
            actions[i][j])
        if 'success' in info:
          won[i][j] = float(info['success'])
        if term[i][j] or trunc[i][j]:
          o, _ = env.reset()
        obs[i][j, :self.obs_dims[i]] = o

    futures = [self.pool.submit(work, c) for c in self.chunks[1:]
               ] if self.pool else []
    work(self.chunks[0])
    for f in futures:
      f.result()
    for i, out in enumerate(outs):
      if out is not None:
        obs[i][:, :self.obs_dims[i]] = out[0]
        rew[i], term[i], trunc[i] = out[1:4]
        won[i] = rollout.step_successes(out[4], term[i] | trunc[i])
    won_N = self._gather(won)
    info = {}
    if not np.all(np.isnan(won_N)):
      info = {'success': np.nan_to_num(won_N) > 0,
              '_success': ~np.isnan(won_N)}
    return (self._gather(obs), *(self._gather(x) for x in (rew, term, trunc)),
            info)

  def close(self, **kwargs):
    if self.pool is not None:
      self.pool.shutdown()
    for g in self.groups:
      g.close()


def evaluate_tasks(
    policy: Policy,
    tasks: Sequence[str],
    *,
    task_ids: Sequence[int] | None,
    episodes: int,
    num_envs: int,
    target_returns: Sequence[float],
    seed: int,
    context_len: int,
    rtg_scale: float,
    max_timestep: int,
    state_means: Sequence[np.ndarray],
    state_stds: Sequence[np.ndarray],
    state_size: int,
    action_size: int,
    max_episode_steps: int | None = None,
    make_envs: Callable[[str, int, int], gymnasium.vector.VectorEnv] = (
        default_make_envs),
    env_threads: int | None = None,
) -> dict[str, dict[str, Any]]:
  """Rolls out a policy in several tasks at once, one call per vector step.

  Every task gets its own vector environments, seeds, episodes and
  conditioning, as it would alone; the environments of all tasks step side
  by side and the policy acts for all of them in one call (it gets `task=`
  the task id of every row). `evaluate` is the one-task case.

  Args:
    policy: from `make_policy` (of a multi-task model, for several tasks).
    tasks: task names.
    task_ids: the model's task id of each task; None: the policy is called
      without `task=` (it acts with its own task id).
    episodes: episodes per task.
    num_envs: vector environments per task (capped at `episodes`).
    target_returns: conditioning return of each task (raw units).
    seed: environment seed of every task (sub-env i gets seed + i) and the
      sampling key.
    context_len: K.
    rtg_scale: returns-to-go are divided by it.
    max_timestep: timesteps are clipped to `max_timestep - 1`.
    state_means: [obs_dim] normalization mean of each task.
    state_stds: [obs_dim] normalization std of each task.
    state_size: S, the model's (padded) state size.
    action_size: A, the model's (padded) action size.
    max_episode_steps: also end an episode after this many steps.
    make_envs: `(task, num_envs, seed) -> VectorEnv` with SAME_STEP autoreset.
    env_threads: threads stepping the sub-environments (default
      `default_env_threads()`); results do not depend on it.

  Returns:
    {task: its result}, each a dict with 'returns' and 'normalized' (per
    episode, lists), 'lengths', 'return_mean', 'return_std',
    'normalized_mean', 'normalized_std' (NaN when the task has no reference
    returns), 'episodes', 'target_return', 'env_steps' (of all the task's
    environments); for a task that reports success (Meta-World), also
    'successes' (per episode, 0/1: some step succeeded) and 'success_rate'.
  """
  if episodes < 1 or num_envs < 1:
    raise ValueError(f'evaluate_tasks: need episodes >= 1 and num_envs >= 1,'
                     f' got {episodes}, {num_envs}')
  for name, x in (('task_ids', task_ids), ('target_returns', target_returns),
                  ('state_means', state_means), ('state_stds', state_stds)):
    if x is not None and len(x) != len(tasks):
      raise ValueError(f'evaluate_tasks: {len(tasks)} tasks but'
                       f' {len(x)} {name}')
  n = min(num_envs, episodes)
  t = len(tasks)
  # Row order: first every group's sub-envs that run one extra episode
  # (local index < episodes % n), so rollout.run's shares of the T *
  # episodes match each task's shares alone.
  group_C, local_C = np.repeat(np.arange(t), n), np.tile(np.arange(n), t)
  order = np.argsort(local_C >= episodes % n, kind='stable')
  groups, envs = [], None
  try:
    for task in tasks:
      groups.append(make_envs(task, n, seed))
    envs = _SideBySide(groups, state_size, order, threads=(
        default_env_threads() if env_threads is None else env_threads))
    obs_dims, act_dims = envs.obs_dims, envs.act_dims
    mean_CxS = np.zeros((n * t, state_size), np.float32)
    std_CxS = np.ones((n * t, state_size), np.float32)
    act_mask_CxA = np.zeros((n * t, action_size), bool)
    for i, task in enumerate(tasks):
      rows = slice(i * n, (i + 1) * n)
      mean = np.asarray(state_means[i], np.float32)
      std = np.asarray(state_stds[i], np.float32)
      if (mean.shape != (obs_dims[i],) or std.shape != (obs_dims[i],)
          or obs_dims[i] > state_size or act_dims[i] > action_size):
        raise ValueError(
            f'evaluate_tasks: {task!r} has {obs_dims[i]} observation and'
            f' {act_dims[i]} action dims; its statistics have shapes'
            f' {mean.shape}, {std.shape} and the model takes'
            f' {state_size}/{action_size}')
      mean_CxS[rows, :obs_dims[i]] = mean
      std_CxS[rows, :obs_dims[i]] = std
      act_mask_CxA[rows, :act_dims[i]] = True
    act = _with_context(
        policy, jax.random.key(seed), num_envs=n * t,
        context_len=context_len, state_size=state_size,
        action_size=action_size,
        start_rtg=(np.asarray(target_returns, np.float64)
                   / rtg_scale)[group_C[order]],
        rtg_scale=rtg_scale, max_timestep=max_timestep,
        state_mean=mean_CxS[order], state_std=std_CxS[order],
        task_N=(None if task_ids is None
                else np.asarray(task_ids, np.int32)[group_C[order]]),
        act_mask_NxA=act_mask_CxA[order])
    out = rollout.run(envs, act, episodes=episodes * t, seed=seed,
                      max_episode_steps=max_episode_steps)
  finally:
    if envs is not None:
      envs.close()
    else:
      for g in groups:
        g.close()
  group_E = group_C[order][out.env_index]
  return {task: _result(task, episodes, target_returns[i],
                        out.returns[group_E == i], out.lengths[group_E == i],
                        out.steps * n, out.successes[group_E == i])
          for i, task in enumerate(tasks)}


def evaluate_checkpoint(directory: str, *, target_return: float,
                        task_index: int = 0, step: int | None = None,
                        **kwargs) -> dict[str, Any]:
  """Evaluates a teacher or the student from its checkpoint directory alone.

  Args:
    directory: a directory written with `checkpointing.save` and
      `checkpointing.policy_meta` (a teacher's `<workdir>/teachers/<task>/`,
      the student's `<workdir>/student/last/`).
    target_return: conditioning return (raw units).
    task_index: which of the checkpoint's tasks (its meta 'tasks') to act in;
      a multi-task model gets it as the task id, a one-task model id 0.
    step: checkpoint step; default the latest.
    **kwargs: the other arguments of `evaluate_checkpoint_tasks` (episodes,
      num_envs, seed, deterministic) and of `evaluate_tasks`
      (max_episode_steps, make_envs, env_threads).

  Returns:
    The task's result (`evaluate_tasks`), plus 'step' (the checkpoint's).
  """
  model, params, meta = checkpointing.load_policy(directory, step=step)
  tasks = _checkpoint_tasks(meta)
  if not 0 <= task_index < len(tasks):
    raise ValueError(f'evaluate_checkpoint: {directory} holds tasks {tasks};'
                     f' task_index {task_index} is out of range')
  task = tasks[task_index]
  return _evaluate_loaded(model, params, meta, [task],
                          target_returns={task: target_return},
                          **kwargs)[task]


def evaluate_checkpoint_tasks(directory: str, *,
                              target_returns: dict[str, float],
                              tasks: Sequence[str] | None = None,
                              step: int | None = None,
                              **kwargs) -> dict[str, dict[str, Any]]:
  """Evaluates a multi-task checkpoint in its tasks at once (`evaluate_tasks`).

  Each task's result is what `evaluate_checkpoint` gives for it alone (the
  same environments, seeds and conditioning), computed with one policy call
  per vector step for all tasks.

  Args:
    directory: a checkpoint directory (e.g. `<workdir>/student/last/`).
    target_returns: {task: conditioning return (raw units)}.
    tasks: which of the checkpoint's tasks (default: all).
    step: checkpoint step; default the latest.
    **kwargs: episodes (per task), num_envs (vector sub-environments per
      task), seed (environment seed), deterministic (act with tanh(mean);
      default True) and more `evaluate_tasks` arguments
      (max_episode_steps, make_envs, env_threads).

  Returns:
    {task: its result (`evaluate_tasks`) plus 'step'}.
  """
  model, params, meta = checkpointing.load_policy(directory, step=step)
  all_tasks = _checkpoint_tasks(meta)
  tasks = all_tasks if tasks is None else list(tasks)
  unknown = [t for t in tasks if t not in all_tasks]
  if unknown:
    raise ValueError(f'evaluate_checkpoint_tasks: {directory} holds tasks'
                     f' {all_tasks}, not {unknown}')
  return _evaluate_loaded(model, params, meta, tasks,
                          target_returns=target_returns, **kwargs)


def _checkpoint_tasks(meta: dict[str, Any]) -> list[str]:
  """The tasks of a policy checkpoint's meta, in the model's task order."""
  return list(meta.get('tasks') or [meta['task']])


def _evaluate_loaded(model: model_lib.DecisionTransformer, params: Any,
                     meta: dict[str, Any], tasks: Sequence[str], *,
                     target_returns: dict[str, float],
                     deterministic: bool = True,
                     **kwargs) -> dict[str, dict[str, Any]]:
  """`evaluate_tasks` of a loaded checkpoint in some of its tasks."""
  index = [_checkpoint_tasks(meta).index(t) for t in tasks]
  results = evaluate_tasks(
      make_policy(model, params, deterministic=deterministic), tasks,
      task_ids=index if model.num_tasks > 1 else [0] * len(tasks),
      target_returns=[float(target_returns[t]) for t in tasks],
      context_len=meta['context_len'], rtg_scale=meta['rtg_scale'],
      max_timestep=meta['max_timestep'],
      state_means=[np.asarray(meta['state_mean'][i], np.float32)
                   for i in index],
      state_stds=[np.asarray(meta['state_std'][i], np.float32)
                  for i in index],
      state_size=model.state_size, action_size=model.action_size, **kwargs)
  for r in results.values():
    r['step'] = meta['step']
  return results
