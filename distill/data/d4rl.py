"""D4RL HDF5 datasets: read, validate, write, split into episodes.

The D4RL layout is the project's interchange format: one HDF5 file with
`observations [N, obs]`, `actions [N, act]`, `rewards [N]`, `terminals [N]`,
`timeouts [N]` (optional in older files), plus optional groups `infos/` and
`metadata/`. An episode ends at a terminal or a timeout; a trailing episode that
ends neither way (an unfinished recording) is kept.

This module reads the files with h5py alone: it never imports the `d4rl`
package, which fails to import on machines without MuJoCo 2.1 binaries.

Letters: N transitions, E episodes.
"""

from collections.abc import Mapping
import hashlib
import os
from typing import Any
import warnings

import h5py
import numpy as np

from distill.io import fileio

KEYS = ('observations', 'actions', 'rewards', 'terminals', 'timeouts')
# What `data_sha256` covers, in this order (a missing key is skipped): the
# transitions, then the per-step infos that generated suites record
# (Meta-World's success flag, a switching quality's noise std).
DIGEST_KEYS = KEYS + ('next_observations', 'infos/success', 'infos/noise_std')
# Keys without which a dataset is refused; `timeouts` is missing from old
# D4RL files (and then episodes end at terminals only).
REQUIRED_KEYS = KEYS[:4]
# Float rounding in recorded actions; anything further out is refused/clipped.
_ACTION_TOLERANCE = 1e-6


class DatasetError(ValueError):
  """Bad or missing data; the message names the source, the key, the problem."""


def _fail(source: str, key: str | None, problem: str) -> DatasetError:
  where = f'{source}: key {key!r}' if key else source
  return DatasetError(f'{where}: {problem}')


def _first_bad_index(bad_N: np.ndarray) -> int:
  return int(np.flatnonzero(bad_N.reshape(len(bad_N), -1).any(axis=1))[0])


def _as_flag(x: np.ndarray, key: str, source: str) -> np.ndarray:
  """Converts a terminals/timeouts array to bool, refusing non-0/1 values."""
  if x.dtype == np.bool_:
    return x
  if not (np.issubdtype(x.dtype, np.number)):
    raise _fail(source, key, f'dtype {x.dtype} is not boolean or numeric')
  bad_N = ~((x == 0) | (x == 1))
  if bad_N.any():
    i = _first_bad_index(bad_N)
    raise _fail(
        source, key,
        f'holds {x[i]!r} at index {i}; only 0/1 (or booleans) are allowed')
  return x != 0


