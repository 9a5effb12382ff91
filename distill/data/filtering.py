"""Filtered behavior cloning data: a dataset's best episodes by return.

Chen et al. (2021)'s %BC baseline clones "only the top X% of timesteps in
the dataset, ordered by episode returns". This module is their selection
rule (the reference code's `pct_traj`), on whole episodes:

1. episodes are ordered by return, highest first; ties keep dataset order
   (the earlier episode first), so the result does not depend on a sort's
   stability;
2. the budget is `max(floor(fraction * N), 1)` transitions of the N;
3. the best episode is always kept (even one longer than the budget), and
   the next in order is added while the total stays within the budget; the
   first one that would exceed it ends the selection (no smaller episode
   further down is taken instead).

So `fraction=1.0` keeps every episode and any fraction keeps at least one.
The kept episodes stay in dataset order.

Letters in shape suffixes: N transitions, E episodes.

Reference:
  Chen et al. (2021), Decision Transformer: Reinforcement Learning via
  Sequence Modeling. arXiv:2106.01345 (section 5.3, "%BC").
"""

from typing import Any

import numpy as np

from distill.data import d4rl


def top_return_episodes(returns_E: np.ndarray, lengths_E: np.ndarray,
                        fraction: float) -> np.ndarray:
  """The episodes %BC keeps (the module docstring gives the rule).

  Args:
    returns_E: [E] episode returns.
    lengths_E: [E] episode lengths (transitions), each >= 1.
    fraction: share of the transitions to keep, in (0, 1].

  Returns:
    int64 [E'] indices of the kept episodes, ascending, E' >= 1.

  Raises:
    ValueError: no episodes, mismatched shapes, or `fraction` outside
      (0, 1].
  """
  returns_E = np.asarray(returns_E, np.float64).reshape(-1)
  lengths_E = np.asarray(lengths_E, np.int64).reshape(-1)
  if not len(returns_E) or returns_E.shape != lengths_E.shape:
    raise ValueError(f'top_return_episodes: need one length per return and'
                     f' at least one episode; got {returns_E.shape} returns'
                     f' and {lengths_E.shape} lengths')
  if not 0.0 < fraction <= 1.0:
    raise ValueError(f'top_return_episodes: fraction must be in (0, 1], got'
                     f' {fraction}')
  budget = max(int(np.floor(fraction * lengths_E.sum())), 1)
  # Descending by return; lexsort's last key is the primary one and ties
  # fall back to the episode index.
  order_E = np.lexsort((np.arange(len(returns_E)), -returns_E))
  total_E = np.cumsum(lengths_E[order_E])
  keep = max(int(np.searchsorted(total_E, budget, side='right')), 1)
  return np.sort(order_E[:keep])


def episode_returns(data: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
  """Per-episode (start, end) bounds and returns of a D4RL-style dataset.

  Args:
    data: a validated dataset (`d4rl.validate`).

  Returns:
    (bounds [E, 2] int64 half-open, returns [E] float64).
  """
  bounds_Ex2 = d4rl.episode_bounds(data['terminals'], data.get('timeouts'))
  rewards_N = np.asarray(data['rewards'], np.float64).reshape(-1)
  suffix = np.concatenate([[0.0], np.cumsum(rewards_N)])
  return bounds_Ex2, suffix[bounds_Ex2[:, 1]] - suffix[bounds_Ex2[:, 0]]


def keep_top_fraction(data: dict[str, Any], fraction: float
                      ) -> dict[str, Any]:
  """The dataset cut to the episodes %BC clones.

  Args:
    data: a validated dataset (`d4rl.validate`).
    fraction: share of the transitions to keep, in (0, 1].

  Returns:
    A new dict: every per-transition array (leading axis N) holds only the
    kept episodes' rows, in dataset order; other entries are shared. The
    input itself when `fraction == 1`.
  """
  if fraction == 1.0:
    return data
  bounds_Ex2, returns_E = episode_returns(data)
  kept_E = top_return_episodes(returns_E, bounds_Ex2[:, 1] - bounds_Ex2[:, 0],
                               fraction)
  rows_N = np.concatenate([np.arange(s, e) for s, e in bounds_Ex2[kept_E]])
  n = len(np.asarray(data['rewards']).reshape(-1))
  return {k: (np.asarray(v)[rows_N]
              if isinstance(v, np.ndarray) and v.ndim and len(v) == n
              else v) for k, v in data.items()}
