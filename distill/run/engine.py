"""A small stage engine: stamps, manifests, move-aside, barriers.

A run is a list of named stages, each a `Stage`: a function that writes some
outputs into a directory, the config fields those outputs depend on, and what
else it consumed. The engine knows nothing of what the stages compute; it
decides, from a stamp per stage (`<directory>/stamps/<name>.json`), whether a
stage's outputs are up to date:

- the stamp holds a hash of the stage's config fields and its inputs, and is
  marked done only when the stage returned: a different hash (the config or
  an input changed) moves the outputs aside (`<path>.stale-<hash>[-n]`, never
  deleted, never overwritten) and reruns the stage; a stamp marked not done
  (the run died in it) reruns it over its own outputs, so a training stage
  continues from its checkpoints;
- the stamp lists the SHA-256 of the stage's `files` (its manifest): a file
  that no longer matches is moved aside (`<path>.damaged[-n]`) and the stage
  reruns; so is a stamp that cannot be read;
- outputs without a stamp are moved aside as stale (they are not known to
  come from this config).

In a run over several processes (many hosts) every process runs every stage;
process 0 writes the stamps and moves files, the others wait at a barrier
(`distill.train.parallel.barrier`) until it has. `run_stages` runs a table:

    run_stages({'a': Stage(make_a, ('x',), ('a.json',), files=('a.json',))},
               ['a'], state, workdir=workdir, config=lambda name: {'x': 1})
"""

from collections.abc import Callable, Mapping, Sequence
import hashlib
import json
import os
import time
from typing import Any, NamedTuple

from absl import logging

from distill.io import fileio
from distill.train import parallel

STAMPS = 'stamps'
WALL = 'wall_s.json'


def _nothing(state: Any) -> None:
  del state


def _always(state: Any) -> bool:
  del state
  return True


class Stage(NamedTuple):
  """One stage of a run.

  Attributes:
    run: `run(state)` does the work, writing the outputs.
    keys: the config fields its outputs depend on (hashed into the stamp).
    outputs: paths of its outputs, relative to its directory; moved aside
      when the config or the inputs change.
    inputs: `inputs(state)`: what else it consumed (e.g. fingerprints of
      upstream outputs), JSON values; a change reruns the stage as a config
      change does.
    complete: `complete(state)`: whether the outputs on disk are complete (a
      stamp marked done is also required).
    files: files whose SHA-256 the stamp records when the stage is done; one
      that no longer matches is moved aside and the stage reruns.
    shared: lives in the run's shared directory (`run_stages`' `shared_dir`,
      one that several runs may point to) rather than in its workdir.
  """

  run: Callable[[Any], None]
  keys: tuple[str, ...]
  outputs: tuple[str, ...]
  inputs: Callable[[Any], Any] = _nothing
  complete: Callable[[Any], bool] = _always
  files: tuple[str, ...] = ()
  shared: bool = False


def write_json(path: str, value: Any) -> None:
  """Process 0 writes `path` atomically; the others go on once it has."""
  if parallel.is_main_process():
    fileio.write_json(path, value)
  parallel.barrier(f'write:{path}')


def stage_hash(config: Mapping[str, Any], inputs: Any = None, *,
               with_inputs: bool = True) -> str:
  """The hash of a stage's config fields (and inputs) that its stamp holds.

  Args:
    config: the stage's config fields, as JSON values.
    inputs: what else it consumed (`Stage.inputs`).
    with_inputs: False for the config-only hash (`stamp_config_hash`).

  Returns:
    16 hex digits of a SHA-256.
  """
  blob = json.dumps([config] + ([inputs] if with_inputs else []),
                    sort_keys=True)
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


def stamp_path(directory: str, name: str) -> str:
  return os.path.join(directory, STAMPS, f'{name}.json')


def stamp_config_hash(directory: str, name: str) -> str | None:
  """The config-only hash in a stage's stamp (None: none, or unreadable)."""
  try:
    return fileio.read_json(stamp_path(directory, name)).get('config_hash')
  except (OSError, fileio.DamagedFileError, AttributeError):
    return None


def _move(path: str, tag: str) -> str:
  """Process 0 moves `path` aside; returns where it went (or would go)."""
  return fileio.move_aside(path, tag) if parallel.is_main_process() else path


def read_stamp(path: str, name: str) -> dict[str, Any] | None:
  """The stamp at `path`; None when there is none; when it cannot be read,
  it is moved aside (warned) and a stamp that matches nothing is returned."""
  if not os.path.exists(path):
    return None
  try:
    stamp = fileio.read_json(path)
    if isinstance(stamp, dict) and {'hash', 'done'} <= set(stamp):
      return stamp
    problem = f'lacks its fields (has {sorted(stamp)[:5]})'
  except fileio.DamagedFileError as e:
    problem = str(e)
  moved = _move(path, 'damaged')
  parallel.barrier(f'stage {name}: damaged stamp')
  logging.warning('stage %s: its stamp %s %s; moved it to %s', name, path,
                  problem, moved)
  return {'hash': 'unknown', 'done': False}


def manifest(directory: str, rels: Sequence[str]) -> dict[str, str]:
  """The SHA-256 of each of `rels` (relative to `directory`) that exists."""
  return {rel: fileio.sha256_file(os.path.join(directory, rel))
          for rel in rels if os.path.isfile(os.path.join(directory, rel))}


