"""A thin wrapper over `orbax.checkpoint.CheckpointManager`, with checksums.

A checkpoint step holds two items: `state` (any pytree, e.g. a teacher's
`TrainState`; saved with `StandardSave`) and `meta` (JSON: task name, obs/act
dims, state-normalization statistics, model constructor arguments, data
settings), so that a policy can be rebuilt and evaluated from its directory
alone with `load_policy`. Optional `extras` (pytrees of arrays, e.g. the
distillation history) are saved beside them in the same step.

    manager = checkpointing.make_manager(directory, keep=3)
    checkpointing.save(manager, step, state, meta)
    state, meta = checkpointing.restore(manager, jax.eval_shape(init_fn))
    model, params, meta = checkpointing.load_policy(directory)

Integrity: once orbax has finished a step, `save` writes `<step>/sha256.json`,
the SHA-256 of every file of the step. A step is *intact* when its files
match; orbax itself verifies nothing, so random bytes in a checkpoint would
otherwise load as other numbers. Readers (`restore`, `restore_raw`,
`load_policy`, `latest_step`) use the latest intact step and warn about any
newer damaged one; `make_manager`, which opens a directory for writing, moves
damaged steps to `<directory>/damaged/<step>` (never deleting them) so that
training continues from the previous intact step and saves its steps again.
A step that lacks the manifest (written before checksums existed, or killed
between orbax's commit and the manifest) counts as intact only in a
directory where no step has one.
"""

from collections.abc import Sequence
import hashlib
import json
import os
from typing import Any

from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp

from distill.io import fileio
from distill.models import model as model_lib
from distill.train import parallel

MANIFEST = 'sha256.json'


def _step_dirs(directory: str) -> dict[int, str]:
  """The finished step folders of `directory` (orbax's names are digits)."""
  if not os.path.isdir(directory):
    return {}
  return {int(name): os.path.join(directory, name)
          for name in os.listdir(directory)
          if name.isdigit() and os.path.isdir(os.path.join(directory, name))}


def _manifest_problem(step_dir: str) -> str | None:
  """None when the step's files match its manifest, else what is wrong."""
  path = os.path.join(step_dir, MANIFEST)
  if not os.path.exists(path):
    return 'has no checksum manifest'
  try:
    expected = fileio.read_json(path)['files']
  except (fileio.DamagedFileError, KeyError, TypeError) as e:
    return f'has a damaged manifest ({e})'
  got = fileio.sha256_tree(step_dir, exclude=(MANIFEST,))
  if got == expected:
    return None
  changed = sorted(k for k in set(got) | set(expected)
                   if got.get(k) != expected.get(k))
  return (f'is damaged: {len(changed)} file(s) differ from its checksums'
          f' ({", ".join(changed[:3])}{", ..." if len(changed) > 3 else ""})')


def step_problems(directory: str) -> dict[int, str | None]:
  """Every finished step of `directory` and what is wrong with it (or None).

  Args:
    directory: a checkpoint directory.

  Returns:
    `{step: None if intact, else a description}`, by increasing step.
  """
  steps = _step_dirs(directory)
  problems = {s: _manifest_problem(d) for s, d in sorted(steps.items())}
  if not any(os.path.exists(os.path.join(d, MANIFEST))
             for d in steps.values()):
    # Written before checksums existed: nothing to check them against.
    return dict.fromkeys(problems)
  return problems


def intact_steps(directory: str) -> list[int]:
  """The steps of `directory` whose files match their checksums.

  Args:
    directory: a checkpoint directory.

  Returns:
    The intact steps, ascending (empty without a directory).
  """
  return [s for s, p in step_problems(directory).items() if p is None]


def latest_step(directory: str) -> int | None:
  """The latest intact checkpoint step.

  Args:
    directory: a checkpoint directory (need not exist).

  Returns:
    The step, or None without an intact checkpoint.
  """
  steps = intact_steps(directory)
  return steps[-1] if steps else None


def fingerprint(directory: str) -> dict[str, Any] | None:
  """What identifies the latest intact checkpoint: its step and digest.

  Stages record it as an input, so that a consumer reruns when the
  checkpoint it read is replaced, even at the same step.

  Args:
    directory: a checkpoint directory.

  Returns:
    `{'step': int, 'sha256': the digest of its values (`content_digest`;
    of its files for a step without a manifest)}`, or None without a
    checkpoint.
  """
  step = latest_step(directory)
  if step is None:
    return None
  step_dir = os.path.join(directory, str(step))
  manifest = os.path.join(step_dir, MANIFEST)
  digest = (fileio.read_json(manifest).get('content_sha256')
            if os.path.exists(manifest) else None)
  if digest is None:
    digest = hashlib.sha256(json.dumps(fileio.sha256_tree(step_dir)).encode()
                            ).hexdigest()
  return {'step': step, 'sha256': digest}