def validate(data: Mapping[str, Any], *, source: str,
             clip_actions: bool = False) -> dict[str, Any]:
  """Checks a D4RL-style dataset and returns it in canonical dtypes.

  Refuses (with a `DatasetError` naming `source`, the key and the problem):
  a missing key, wrong rank, lengths that differ, zero transitions, NaN or Inf,
  non-0/1 flags, and actions outside [-1, 1] unless `clip_actions`, which clips
  them with a warning. `(N, 1)` rewards, terminals and timeouts are squeezed
  (as `d4rl.qlearning_dataset` does). A missing `timeouts` becomes all False.

  Args:
    data: mapping with at least observations, actions, rewards, terminals;
      other keys (e.g. 'infos/...', 'metadata/...') are passed through.
    source: file path or spec, used in error messages.
    clip_actions: clip out-of-range actions (with a warning) instead of
      refusing them.

  Returns:
    A new dict: float32 `observations [N, obs]`, `actions [N, act]`,
    `rewards [N]`, bool `terminals [N]`, `timeouts [N]`, plus the other keys
    unchanged. The input is not modified.
  """
  for key in REQUIRED_KEYS:
    if key not in data:
      raise _fail(source, key, f'missing (a D4RL dataset needs {REQUIRED_KEYS}'
                  f'; found {sorted(data)})')
  out = dict(data)
  arrays = {}
  for key in KEYS:
    if key not in data:
      continue
    x = np.asarray(data[key])
    if x.dtype == object or not (
        np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
      raise _fail(source, key, f'dtype {x.dtype} is not numeric')
    if key in ('observations', 'actions'):
      if x.ndim != 2:
        raise _fail(source, key,
                    f'has rank {x.ndim} (shape {x.shape}); expected rank 2 '
                    '[transitions, features]')
      if x.shape[1] == 0:
        raise _fail(source, key, f'has shape {x.shape}: zero features')
    else:
      if x.ndim == 2 and x.shape[1] == 1:
        x = x[:, 0]
      if x.ndim != 1:
        raise _fail(source, key,
                    f'has rank {x.ndim} (shape {x.shape}); expected rank 1 '
                    '[transitions] (or [transitions, 1])')
    arrays[key] = x

  n = len(arrays['observations'])
  for key, x in arrays.items():
    if len(x) != n:
      lengths = {k: len(v) for k, v in arrays.items()}
      raise _fail(source, key,
                  f'has {len(x)} entries but observations has {n} '
                  f'(lengths differ: {lengths})')
  if n == 0:
    raise _fail(source, 'observations', 'zero transitions (empty dataset)')

  for key in ('observations', 'actions', 'rewards'):
    x = arrays[key].astype(np.float32)
    bad_N = ~np.isfinite(x)
    if bad_N.any():
      i = _first_bad_index(bad_N)
      kind = 'NaN' if np.isnan(x).any() else 'Inf'
      raise _fail(source, key,
                  f'holds {int(bad_N.sum())} non-finite values ({kind}; first '
                  f'at transition {i})')
    out[key] = x

  actions = out['actions']
  outside_NxA = np.abs(actions) > 1.0 + _ACTION_TOLERANCE
  if outside_NxA.any():
    problem = (f'{int(outside_NxA.sum())} action values lie outside [-1, 1] '
               f'(range [{actions.min():.4g}, {actions.max():.4g}], first at '
               f'transition {_first_bad_index(outside_NxA)})')
    if not clip_actions:
      raise _fail(source, 'actions',
                  problem + '; rescale them, or pass clip_actions=True to clip')
    warnings.warn(f'{source}: key \'actions\': {problem}; clipping them to '
                  '[-1, 1] (clip_actions=True)', stacklevel=2)
  out['actions'] = np.clip(actions, -1.0, 1.0)

  out['terminals'] = _as_flag(arrays['terminals'], 'terminals', source)
  if 'timeouts' in arrays:
    out['timeouts'] = _as_flag(arrays['timeouts'], 'timeouts', source)
  else:
    out['timeouts'] = np.zeros(n, dtype=bool)
  return out


def _read_group(group: h5py.Group, prefix: str, out: dict[str, Any]) -> None:
  for name, item in group.items():
    key = prefix + name
    if isinstance(item, h5py.Group):
      _read_group(item, key + '/', out)
    elif item.shape == ():
      value = item[()]
      out[key] = value.decode() if isinstance(value, bytes) else value
    else:
      out[key] = item[()]


def load_hdf5(path: str | os.PathLike, *,
              clip_actions: bool = False) -> dict[str, Any]:
  """Reads and validates a D4RL HDF5 file (read-only; the file is unchanged).

  Args:
    path: the file, e.g. `~/.d4rl/datasets/hopper_medium-v2.hdf5`.
    clip_actions: see `validate`.

  Returns:
    The validated dict (see `validate`); datasets inside groups appear under
    their HDF5 path, e.g. 'infos/qpos', 'metadata/algorithm'.

  Raises:
    DatasetError: missing or unreadable file, or bad data.
  """
  path = os.fspath(os.path.expanduser(path))
  if not os.path.isfile(path):
    raise _fail(path, None, 'no such file')
  data: dict[str, Any] = {}
  try:
    with h5py.File(path, 'r') as f:
      _read_group(f, '', data)
  except (OSError, KeyError, ValueError, RuntimeError) as e:
    raise _fail(path, None, f'cannot be read as HDF5, the file is damaged or'
                f' not HDF5 ({type(e).__name__}: {e})') from e
  return validate(data, source=path, clip_actions=clip_actions)


def data_sha256(data: Mapping[str, Any],
                keys: tuple[str, ...] = DIGEST_KEYS) -> str:
  """SHA-256 of a dataset's arrays: their names, dtypes, shapes and bytes.

  Unlike the file's own digest it does not depend on the HDF5 library's
  layout or on metadata, so two machines that generate the same data get
  the same digest.

  Args:
    data: arrays keyed by name (missing keys are skipped).
    keys: which keys, in this order.

  Returns:
    The hex digest.
  """
  h = hashlib.sha256()
  for key in keys:
    if key not in data:
      continue
    x = np.ascontiguousarray(data[key])
    h.update(f'{key}|{x.dtype.str}|{x.shape}|'.encode())
    h.update(x.tobytes())
  return h.hexdigest()


def hdf5_shapes(path: str | os.PathLike) -> dict[str, tuple[int, ...]]:
  """The shapes of a D4RL HDF5 file's arrays, read without loading them.

  For checks before any work: a missing or damaged file and missing keys are
  refused here, in well under a second even for a large file.

  Args:
    path: the file.

  Returns:
    `{key: shape}` of the keys of `KEYS` present.

  Raises:
    DatasetError: no such file, not readable as HDF5, or a required key
      missing (the message names the file and the key).
  """
  path = os.fspath(os.path.expanduser(path))
  if not os.path.isfile(path):
    raise _fail(path, None, 'no such file')
  try:
    with h5py.File(path, 'r') as f:
      shapes = {k: tuple(f[k].shape) for k in KEYS
                if k in f and isinstance(f[k], h5py.Dataset)}
  except (OSError, KeyError, ValueError, RuntimeError) as e:
    raise _fail(path, None, f'cannot be read as HDF5, the file is damaged or'
                f' not HDF5 ({type(e).__name__}: {e})') from e
  for key in REQUIRED_KEYS:
    if key not in shapes:
      raise _fail(path, key, f'missing (a D4RL dataset needs {REQUIRED_KEYS}'
                  f'; found {sorted(shapes)})')
  return shapes


def _h5_value(value: Any) -> Any:
  if isinstance(value, str):
    return value
  x = np.asarray(value)
  if x.dtype.kind == 'U':
    return x.astype(object)  # h5py stores object str arrays as vlen strings.
  return x


def write_hdf5(path: str | os.PathLike, data: Mapping[str, Any], *,
               attrs: Mapping[str, Any] | None = None) -> None:
  """Writes a dataset as a D4RL HDF5 file, atomically.

  The file is written under a temporary name in the same directory and moved
  into place with `os.replace`, so readers see the old file or the new one,
  never a partial one; on error the temporary file is removed. Numeric
  arrays carry HDF5's Fletcher-32 checksum, so damaged bytes fail to read
  (`load_hdf5` names the file) instead of reading as other numbers.

  Args:
    path: destination file.
    data: arrays keyed by name; a key with '/' (e.g. 'infos/qpos') is written
      inside its group.
    attrs: optional attributes of the root group (strings or numbers).
  """
  with fileio.atomic_path(path) as tmp:
    with h5py.File(tmp, 'w') as f:
      for key, value in data.items():
        value = _h5_value(value)
        checked = (not isinstance(value, str) and value.ndim > 0
                   and value.size > 0 and value.dtype.kind in 'biuf')
        f.create_dataset(key, data=value, fletcher32=checked)
      for key, value in (attrs or {}).items():
        f.attrs[key] = value


def episode_bounds(terminals: np.ndarray,
                   timeouts: np.ndarray | None = None) -> np.ndarray:
  """Splits transitions into episodes.

  Args:
    terminals: [N] episode ended by the environment at this step.
    timeouts: optional [N] episode cut by a time limit at this step.

  Returns:
    int64 [E, 2] half-open (start, end) per episode, in order; an episode ends
    after a terminal or timeout step, and a trailing unfinished episode is kept.
  """
  done_N = np.asarray(terminals).reshape(-1).astype(bool)
  if timeouts is not None:
    done_N = done_N | np.asarray(timeouts).reshape(-1).astype(bool)
  n = len(done_N)
  ends_E = np.flatnonzero(done_N) + 1
  if n and (len(ends_E) == 0 or ends_E[-1] != n):
    ends_E = np.append(ends_E, n)
  starts_E = np.concatenate([[0], ends_E[:-1]])
  return np.stack([starts_E, ends_E], axis=1).astype(np.int64)
