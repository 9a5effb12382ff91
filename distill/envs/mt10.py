"""Meta-World MT10: the ten tasks, seeded goals, noisy scripted policies.

| task                    | Meta-World class (metaworld 3.1.1)  | obs/act |
|-------------------------|-------------------------------------|---------|
| reach-v3                | SawyerReachEnvV3                    | 39 / 4  |
| push-v3                 | SawyerPushEnvV3                     | 39 / 4  |
| pick-place-v3           | SawyerPickPlaceEnvV3                | 39 / 4  |
| door-open-v3            | SawyerDoorEnvV3                     | 39 / 4  |
| drawer-open-v3          | SawyerDrawerOpenEnvV3               | 39 / 4  |
| drawer-close-v3         | SawyerDrawerCloseEnvV3              | 39 / 4  |
| button-press-topdown-v3 | SawyerButtonPressTopdownEnvV3       | 39 / 4  |
| peg-insert-side-v3      | SawyerPegInsertionSideEnvV3         | 39 / 4  |
| window-open-v3          | SawyerWindowOpenEnvV3               | 39 / 4  |
| window-close-v3         | SawyerWindowCloseEnvV3              | 39 / 4  |

Episodes last 500 steps (Meta-World truncates them itself); nothing
terminates. The goal is observed (the last three observation entries), as in
MT10. `info['success']` of an episode's last step is the episode's success,
as Meta-World reports it.

Goals. A Meta-World task has a random goal (and object) position per
episode, drawn from the task's own random-reset space. MT10's task list
fixes 50 such draws per task from NumPy's global stream; building it takes
8 s per process, so this module draws the goals the same way itself:
`reset(seed=s)` seeds the environment's own generator (`env.seed(s)`) and
every reset draws the next goal from it (the Meta-World procedure that made
MT10's list, resampling positions that violate the task's constraints). A
vector of environments reset with seed s gives sub-environment i seed s + i,
so the goals of every episode follow from the seed alone.

The behavior policies are Meta-World's scripted policies
(`metaworld.policies.ENV_POLICY_MAP`) with Gaussian action noise of a given
std, clipped to [-1, 1] and rounded to multiples of 2**-16 (as the
locomotion suite rounds its actions). The noise is temporally correlated,
an AR(1) process `z_t = rho z_{t-1} + sqrt(1 - rho^2) e_t` with standard
normal `e_t` and `rho = NOISE_CORR` (std 1 at every step, restarted at each
episode): independent noise per step averages out under the scripted
controllers, whose steps are small, and left reach, door-open, drawer-close,
button-press-topdown and both window tasks at 100% success up to std 3
(`experiments/mt10_measure.py --corr=0`, README.md). The noise comes from
per-sub-environment streams, so the actions are reproducible.

Switching noise (`behavior_policy(..., switch_steps=n)` with several
stds): every n steps of an episode, counted from its first step, a
sub-environment draws its std uniformly from the given ones from its own
noise stream; the AR(1) state z carries over, only its scale changes.

Meta-World is imported inside the functions, so importing `distill` stays
cheap.

Shape letters: E sub-environments, S observation size (39), A action size
(4).
"""

from collections.abc import Callable
import functools
from typing import Any

import gymnasium
import numpy as np

TASK_NAMES = ('reach-v3', 'push-v3', 'pick-place-v3', 'door-open-v3',
              'drawer-open-v3', 'drawer-close-v3', 'button-press-topdown-v3',
              'peg-insert-side-v3', 'window-open-v3', 'window-close-v3')
OBS_DIM = 39
ACT_DIM = 4
EPISODE_STEPS = 500
# Actions are multiples of 2**-16, as in `distill.envs.suite`.
ACTION_QUANTUM = 2.0**-16
# Correlation of consecutive noise steps (about 50 steps of memory).
NOISE_CORR = 0.98


class SeededGoals(gymnasium.Wrapper):
  """A Meta-World environment whose every reset draws a seeded goal.

  `reset(seed=s)` reseeds the environment's generator; a reset without a
  seed draws the next goal of the same stream. Observations are float64;
  `info['success']` is Meta-World's (0.0 or 1.0).
  """

  def __init__(self, env: Any, task_name: str):
    super().__init__(env)
    self.task_name = task_name
    self._seeded = False

  def reset(self, *, seed: int | None = None,
            options: dict[str, Any] | None = None):
    del options  # Meta-World takes none.
    if seed is not None or not self._seeded:
      self.env.unwrapped.seed(0 if seed is None else int(seed))
      self._seeded = True
    return self.env.reset()


def _env_class(task_name: str) -> type:
  import metaworld  # pylint: disable=g-import-not-at-top  # Lazy: slow.
  return metaworld.env_dict.ALL_V3_ENVIRONMENTS[task_name]


def make_env(task_name: str) -> gymnasium.Env:
  """Builds one MT10 environment with seeded goals.

  Args:
    task_name: one of `TASK_NAMES`.

  Returns:
    A `SeededGoals` environment (goal observable, 500-step episodes that
    end with `truncated=True`).
  """
  if task_name not in TASK_NAMES:
    raise KeyError(f'distill/envs/mt10.py: unknown MT10 task {task_name!r};'
                   f' valid: {", ".join(TASK_NAMES)}')
  env = _env_class(task_name)()
  raw = env.unwrapped
  # What `metaworld.MT10`'s tasks set, but with goals drawn per reset from
  # the seeded generator instead of a frozen list.
  raw._partially_observable = False  # pylint: disable=protected-access
  raw._set_task_called = True  # pylint: disable=protected-access
  raw._freeze_rand_vec = False  # pylint: disable=protected-access
  raw.seeded_rand_vec = True
  # The observation space depends on observability (a cached property).
  raw.__dict__.pop('sawyer_observation_space', None)
  raw.observation_space = raw.sawyer_observation_space
  return SeededGoals(env, task_name)


