"""Loads an exported student policy and acts from it; needs only jax, numpy.

`distill.report.export.export_policy` writes a directory with `policy.jaxexport`
(the deterministic policy as serialized `jax.export` StableHLO, parameters
inside, symbolic batch size) and `policy.json` (tasks, normalization
statistics, context length, return scale); this file is copied beside them,
so the directory deploys without this project:

    from export_loader import load, Actor
    policy = load('runs/default/export')
    actions_NxA = policy(rtg_NxKx1, states_NxKxS, actions_NxKxA,
                         timesteps_NxK, mask_NxK, task_N)
    actor = Actor(policy, 'hopper', target_return=3600.0)
    action = actor.act(obs)               # first observation of an episode
    action = actor.act(obs, reward)       # then each next one, with reward

Shape letters: N rows, K context, S/A the model's padded state/action size.
"""

import json
import os

import jax
import numpy as np

ARTIFACT = 'policy.jaxexport'
META = 'policy.json'


class ExportedPolicy:
  """The deserialized policy and its metadata.

  Attributes:
    meta: the contents of `policy.json`.
    tasks: task names, in the model's task-id order.
  """

  def __init__(self, exported, meta):
    self._exported = exported
    self._call = jax.jit(exported.call)
    self.meta = meta
    self.tasks = list(meta['tasks'])

  def __call__(self, rtg, states, actions, timesteps, mask,
               task) -> np.ndarray:
    """Actions_NxA in [-1, 1] at the last context position of each row.

    Args:
      rtg: [N, K, 1] float32 returns-to-go divided by `rtg_scale`.
      states: [N, K, S] float32 normalized states, zero-padded.
      actions: [N, K, A] float32 past actions, zero-padded (last row 0).
      timesteps: [N, K] int32.
      mask: [N, K] float32, 1 for real steps (right-aligned).
      task: [N] int32 task ids.

    Returns:
      [N, A] float32 (cut each row to its task's action size).
    """
    return np.asarray(self._call(
        np.asarray(rtg, np.float32), np.asarray(states, np.float32),
        np.asarray(actions, np.float32), np.asarray(timesteps, np.int32),
        np.asarray(mask, np.float32), np.asarray(task, np.int32)))


def load(directory: str) -> ExportedPolicy:
  """Reads `policy.jaxexport` and `policy.json` from `directory`."""
  with open(os.path.join(directory, META), encoding='utf-8') as f:
    meta = json.load(f)
  with open(os.path.join(directory, ARTIFACT), 'rb') as f:
    exported = jax.export.deserialize(bytearray(f.read()))
  return ExportedPolicy(exported, meta)


class Actor:
  """One environment's Decision Transformer context for one task.

  Keeps the last K steps (right-aligned, left-padded), the return-to-go
  (target minus rewards so far, divided by `rtg_scale`) and the timestep,
  as the project's evaluation does.
  """

  def __init__(self, policy: ExportedPolicy, task: str,
               target_return: float):
    meta = policy.meta
    self.policy = policy
    self.task_id = policy.tasks.index(task)
    self.k = int(meta['context_len'])
    self.rtg_scale = float(meta['rtg_scale'])
    self.max_timestep = int(meta['max_timestep'])
    self.obs_dim = int(meta['obs_dims'][self.task_id])
    self.act_dim = int(meta['act_dims'][self.task_id])
    self.mean = np.asarray(meta['state_mean'][self.task_id], np.float32)
    self.std = np.asarray(meta['state_std'][self.task_id], np.float32)
    self.start_rtg = float(target_return) / self.rtg_scale
    s, a = int(meta['state_size']), int(meta['action_size'])
    self.rtg = np.zeros((1, self.k, 1), np.float32)
    self.states = np.zeros((1, self.k, s), np.float32)
    self.actions = np.zeros((1, self.k, a), np.float32)
    self.timesteps = np.zeros((1, self.k), np.int32)
    self.mask = np.zeros((1, self.k), np.float32)
    self.reset()

  def reset(self) -> None:
    """Starts a new episode (the next `act` is its first step)."""
    self._first = True

  def act(self, obs, reward: float = 0.0) -> np.ndarray:
    """The action for `obs`; `reward` is that of the step that led to it.

    Args:
      obs: [obs_dim] observation.
      reward: the previous step's reward (ignored at an episode's start).

    Returns:
      [act_dim] float32 action in [-1, 1].
    """
    context = (self.rtg, self.states, self.actions, self.timesteps,
               self.mask)
    if self._first:
      for x in context:
        x[:] = 0
      self._rtg, self._t = self.start_rtg, 0
      self._first = False
    else:
      self._rtg -= reward / self.rtg_scale
      self._t += 1
    for x in context:
      x[:, :-1] = x[:, 1:]
    self.states[0, -1] = 0.0
    self.states[0, -1, :self.obs_dim] = (
        np.asarray(obs, np.float64) - self.mean) / self.std
    self.rtg[0, -1, 0] = self._rtg
    self.timesteps[0, -1] = min(self._t, self.max_timestep - 1)
    self.mask[0, -1] = 1.0
    self.actions[0, -1] = 0.0
    action = self.policy(*context, np.full((1,), self.task_id, np.int32))
    action = action[0, :self.act_dim].astype(np.float32)
    self.actions[0, -1, :self.act_dim] = action
    return action