def set_aside(directory: str, step: int, reason: str) -> str:
  """Moves step folder `step` to `<directory>/<reason>/<step>[-n]`.

  Args:
    directory: a checkpoint directory.
    step: the step to move.
    reason: the sub-folder, e.g. 'damaged' or 'superseded'.

  Returns:
    The new path (nothing is deleted). Many processes: process 0 moves it,
    every process returns after it has (`parallel.barrier`).
  """
  target_dir = os.path.join(directory, reason)
  target, n = os.path.join(target_dir, str(step)), 1
  while os.path.lexists(target):
    n += 1
    target = os.path.join(target_dir, f'{step}-{n}')
  if parallel.is_main_process():
    os.makedirs(target_dir, exist_ok=True)
    os.replace(os.path.join(directory, str(step)), target)
  parallel.barrier(f'checkpointing.set_aside:{directory}:{step}')
  return target


def make_manager(directory: str, *, keep: int = 3) -> ocp.CheckpointManager:
  """Opens (or creates) a checkpoint directory for writing.

  Damaged steps are moved to `<directory>/damaged/` first, with a warning;
  orbax's unfinished temporary folders (a save that was killed) are removed.

  Args:
    directory: where the numbered step folders live.
    keep: how many of the most recent checkpoints to keep.

  Returns:
    An `ocp.CheckpointManager` with items 'state' and 'meta'.
  """
  if keep < 1:
    raise ValueError(
        f'checkpointing.make_manager: keep must be >= 1, got {keep}')
  for step, problem in step_problems(directory).items():
    if problem is not None:
      moved = set_aside(directory, step, 'damaged')
      logging.warning('checkpoint %s/%d %s; moved it to %s and using the'
                      ' previous intact step', directory, step, problem, moved)
  # Many processes: all take part in every save (each writes its shards);
  # process 0 writes the metadata and replicated arrays and commits.
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, create=True, cleanup_tmp_directories=True,
      multiprocessing_options=ocp.options.MultiprocessingOptions(
          primary_host=0))
  return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def save(manager: ocp.CheckpointManager, step: int, state: Any,
         meta: dict[str, Any], *,
         extras: dict[str, Any] | None = None) -> None:
  """Saves `state`, `meta` (and `extras`) at `step`, then their checksums.

  A step folder already at `step` (left by an interrupted earlier attempt,
  e.g. a teacher that saved before the others of its group) is moved to
  `<directory>/superseded/` with a warning first, so a rerun never fails
  on it.

  Args:
    manager: from `make_manager`.
    step: the step number of the checkpoint.
    state: a pytree of arrays (typed PRNG keys are supported).
    meta: JSON-serializable metadata saved beside it.
    extras: more pytrees of arrays saved in the same step, by item name.
  """
  step = int(step)
  directory = str(manager.directory)
  if step in _step_dirs(directory):
    moved = set_aside(directory, step, 'superseded')
    logging.warning('checkpoint %s/%d existed already (an interrupted earlier'
                    ' run); moved it to %s', directory, step, moved)
    manager.reload()
  items = {'state': ocp.args.StandardSave(state),
           'meta': ocp.args.JsonSave(_jsonable(meta))}
  for name, tree in (extras or {}).items():
    items[name] = ocp.args.StandardSave(tree)
  # Many processes: every one calls save (orbax writes each process's
  # shards, process 0 the metadata and replicated arrays, and syncs them).
  manager.save(step, args=ocp.args.Composite(**items), force=True)
  manager.wait_until_finished()
  step_dir = os.path.join(directory, str(step))
  if parallel.is_main_process():
    fileio.write_json(os.path.join(step_dir, MANIFEST), {
        'step': step,
        'content_sha256': content_digest({'state': state, 'meta': meta,
                                          **(extras or {})}),
        'files': fileio.sha256_tree(step_dir, exclude=(MANIFEST,))})
  parallel.barrier(f'checkpointing.save:{directory}:{step}')


def content_digest(tree: Any) -> str:
  """SHA-256 of a pytree's values (arrays' dtypes, shapes and bytes).

  Unlike the files' digests it does not change when the same values are
  saved again (orbax's files hold timestamps and random names), so a step
  computed again identically keeps its fingerprint.

  Args:
    tree: a pytree of arrays, typed PRNG keys and JSON-like values.

  Returns:
    The hex digest.
  """
  h = hashlib.sha256()
  leaves, treedef = jax.tree.flatten(jax.device_get(tree))
  h.update(str(treedef).encode())
  for x in leaves:
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(
        x.dtype, jax.dtypes.prng_key):
      x = jax.random.key_data(x)
    if isinstance(x, (np.ndarray, np.generic, jax.Array)):
      x = np.ascontiguousarray(x)
      h.update(f'{x.dtype.str}{x.shape}'.encode())
      h.update(x.tobytes())
    else:
      h.update(json.dumps(x, sort_keys=True, default=str).encode())
  return h.hexdigest()