def manifest_problem(directory: str, files: Mapping[str, str]) -> str | None:
  """What is wrong with the files a stamp lists, or None when they match."""
  for rel, digest in files.items():
    path = os.path.join(directory, rel)
    if not os.path.isfile(path):
      return f'{path} is missing'
    if fileio.sha256_file(path) != digest:
      return f'{path} is damaged (its SHA-256 differs from the stamp)'
  return None


def run_stage(name: str, stage: Stage, state: Any, *, directory: str,
              config: Mapping[str, Any],
              paths: Callable[[Sequence[str]], list[str]] = list,
              fault: Callable[[str], Any] = _nothing) -> bool:
  """Runs one stage unless its outputs are up to date (module docstring).

  Args:
    name: the stage's name (its stamp's file name).
    stage: the stage.
    state: what `stage.run`, `stage.inputs` and `stage.complete` get.
    directory: where its outputs and its stamp live.
    config: its config fields (`stage.keys`), as JSON values.
    paths: turns `stage.outputs` or `stage.files` into the paths of this
      run (e.g. one per member of a population).
    fault: called with 'stage/<name>/start' and '.../end' around the work
      (a test's fault injection).

  Returns:
    Whether it ran.
  """
  path = stamp_path(directory, name)
  stamp = read_stamp(path, name)
  inputs = stage.inputs(state)
  current = stage_hash(config, inputs)
  existing = [rel for rel in paths(stage.outputs)
              if os.path.lexists(os.path.join(directory, rel))]
  if (stamp is None and existing) or (stamp is not None
                                      and stamp['hash'] != current):
    old = stamp['hash'] if stamp else 'unknown'
    logging.warning('stage %s: config or inputs changed since the last run'
                    ' (hash %s -> %s); moving its outputs aside and'
                    ' rerunning', name, old, current)
    for rel in existing:
      moved = _move(os.path.join(directory, rel), f'stale-{old[:8]}')
      logging.warning('stage %s: moved %s/%s to %s', name, directory, rel,
                      moved)
    if os.path.exists(path):
      _move(path, f'stale-{old[:8]}')
    parallel.barrier(f'stage {name}: stale')
    stamp = None
  if stamp is not None and stamp['done']:
    problem = manifest_problem(directory, stamp.get('files', {}))
    if problem is None and stage.complete(state):
      logging.info('stage %s: up to date, skipped', name)
      return False
    if problem is not None:
      for rel in stamp.get('files', {}):
        if os.path.exists(os.path.join(directory, rel)):
          _move(os.path.join(directory, rel), 'damaged')
      parallel.barrier(f'stage {name}: damaged')
      logging.warning('stage %s: %s; moved aside, rerunning the stage', name,
                      problem)
  record = {'stage': name, 'hash': current,
            'config_hash': stage_hash(config, with_inputs=False),
            'config': dict(config), 'inputs': inputs}
  write_json(path, {**record, 'done': False, 'time': time.time()})
  fault(f'stage/{name}/start')
  stage.run(state)
  fault(f'stage/{name}/end')
  write_json(path, {**record, 'done': True, 'time': time.time(),
                    'files': manifest(directory, paths(stage.files))})
  return True


def read_wall_times(workdir: str) -> dict[str, float]:
  """`<workdir>/wall_s.json`: each stage's seconds when it last ran."""
  path = os.path.join(workdir, WALL)
  if not os.path.exists(path):
    return {}
  try:
    return fileio.read_json(path)
  except fileio.DamagedFileError as e:
    moved = _move(path, 'damaged')
    logging.warning('%s; moved it to %s and starting the wall times afresh',
                    e, moved)
    return {}


def run_stages(stages: Mapping[str, Stage], names: Sequence[str],
               state: Any, *, workdir: str,
               config: Callable[[str], Mapping[str, Any]],
               shared_dir: str | None = None,
               paths: Callable[[Sequence[str]], list[str]] = list,
               fault: Callable[[str], Any] = _nothing) -> None:
  """Runs the stages `names` in order, each unless up to date (`run_stage`).

  The seconds of each stage that ran are recorded in `<workdir>/wall_s.json`
  (a skipped stage keeps its earlier time).

  Args:
    stages: the table, by name.
    names: the stages to run, in order.
    state: what the stages' functions get.
    workdir: the directory of the stages that are not `shared`.
    config: `config(name)`: a stage's config fields, as JSON values.
    shared_dir: the directory of the `shared` stages (default `workdir`).
    paths: as in `run_stage`.
    fault: as in `run_stage`.

  Raises:
    Whatever a stage raises; an exception with a `where` attribute that
    says only 'the run' (a stop signal between stages' own handlers) is
    told the stage's name first.
  """
  wall = read_wall_times(workdir)
  for name in names:
    stage = stages[name]
    logging.info('stage %s', name)
    start = time.time()
    try:
      ran = run_stage(name, stage, state, config=config(name), paths=paths,
                      directory=(shared_dir or workdir) if stage.shared
                      else workdir, fault=fault)
    except BaseException as e:
      if hasattr(e, 'where'):  # A stop request names what it interrupted.
        if e.where == 'the run':
          e.where = f'stage {name}'
        logging.warning('%s', e)
      raise
    if ran:
      wall[name] = time.time() - start
      write_json(os.path.join(workdir, WALL), wall)
    logging.info('stage %s: %.1f s', name, time.time() - start)
