"""A thin wrapper over `orbax.checkpoint.CheckpointManager`.

A checkpoint step holds two items: `state` (any pytree, e.g. a teacher's
`TrainState`; saved with `StandardSave`) and `meta` (JSON: task name, obs/act
dims, state-normalization statistics, model constructor arguments, data
settings), so that a policy can be rebuilt and evaluated from its directory
alone with `load_policy`.

    manager = checkpointing.make_manager(directory, keep=3)
    checkpointing.save(manager, step, state, meta)
    state, meta = checkpointing.restore(manager, jax.eval_shape(init_fn))
    model, params, meta = checkpointing.load_policy(directory)
"""

from collections.abc import Sequence
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from distill.models import model as model_lib

def make_manager(directory: str, *, keep: int = 3) -> ocp.CheckpointManager:
  """Opens (or creates) a checkpoint directory.

  Args:
    directory: where the numbered step folders live.
    keep: how many of the most recent checkpoints to keep.

  Returns:
    An `ocp.CheckpointManager` with items 'state' and 'meta'.
  """
  if keep < 1:
    raise ValueError(
        f'checkpointing.make_manager: keep must be >= 1, got {keep}')
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
  return ocp.CheckpointManager(
      os.path.abspath(directory), options=options, item_names=('state', 'meta')
  )


def save(manager: ocp.CheckpointManager, step: int, state: Any,
         meta: dict[str, Any], *, wait: bool = True) -> None:
  """Saves `state` and `meta` at `step` (replacing nothing already there).

  Args:
    manager: from `make_manager`.
    step: the step number of the checkpoint.
    state: a pytree of arrays (typed PRNG keys are supported).
    meta: JSON-serializable metadata saved beside it.
    wait: block until the (asynchronous) write has finished.
  """
  manager.save(
      int(step),
      args=ocp.args.Composite(
          state=ocp.args.StandardSave(state),
          meta=ocp.args.JsonSave(_jsonable(meta)),
      ),
      force=True,
  )
  if wait:
    manager.wait_until_finished()


def latest_step(directory: str) -> int | None:
  """The latest checkpoint step in `directory`, or None if it has none."""
  if not os.path.isdir(directory):
    return None
  manager = make_manager(directory)
  step = manager.latest_step()
  manager.close()
  return step


def restore(manager: ocp.CheckpointManager, abstract_state: Any, *,
            step: int | None = None) -> tuple[Any, dict[str, Any]]:
  """Restores a state into the structure of `abstract_state`.

  Args:
    manager: from `make_manager`.
    abstract_state: e.g. `jax.eval_shape(init_fn)`; gives structure, shapes,
      dtypes (and the NamedTuple types) of the result.
    step: which checkpoint; default the latest.

  Returns:
    (state, meta).

  Raises:
    FileNotFoundError: the directory has no checkpoint.
  """
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(
        f'checkpointing.restore: no checkpoint in {manager.directory}'
    )
  restored = manager.restore(
      step,
      args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state),
          meta=ocp.args.JsonRestore(),
      ),
  )
  return restored['state'], dict(restored['meta'])


def restore_raw(directory: str, *, step: int | None = None
                ) -> tuple[dict[str, Any], dict[str, Any], int]:
  """Restores a checkpoint without knowing its structure.

  Args:
    directory: a checkpoint directory.
    step: which checkpoint; default the latest.

  Returns:
    (state as nested dicts of arrays, meta, step).
  """
  if not os.path.isdir(directory):
    raise FileNotFoundError(f'checkpointing: no directory {directory}')
  manager = make_manager(directory)
  try:
    step = manager.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'checkpointing: no checkpoint in {directory}')
    restored = manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()
        ),
    )
  finally:
    manager.close()
  return restored['state'], dict(restored['meta']), step


def policy_meta(model: model_lib.DecisionTransformer, *, kind: str,
                tasks: Sequence[str], obs_dims: Sequence[int],
                act_dims: Sequence[int],
                stats: Sequence[tuple[np.ndarray, np.ndarray]],
                data_config: Any, **extra: Any) -> dict[str, Any]:
  """What a checkpoint needs beside the weights to rebuild and run a policy.

  Args:
    model: the policy's module (`distill.models.model`).
    kind: 'teacher' or 'student'.
    tasks: the task names, in the order of the model's task ids.
    obs_dims: true observation size per task.
    act_dims: true action size per task.
    stats: per-task (mean, std) the states were normalized with.
    data_config: `config.data` (context_len, rtg_scale, max_timestep).
    **extra: more JSON-serializable entries (e.g. a teacher's 'task').

  Returns:
    The metadata dict (`load_policy` returns it; add 'step' when saving).
  """
  return {
      'kind': kind,
      'tasks': list(tasks),
      'obs_dims': [int(x) for x in obs_dims],
      'act_dims': [int(x) for x in act_dims],
      'model': model_lib.model_meta(model),
      'state_mean': [np.asarray(m, np.float32).tolist() for m, _ in stats],
      'state_std': [np.asarray(s, np.float32).tolist() for _, s in stats],
      'context_len': int(data_config.context_len),
      'rtg_scale': float(data_config.rtg_scale),
      'max_timestep': int(data_config.max_timestep),
      **extra,
  }


def load_policy(directory: str, *, step: int | None = None):
  """Loads a policy from its checkpoint directory alone.

  Args:
    directory: a directory written with `save`, whose state has a 'params'
      field and whose meta has a 'model' entry (`policy_meta`).
    step: which checkpoint; default the latest.

  Returns:
    (model, params, meta); meta also holds 'step'.

  Raises:
    FileNotFoundError: no checkpoint there.
    KeyError: the checkpoint lacks 'params' or meta lacks 'model'.
  """
  state, meta, step = restore_raw(directory, step=step)
  if 'params' not in state or 'model' not in meta:
    raise KeyError(
        f'checkpointing.load_policy: {directory} step {step} needs state'
        f" 'params' and meta 'model'; has state keys {sorted(state)} and"
        f' meta keys {sorted(meta)}'
    )
  meta['step'] = int(step)
  return model_lib.from_meta(meta['model']), state['params'], meta


def _jsonable(x: Any) -> Any:
  if isinstance(x, dict):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, (np.ndarray, jax.Array)):
    return np.asarray(x).tolist()
  if isinstance(x, np.generic):
    return x.item()
  return x
