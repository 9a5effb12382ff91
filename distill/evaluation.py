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
"""

from collections.abc import Callable
import logging
from typing import Any

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np

from distill import checkpointing
from distill import losses
from distill.data import scores
from distill.envs import rollout
from distill.envs import tasks as tasks_lib

# policy(rtg_Nx Kx1, states_NxKxS, actions_NxKxA, timesteps_NxK, mask_NxK,
#        key) -> actions_NxA in [-1, 1].
Policy = Callable[..., np.ndarray]


def make_policy(model, params, *, task_id: int = 0,
                deterministic: bool = True) -> Policy:
  """Wraps a (teacher or student) Decision Transformer as a policy.

  Args:
    model: a `DecisionTransformer`.
    params: its parameters.
    task_id: the task id given to the model for every environment (the
      student's task index; 0 for a teacher).
    deterministic: act with tanh(mean); otherwise sample from the
      tanh-squashed Gaussian.

  Returns:
    `policy(rtg, states, actions, timesteps, mask, key) -> actions_NxA`, one
    jitted call returning the action of the last context position.
  """

  @jax.jit
  def act(params, rtg, states, actions, timesteps, mask, key):
    task_N = jnp.full((states.shape[0],), task_id, jnp.int32)
    mean_NxKxA, log_std_NxKxA = model.apply(
        {'params': params}, rtg, states, actions, timesteps, mask, task_N,
        train=False)
    mean_NxA, log_std_NxA = mean_NxKxA[:, -1], log_std_NxKxA[:, -1]
    if deterministic:
      return jnp.tanh(mean_NxA)
    action_NxA, _ = losses.sample_tanh_gaussian(key, mean_NxA, log_std_NxA)
    return action_NxA

  def policy(rtg, states, actions, timesteps, mask, key):
    return np.asarray(act(params, rtg, states, actions, timesteps, mask, key))

  return policy


def default_make_envs(task: str, num_envs: int,
                      seed: int) -> gymnasium.vector.VectorEnv:
  """`distill.envs.tasks.make_vector_env` (SAME_STEP autoreset)."""
  return tasks_lib.make_vector_env(task, num_envs, seed)


def _with_context(policy: Policy, key: jax.Array, *, num_envs: int,
                  context_len: int, state_size: int, action_size: int,
                  act_dim: int, start_rtg: float, rtg_scale: float,
                  max_timestep: int, state_mean: np.ndarray,
                  state_std: np.ndarray) -> rollout.Policy:
  """Turns a Decision Transformer policy into a `rollout.Policy`.

  The returned callback keeps each environment's last K steps (right-aligned,
  left-padded, position K-1 the current step), its return-to-go and its
  timestep; `first_N` clears them. Actions are cut to the task's `act_dim`.
  """
  n, k = num_envs, context_len
  rtg_NxKx1 = np.zeros((n, k, 1), np.float32)
  states_NxKxS = np.zeros((n, k, state_size), np.float32)
  actions_NxKxA = np.zeros((n, k, action_size), np.float32)
  timesteps_NxK = np.zeros((n, k), np.int32)
  mask_NxK = np.zeros((n, k), np.float32)
  context = (rtg_NxKx1, states_NxKxS, actions_NxKxA, timesteps_NxK, mask_NxK)
  t_N = np.zeros(n, np.int64)
  rtg_N = np.full(n, start_rtg, np.float64)

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
    action_NxA = policy(*context, jax.random.fold_in(key, step))
    action_NxA = np.asarray(action_NxA, np.float32)[:, :act_dim]
    actions_NxKxA[:, -1, :act_dim] = action_NxA
    return action_NxA

  return act


def evaluate(
    policy: Policy,
    task: str,
    *,
    episodes: int,
    num_envs: int,
    target_return: float,
    seed: int,
    context_len: int,
    rtg_scale: float,
    max_timestep: int,
    state_mean: np.ndarray,
    state_std: np.ndarray,
    state_size: int,
    action_size: int,
    max_episode_steps: int | None = None,
    make_envs: Callable[[str, int, int], gymnasium.vector.VectorEnv] = (
        default_make_envs),
) -> dict[str, Any]:
  """Rolls out a policy for `episodes` episodes in vector environments.

  Args:
    policy: from `make_policy`.
    task: task name (for the environments and the reference returns).
    episodes: number of episodes, spread over the environments.
    num_envs: number of vector sub-environments (capped at `episodes`).
    target_return: the return the policy is conditioned on (raw units).
    seed: environment seed (sub-env i gets seed + i) and sampling key.
    context_len: K of the model.
    rtg_scale: returns-to-go are divided by it, as in training.
    max_timestep: timesteps are clipped to `max_timestep - 1`.
    state_mean: [obs_dim] normalization mean of the policy's data.
    state_std: [obs_dim] normalization std.
    state_size: S, the model's (padded) state size.
    action_size: A, the model's (padded) action size.
    max_episode_steps: also end an episode after this many steps (the
      environments' own limit, 1000 for the suite, applies anyway).
    make_envs: `(task, num_envs, seed) -> VectorEnv` with SAME_STEP autoreset.

  Returns:
    A dict with 'returns' and 'normalized' (per episode, lists), 'lengths',
    'return_mean', 'return_std', 'normalized_mean', 'normalized_std' (NaN
    when the task has no reference returns), 'episodes', 'target_return',
    'env_steps'.
  """
  if episodes < 1 or num_envs < 1:
    raise ValueError(f'evaluate: need episodes >= 1 and num_envs >= 1, got'
                     f' {episodes}, {num_envs}')
  n = min(num_envs, episodes)
  envs = make_envs(task, n, seed)
  try:
    obs_dim = envs.single_observation_space.shape[0]
    act_dim = envs.single_action_space.shape[0]
    state_mean = np.asarray(state_mean, np.float32)
    state_std = np.asarray(state_std, np.float32)
    if state_mean.shape != (obs_dim,) or obs_dim > state_size:
      raise ValueError(f'evaluate: {task!r} has {obs_dim} observation dims'
                       f' but state_mean has shape {state_mean.shape} and the'
                       f' model takes {state_size}')
    if act_dim > action_size:
      raise ValueError(f'evaluate: {task!r} has {act_dim} action dims, the'
                       f' model only {action_size}')
    act = _with_context(
        policy, jax.random.key(seed), num_envs=n, context_len=context_len,
        state_size=state_size, action_size=action_size, act_dim=act_dim,
        start_rtg=target_return / rtg_scale, rtg_scale=rtg_scale,
        max_timestep=max_timestep, state_mean=state_mean,
        state_std=state_std)
    out = rollout.run(envs, act, episodes=episodes, seed=seed,
                      max_episode_steps=max_episode_steps)
  finally:
    envs.close()
  returns = out.returns
  refs = scores.reference_returns(task)
  if refs is None:
    logging.warning('evaluate: no reference returns for %r; normalized'
                    ' scores are NaN', task)
    normalized = np.full_like(returns, np.nan)
  else:
    normalized = scores.normalized_score(returns, refs)
  return {
      'task': task,
      'episodes': int(episodes),
      'target_return': float(target_return),
      'returns': returns.tolist(),
      'normalized': normalized.tolist(),
      'lengths': out.lengths.tolist(),
      'return_mean': float(returns.mean()),
      'return_std': float(returns.std()),
      'normalized_mean': float(normalized.mean()),
      'normalized_std': float(normalized.std()),
      'env_steps': int(out.steps * n),
  }


def evaluate_checkpoint(directory: str, *, episodes: int, num_envs: int,
                        target_return: float, seed: int, task_index: int = 0,
                        deterministic: bool = True, step: int | None = None,
                        **kwargs) -> dict[str, Any]:
  """Evaluates a teacher or the student from its checkpoint directory alone.

  Args:
    directory: a directory written with `checkpointing.save` and
      `checkpointing.policy_meta` (a teacher's `<workdir>/teachers/<task>/`,
      the student's `<workdir>/student/last/`).
    episodes: number of episodes.
    num_envs: vector sub-environments.
    target_return: conditioning return (raw units).
    seed: environment seed.
    task_index: which of the checkpoint's tasks (its meta 'tasks') to act in;
      a multi-task model gets it as the task id, a one-task model id 0.
    deterministic: act with tanh(mean).
    step: checkpoint step; default the latest.
    **kwargs: more `evaluate` arguments (max_episode_steps, make_envs).

  Returns:
    The `evaluate` result, plus 'step' (the checkpoint's).
  """
  model, params, meta = checkpointing.load_policy(directory, step=step)
  tasks = meta.get('tasks') or [meta['task']]
  if not 0 <= task_index < len(tasks):
    raise ValueError(f'evaluate_checkpoint: {directory} holds tasks {tasks};'
                     f' task_index {task_index} is out of range')
  policy = make_policy(model, params,
                       task_id=task_index if model.num_tasks > 1 else 0,
                       deterministic=deterministic)
  result = evaluate(
      policy, tasks[task_index], episodes=episodes, num_envs=num_envs,
      target_return=target_return, seed=seed,
      context_len=meta['context_len'], rtg_scale=meta['rtg_scale'],
      max_timestep=meta['max_timestep'],
      state_mean=np.asarray(meta['state_mean'][task_index], np.float32),
      state_std=np.asarray(meta['state_std'][task_index], np.float32),
      state_size=model.state_size, action_size=model.action_size, **kwargs)
  result['step'] = meta['step']
  return result