def _candidates(directory: str, step: int | None) -> list[int]:
  """Intact steps to try, newest first, warning about newer damaged ones."""
  problems = step_problems(directory)
  if step is not None:
    if step not in problems:
      raise FileNotFoundError(f'checkpointing: no step {step} in {directory}'
                              f' (has {sorted(problems)})')
    if problems[step] is not None:
      raise fileio.DamagedFileError(
          f'checkpoint {directory}/{step} {problems[step]}')
    return [step]
  good = [s for s, p in problems.items() if p is None]
  for s, p in problems.items():
    if p is not None and (not good or s > good[-1]):
      logging.warning('checkpoint %s/%d %s; using step %s instead', directory,
                      s, p, good[-1] if good else None)
  if not good:
    raise FileNotFoundError(
        f'checkpointing: no intact checkpoint in {directory}'
        + (f' (damaged: {sorted(problems)})' if problems else ''))
  return good[::-1]


def restore(manager: ocp.CheckpointManager, abstract_state: Any, *,
            step: int | None = None,
            extras: dict[str, Any] | None = None
            ) -> tuple[Any, dict[str, Any]]:
  """Restores a state into the structure of `abstract_state`.

  Args:
    manager: from `make_manager`.
    abstract_state: e.g. `jax.eval_shape(init_fn)`; gives structure, shapes,
      dtypes (and the NamedTuple types) of the result.
    step: which checkpoint; default the latest intact one.
    extras: item names of `save`'s extras to restore too, each with its
      abstract tree (or None for the stored structure); they are returned in
      meta under `'extras'`.

  Returns:
    (state, meta).

  Raises:
    FileNotFoundError: the directory has no intact checkpoint.
    DamagedFileError: the requested `step` does not match its checksums.
  """
  directory = str(manager.directory)
  step = _candidates(directory, step)[0]
  items = {'state': ocp.args.StandardRestore(abstract_state),
           'meta': ocp.args.JsonRestore()}
  for name, abstract in (extras or {}).items():
    items[name] = ocp.args.StandardRestore(abstract)
  try:
    restored = manager.restore(step, args=ocp.args.Composite(**items))
  except ValueError as e:
    if not _other_devices(e):
      raise
    # Saved on other devices (e.g. by a run of many processes): restore
    # onto this run's devices, replicated.
    items['state'] = ocp.args.StandardRestore(_replicated(abstract_state))
    restored = manager.restore(step, args=ocp.args.Composite(**items))
  meta = dict(restored['meta'])
  if extras:
    meta['extras'] = {name: restored[name] for name in extras}
  return restored['state'], meta


def restore_raw(directory: str, *, step: int | None = None
                ) -> tuple[dict[str, Any], dict[str, Any], int]:
  """Restores a checkpoint without knowing its structure (read-only).

  Args:
    directory: a checkpoint directory.
    step: which checkpoint; default the latest intact one (a newer damaged
      one is skipped with a warning).

  Returns:
    (state as nested dicts of arrays, meta, step).

  Raises:
    FileNotFoundError: no directory, or no intact checkpoint in it.
    DamagedFileError: the requested `step` does not match its checksums.
  """
  if not os.path.isdir(directory):
    raise FileNotFoundError(f'checkpointing: no directory {directory}')
  step = _candidates(directory, step)[0]
  options = ocp.CheckpointManagerOptions(create=False)
  manager = ocp.CheckpointManager(os.path.abspath(directory), options=options)
  try:
    try:
      restored = manager.restore(
          step,
          args=ocp.args.Composite(
              state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()
          ),
      )
    except ValueError as e:
      if not _other_devices(e):
        raise
      # Saved on other devices (e.g. by a run of many processes): restore
      # onto this run's devices, replicated, with the stored shapes.
      stored = ocp.StandardCheckpointer().metadata(os.path.abspath(
          os.path.join(directory, str(step), 'state'))).item_metadata
      restored = manager.restore(
          step,
          args=ocp.args.Composite(
              state=ocp.args.StandardRestore(_replicated(stored)),
              meta=ocp.args.JsonRestore()))
  finally:
    manager.close()
  return restored['state'], dict(restored['meta']), step


def _other_devices(error: Exception) -> bool:
  """Whether orbax refused a restore because the checkpoint was saved on
  other devices than this run's."""
  text = str(error) + str(error.__cause__ or '')
  return 'topology' in text.lower() or 'devices are different' in text


def _replicated(tree: Any) -> Any:
  """Abstract arrays (shape, dtype) replicated on every device of the run."""
  sharding = jax.sharding.NamedSharding(
      jax.sharding.Mesh(np.asarray(jax.devices()), ('all',)),
      jax.sharding.PartitionSpec())
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
      tree, is_leaf=lambda x: hasattr(x, 'shape') and hasattr(x, 'dtype'))


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
    step: which checkpoint; default the latest intact one.

  Returns:
    (model, params, meta); meta also holds 'step'.

  Raises:
    FileNotFoundError: no intact checkpoint there.
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
