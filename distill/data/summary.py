"""Episode and return statistics of a validated offline dataset.

    info = summary.summarize(data, 'suite:hopper-medium')

Letters in shape suffixes: E episodes.
"""

from typing import Any

import numpy as np

from distill.data import d4rl
from distill.data import scores


def summarize(data: dict[str, Any], name: str) -> dict[str, Any]:
  """Episode and return statistics of a validated dataset.

  Args:
    data: a validated dataset (see `d4rl.validate`).
    name: spec or path; also used to look up reference returns.

  Returns:
    A JSON-serializable dict: 'name', 'episodes', 'transitions', 'obs_dim',
    'act_dim', 'return_mean' / '_std' / '_min' / '_max' (over episodes, a
    trailing unfinished one included), 'length_min' / '_max', 'terminals',
    'timeouts', 'last_episode_unfinished', 'action_min' / '_max', and
    'normalized_return_mean' when `name` has D4RL reference returns (see
    `scores.reference_returns`), 'success_rate' when the data have
    'infos/success' (Meta-World: an episode succeeds when any step does).
  """
  bounds_Ex2 = d4rl.episode_bounds(data['terminals'], data['timeouts'])
  lengths_E = bounds_Ex2[:, 1] - bounds_Ex2[:, 0]
  rewards = np.asarray(data['rewards'], np.float64)
  returns_E = np.add.reduceat(rewards, bounds_Ex2[:, 0])
  info = {
      'name': name,
      'episodes': len(bounds_Ex2),
      'transitions': len(rewards),
      'obs_dim': int(data['observations'].shape[1]),
      'act_dim': int(data['actions'].shape[1]),
      'return_mean': float(returns_E.mean()),
      'return_std': float(returns_E.std()),
      'return_min': float(returns_E.min()),
      'return_max': float(returns_E.max()),
      'length_min': int(lengths_E.min()),
      'length_max': int(lengths_E.max()),
      'terminals': int(data['terminals'].sum()),
      'timeouts': int(data['timeouts'].sum()),
      'last_episode_unfinished': bool(
          not (data['terminals'][-1] or data['timeouts'][-1])),
      'action_min': float(data['actions'].min()),
      'action_max': float(data['actions'].max()),
  }
  refs = scores.reference_returns(name)
  if refs is not None:
    info['normalized_return_mean'] = float(
        scores.normalized_score(returns_E, refs).mean())
  if 'infos/success' in data:
    success = np.asarray(data['infos/success'], np.float64)
    info['success_rate'] = float(
        np.maximum.reduceat(success, bounds_Ex2[:, 0]).mean())
  return info