@functools.cache
def scripted_policy(task_name: str) -> Callable[[np.ndarray], np.ndarray]:
  """Meta-World's scripted policy of a task: obs_S -> action_A."""
  from metaworld import policies  # pylint: disable=g-import-not-at-top
  return policies.ENV_POLICY_MAP[task_name]().get_action


def noisy_actions(task_name: str, obs_ExS: np.ndarray, eps_ExA: np.ndarray,
                  noise_std: float | np.ndarray) -> np.ndarray:
  """The scripted policy's actions with Gaussian noise, reproducibly.

  Args:
    task_name: one of `TASK_NAMES`.
    obs_ExS: observations.
    eps_ExA: standard normal noise (float64).
    noise_std: the noise's standard deviation (0: the scripted policy), one
      for all sub-environments or one per sub-environment (`[E, 1]`).

  Returns:
    float64 actions `clip(policy(obs) + noise_std * eps, -1, 1)`, rounded
    to multiples of `ACTION_QUANTUM`.
  """
  act = scripted_policy(task_name)
  mean_ExA = np.stack([np.asarray(act(o), np.float64) for o in obs_ExS])
  out = np.clip(mean_ExA + noise_std * np.asarray(eps_ExA, np.float64),
                -1.0, 1.0)
  return np.round(out / ACTION_QUANTUM) * ACTION_QUANTUM


def noise_stream(seed: int, env_id: int) -> np.random.Generator:
  """Sub-environment `env_id`'s noise stream (as the locomotion suite's)."""
  return np.random.Generator(np.random.PCG64(
      np.random.SeedSequence([int(seed), int(env_id)])))


def behavior_policy(task_name: str,
                    noise_std: float | tuple[float, ...] | None, seed: int,
                    env_ids: list[int], *, noise_corr: float = NOISE_CORR,
                    switch_steps: int | None = None,
                    std_log: list[np.ndarray] | None = None
                    ) -> Callable[..., np.ndarray]:
  """A `distill.envs.rollout.Policy` of the noisy scripted policy.

  Args:
    task_name: one of `TASK_NAMES`.
    noise_std: the Gaussian noise's std; with `switch_steps`, the stds a
      sub-environment draws from; None acts uniformly at random in [-1, 1]
      (the random reference policy).
    seed: seed of the noise streams.
    env_ids: the global index of each sub-environment (its stream).
    noise_corr: rho of the AR(1) noise (0: independent per step).
    switch_steps: with a tuple `noise_std`: at steps 0, n, 2n, ... of each
      episode a sub-environment draws its std uniformly from `noise_std`
      (an index from its noise stream, before that step's noise); the
      AR(1) state carries over.
    std_log: receives each call's noise stds, float64 `[E]` (NaN for the
      random policy).

  Returns:
    `policy(step, obs_ExS, reward_E, first_E) -> actions_ExA` (float64).

  Raises:
    ValueError: a tuple of stds without `switch_steps` or the reverse, an
      empty tuple, or `switch_steps` < 1.
  """
  switching = switch_steps is not None
  if switching != isinstance(noise_std, tuple) or (
      switching and (switch_steps < 1 or not noise_std)):
    raise ValueError('mt10.behavior_policy: a tuple of noise stds goes with'
                     ' switch_steps >= 1 and a single std without; got'
                     f' noise_std={noise_std!r}, switch_steps={switch_steps!r}')
  e = len(env_ids)
  noise_E = [noise_stream(seed, i) for i in env_ids]
  z_ExA = np.zeros((e, ACT_DIM))
  scale = np.sqrt(1.0 - noise_corr**2)
  levels = np.asarray(noise_std if switching else (), np.float64)
  # Each sub-environment's current std (drawn at its segments' starts).
  std_E = np.full(e, np.nan if noise_std is None or switching
                  else float(noise_std))
  t_E = np.zeros(e, np.int64)  # step within the episode

  def policy(step, obs_ExS, reward_E, first_E):
    del step, reward_E  # The noise streams advance.
    if switching:
      t_E[:] = np.where(first_E, 0, t_E + 1)
      for j in np.flatnonzero(t_E % switch_steps == 0):
        std_E[j] = levels[noise_E[j].integers(len(levels))]
    if std_log is not None:
      std_log.append(std_E.copy())
    if noise_std is None:
      out = np.stack([g.uniform(-1.0, 1.0, ACT_DIM) for g in noise_E])
      return np.round(out / ACTION_QUANTUM) * ACTION_QUANTUM
    eps_ExA = np.stack([g.standard_normal(ACT_DIM) for g in noise_E])
    # A new episode starts from the stationary distribution.
    z_ExA[:] = np.where(first_E[:, None], eps_ExA,
                        noise_corr * z_ExA + scale * eps_ExA)
    return noisy_actions(task_name, obs_ExS, z_ExA,
                         std_E[:, None] if switching else noise_std)

  return policy
