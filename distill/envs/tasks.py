"""The embedded default suite: four Gymnasium MuJoCo tasks.

| task                 | environment                         | obs/act |
|----------------------|-------------------------------------|---------|
| halfcheetah-forward  | HalfCheetah-v5                      | 17 / 6  |
| halfcheetah-backward | HalfCheetah-v5, forward weight -1.0 | 17 / 6  |
| hopper               | Hopper-v5                           | 11 / 3  |
| walker2d             | Walker2d-v5                         | 17 / 6  |

Observation and action sizes match D4RL's, so D4RL files drop into the same
code. The two HalfCheetah tasks share body and observation; only the task id
tells them apart (the backward one rewards negative forward velocity).

Reference returns for normalized scores live in one place,
`distill.data.scores.REF_RETURNS`; `Task.ref_min` / `Task.ref_max` read them
from there (D4RL's values for the three D4RL bodies, measured values for
halfcheetah-backward, see `distill/envs/SNAPSHOTS.md`).

Meta-World MT10 (`distill.envs.mt10`: reach-v3, push-v3, ..., 39 / 4, 500
steps) is the second table, `MT10_TASKS`; `get_task`, `make_env` and
`make_vector_env` consult both (`ALL_TASKS`), so MT10 names work wherever
the locomotion names do. Meta-World is imported only when an MT10
environment is built.

Lookup by name goes through these explicit dicts; nothing registers itself
at import.
"""

import dataclasses
from typing import Any

import gymnasium

from distill.data import scores
from distill.envs import mt10


@dataclasses.dataclass(frozen=True)
class Task:
  """One task of the suite.

  Attributes:
    name: task id, e.g. 'hopper'.
    env_id: Gymnasium environment id.
    env_kwargs: keyword arguments for `gymnasium.make`.
    obs_dim: observation size.
    act_dim: action size (actions lie in [-1, 1]).
    max_episode_steps: episode length limit (a cut episode is a timeout).
    ref_key: key of `distill.data.scores.REF_RETURNS` holding the references.
  """

  name: str
  env_id: str
  env_kwargs: tuple[tuple[str, Any], ...]
  obs_dim: int
  act_dim: int
  max_episode_steps: int
  ref_key: str

  @property
  def ref_min(self) -> float:
    """Reference return of a random policy (normalized score 0)."""
    return _refs(self.ref_key)[0]

  @property
  def ref_max(self) -> float:
    """Reference return of an expert policy (normalized score 100)."""
    return _refs(self.ref_key)[1]


def _refs(key: str) -> tuple[float, float]:
  if key not in scores.REF_RETURNS:
    raise KeyError(
        f"distill/data/scores.py: REF_RETURNS has no entry {key!r}; known:"
        f" {sorted(scores.REF_RETURNS)}"
    )
  lo, hi = scores.REF_RETURNS[key]
  return float(lo), float(hi)


TASKS: dict[str, Task] = {
    "halfcheetah-forward": Task(
        name="halfcheetah-forward",
        env_id="HalfCheetah-v5",
        env_kwargs=(),
        obs_dim=17,
        act_dim=6,
        max_episode_steps=1000,
        ref_key="halfcheetah",
    ),
    "halfcheetah-backward": Task(
        name="halfcheetah-backward",
        env_id="HalfCheetah-v5",
        env_kwargs=(("forward_reward_weight", -1.0),),
        obs_dim=17,
        act_dim=6,
        max_episode_steps=1000,
        ref_key="halfcheetah-backward",
    ),
    "hopper": Task(
        name="hopper",
        env_id="Hopper-v5",
        env_kwargs=(),
        obs_dim=11,
        act_dim=3,
        max_episode_steps=1000,
        ref_key="hopper",
    ),
    "walker2d": Task(
        name="walker2d",
        env_id="Walker2d-v5",
        env_kwargs=(),
        obs_dim=17,
        act_dim=6,
        max_episode_steps=1000,
        ref_key="walker2d",
    ),
}


# Meta-World MT10: one entry per task, the same sizes and episode length;
# references are measured (distill/data/scores.py).
MT10_TASKS: dict[str, Task] = {
    name: Task(
        name=name,
        env_id=f"metaworld:{name}",
        env_kwargs=(),
        obs_dim=mt10.OBS_DIM,
        act_dim=mt10.ACT_DIM,
        max_episode_steps=mt10.EPISODE_STEPS,
        ref_key=name,
    )
    for name in mt10.TASK_NAMES
}

# Every task of both tables.
ALL_TASKS: dict[str, Task] = {**TASKS, **MT10_TASKS}


def get_task(task_name: str) -> Task:
  """Returns the task named `task_name`.

  Args:
    task_name: a key of `TASKS` or `MT10_TASKS`.

  Returns:
    The `Task`.

  Raises:
    KeyError: unknown task, the message lists the valid ones.
  """
  if task_name not in ALL_TASKS:
    raise KeyError(
        f"distill/envs/tasks.py: unknown task {task_name!r}; valid tasks:"
        f" {', '.join(ALL_TASKS)}"
    )
  return ALL_TASKS[task_name]


def make_env(task_name: str, **kwargs) -> gymnasium.Env:
  """Builds one environment of a task.

  Args:
    task_name: a key of `TASKS` or `MT10_TASKS`.
    **kwargs: extra keyword arguments for `gymnasium.make` (override the
      task's own; none for an MT10 task).

  Returns:
    The environment, with the task's time limit (a cut episode reports
    `truncated=True`).
  """
  task = get_task(task_name)
  if task_name in MT10_TASKS:
    if kwargs:
      raise TypeError(f"make_env: MT10 task {task_name!r} takes no keyword"
                      f" arguments, got {sorted(kwargs)}")
    return mt10.make_env(task_name)
  env_kwargs = dict(task.env_kwargs)
  env_kwargs.update(kwargs)
  return gymnasium.make(
      task.env_id, max_episode_steps=task.max_episode_steps, **env_kwargs
  )


def make_vector_env(
    task_name: str,
    num_envs: int,
    seed: int,
    *,
    autoreset_mode: gymnasium.vector.AutoresetMode = (
        gymnasium.vector.AutoresetMode.SAME_STEP
    ),
) -> gymnasium.vector.VectorEnv:
  """Builds a synchronous vector of `num_envs` environments of a task.

  The vector is reset once here with `seed` (sub-env i gets `seed + i`), so
  a following `reset()` without a seed is deterministic too.

  The default autoreset mode is SAME_STEP: when a sub-env's episode ends, the
  returned observation is already the first one of its next episode and the
  last observation is in `info['final_obs']`; no step is wasted and no bogus
  transition appears (Gymnasium's default, NEXT_STEP, would spend the next
  `step` call on the reset and ignore its action).

  Args:
    task_name: a key of `TASKS` or `MT10_TASKS`.
    num_envs: number of sub-environments.
    seed: seed of the first reset (and the action spaces).
    autoreset_mode: Gymnasium autoreset mode.

  Returns:
    A `gymnasium.vector.SyncVectorEnv`.
  """
  get_task(task_name)
  if num_envs < 1:
    raise ValueError(f"make_vector_env: num_envs must be >= 1, got {num_envs}")
  env = gymnasium.vector.SyncVectorEnv(
      [lambda: make_env(task_name) for _ in range(num_envs)],
      autoreset_mode=autoreset_mode,
  )
  env.reset(seed=seed)
  env.action_space.seed(seed)
  return env
