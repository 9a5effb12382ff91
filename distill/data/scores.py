"""D4RL normalized scores.

`100 * (R - ref_min) / (ref_max - ref_min)`, where ref_min is the return of a
random policy and ref_max that of an expert (D4RL's `infos.py`), so 0 is random
and 100 is expert.
"""

import os
import re
from typing import Any

import numpy as np

# (min, max) episode returns per task; keys are lower-case name prefixes.
REF_RETURNS: dict[str, tuple[float, float]] = {
    'hopper': (-20.272305, 3234.3),
    'halfcheetah': (-280.178953, 12135.0),
    'walker2d': (1.629008, 4592.3),
    'ant': (-325.6, 3879.7),
    # Measured by the suite (distill/envs/SNAPSHOTS.md): min = mean return of
    # a uniform-random policy over 100 episodes of halfcheetah-backward (as
    # D4RL's random reference; the same measurement on the forward task gives
    # -283.6, matching D4RL's -280.2); max = D4RL's halfcheetah expert
    # return, since the body and the speed scale are the same and no
    # backward expert exists.
    'halfcheetah-backward': (-116.4, 12135.0),
    # Meta-World MT10 (distill/envs/mt10.py), measured 2026-12-05 with
    # `python -m experiments.mt10_measure --episodes=10 --noise=0 --random
    # --seed=30000` (metaworld 3.1.1, mujoco 3.3.0): min = mean return of a
    # uniform-random policy, max = mean return of the task's scripted policy
    # without noise, 10 full 500-step episodes each (seeded goals).
    'reach-v3': (868.8, 4839.5),
    'push-v3': (22.2, 3853.9),
    'pick-place-v3': (5.9, 4433.7),
    'door-open-v3': (316.0, 4486.9),
    'drawer-open-v3': (638.1, 4038.0),
    'drawer-close-v3': (885.6, 4249.7),
    'button-press-topdown-v3': (214.5, 3698.0),
    'peg-insert-side-v3': (7.7, 3841.2),
    'window-open-v3': (216.8, 2332.5),
    'window-close-v3': (312.5, 3650.4),
}

# Normalized score of the best behaviour policy that generated each task's
# data, by exact task name: the best deterministic snapshot of the embedded
# suite, as measured in distill/envs/SNAPSHOTS.md (the 'final' snapshot's
# 'deterministic normalized' column: mean of 10 episodes, seed 12345,
# evaluated 2026-11-29 by `python -m experiments.collect
# --config=configs/collect.py:evaluate`). Reports show it beside each task's
# dataset score, so a student is read against what the data could teach; a
# task without an entry (e.g. D4RL's own files) shows '-'.
BEHAVIOUR_SCORES: dict[str, float] = {
    'halfcheetah-forward': 42.9,
    'halfcheetah-backward': 41.4,
    'hopper': 69.9,
    'walker2d': 46.7,
}


def behaviour_score(task: str) -> float | None:
  """The best behaviour policy's normalized score for `task`, if measured.

  Args:
    task: a task name as in the config's `tasks` (exact match).

  Returns:
    `BEHAVIOUR_SCORES[task]`, or None for a task without a measurement.
  """
  return BEHAVIOUR_SCORES.get(task)


_PREFIXES = ('d4rl:', 'suite:', 'minari:')


def _matches(name: str, key: str) -> bool:
  # A key must be followed by a separator or the end, so 'antmaze' is not 'ant'.
  return re.match(re.escape(key) + r'($|[-_./: ])', name) is not None


def _longest_key(name: str) -> str | None:
  keys = [k for k in REF_RETURNS if _matches(name, k.lower())]
  return max(keys, key=len) if keys else None


def reference_returns(name: str) -> tuple[float, float] | None:
  """Looks up D4RL reference returns for a task or dataset name.

  The name may be a dataset spec or path: a 'd4rl:', 'suite:' or 'minari:'
  prefix is stripped, then the longest key of `REF_RETURNS` that the file name
  starts with wins ('halfcheetah-backward-medium' -> 'halfcheetah-backward',
  'halfcheetah-medium-v2' -> 'halfcheetah', '/data/hopper_medium-v2.hdf5' ->
  'hopper'). Failing that, a directory component of the name that starts with
  a key counts ('mujoco/hopper/medium-v0' -> 'hopper').

  Args:
    name: task name, dataset name, spec or path.

  Returns:
    (ref_min, ref_max), or None when no key matches.
  """
  name = name.strip().lower()
  for prefix in _PREFIXES:
    if name.startswith(prefix):
      name = name[len(prefix):]
      break
  parts = [p for p in name.replace(os.sep, '/').split('/') if p]
  if not parts:
    return None
  key = _longest_key(parts[-1])
  for part in reversed(parts[:-1]):
    if key is not None:
      break
    key = _longest_key(part)
  return REF_RETURNS[key] if key is not None else None


def normalized_score(returns: Any,
                     name_or_refs: str | tuple[float, float]) -> Any:
  """D4RL normalized score of episode returns.

  Args:
    returns: a return or an array of returns (NumPy or JAX).
    name_or_refs: a name for `reference_returns`, or (ref_min, ref_max).

  Returns:
    `100 * (returns - ref_min) / (ref_max - ref_min)`, same shape as returns.

  Raises:
    ValueError: no reference returns are known for the name.
  """
  if isinstance(name_or_refs, str):
    refs = reference_returns(name_or_refs)
    if refs is None:
      raise ValueError(
          f'no D4RL reference returns for {name_or_refs!r}; known task '
          f'prefixes: {sorted(REF_RETURNS)}')
  else:
    refs = name_or_refs
  ref_min, ref_max = (float(r) for r in refs)
  if isinstance(returns, (list, tuple)):
    returns = np.asarray(returns, dtype=np.float64)
  return 100.0 * (returns - ref_min) / (ref_max - ref_min)
