"""The library's import direction (docs/design.md, section 8).

The folders of `distill` are its layers. Every package (and `losses`, the
one top-level module besides `__init__`) has a layer in LAYERS, and imports
only from strictly lower layers:

  io                            files: atomic writes, checksums, the lock
  data, models, losses, optim   the independent parts: none imports another
  train                         steps and host loops, with the devices they
                                run on (`parallel`) and their checkpoints
  envs, report                  tasks: environments, datasets, evaluation;
                                what comes out: results, aggregates, plots,
                                export. Neither imports the other.
  run                           a run and a sweep: the stage engine, the
                                pipeline, preflight, the stage table, sweeps

So `data` never uses `envs`; `train` learns from datasets alone and uses
none of the modules that assemble runs (`pipeline`, `evaluation`,
`datasets`, the run report); nothing in `distill` imports `experiments`;
importing the library registers no flag.

Inside a package the modules import each other freely, except where RANKS
orders them: a module imports only modules of its package with a lower
rank ('*' stands for the modules that a package's entry does not name,
which import each other freely). This keeps the order the moved modules had
at the top level: the stage engine knows no stage, the stage table sits
above `pipeline` and `preflight`, `sweeps` above the table, checkpoints and
devices below the training loops, datasets and evaluation above the tasks.
Imports are read from the source (deferred ones included), so a cycle cannot
hide inside a function body. A new package must be given its layer here,
and a new module of `io`, `report` or `run` its rank.
"""

import ast
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIB = os.path.join(ROOT, 'distill')

# Package (or top-level module) -> its layer. A part may import parts of
# lower layers only (never above; its own layer only inside itself).
LAYERS = {
    # Files on disk: no distill imports.
    'io': 0,
    # The independent parts of the method and its data.
    'data': 1, 'models': 1, 'losses': 1, 'optim': 1,
    # Training: steps, host loops, devices, checkpoints.
    'train': 2,
    # Tasks (environments, datasets, evaluation) and what comes out.
    'envs': 3, 'report': 3,
    # Running it: the entry of a run and of a sweep.
    'run': 4,
}

# Package -> module -> its rank inside the package ('*': the others). A
# module may import modules of its own package of lower rank only.
RANKS = {
    'io': {'fileio': 0, 'lock': 0},
    'train': {'parallel': 0, 'checkpointing': 1, '*': 2},
    'envs': {'*': 0, 'datasets': 1, 'evaluation': 1},
    'report': {'aggregate': 0, 'export_loader': 0, 'plots': 1, 'export': 1,
               'run_report': 2, 'sweep_summary': 2},
    'run': {'engine': 0, 'provenance': 0, 'cost': 0, 'pipeline': 1,
            'preflight': 2, 'stages': 3, 'sweeps': 4},
}

# The only modules at the top level of `distill`: the package's own
# `__init__` and `losses` (pure functions of the method, one module).
TOP_LEVEL_MODULES = {'__init__.py', 'losses.py'}


def _part(path: str) -> str:
  """The package (or top-level module) a library file belongs to."""
  rel = os.path.relpath(path, LIB)
  head = rel.split(os.sep)[0]
  return head[:-3] if head.endswith('.py') else head


def _module(path: str) -> str | None:
  """A package's file's module name inside its package (None at the top)."""
  names = os.path.relpath(path, LIB).split(os.sep)
  return names[1][:-3] if len(names) > 1 else None


def _rank(package: str, module: str | None) -> float | None:
  """`module`'s rank inside `package`; None where the package is unranked."""
  if package not in RANKS or module is None:
    return None
  if module == '__init__':
    return float('inf')  # A package's entry may gather its own modules.
  ranks = RANKS[package]
  return ranks.get(module, ranks.get('*'))


def _imports(path: str) -> set[str]:
  """Every module a file imports, at any depth of its code."""
  with open(path, encoding='utf-8') as f:
    tree = ast.parse(f.read(), path)
  out = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      out.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      out.add(node.module)
      out.update(f'{node.module}.{a.name}' for a in node.names)
  return out


def _library_files():
  for directory, _, files in os.walk(LIB):
    for name in files:
      if name.endswith('.py'):
        yield os.path.join(directory, name)


def test_every_part_has_a_layer():
  parts = {_part(p) for p in _library_files()} - {'__init__'}
  missing = sorted(parts - set(LAYERS))
  assert not missing, f'give these a layer in LAYERS: {missing}'


def test_every_module_of_a_ranked_package_has_a_rank():
  missing = sorted(
      os.path.relpath(p, ROOT) for p in _library_files()
      if _part(p) in RANKS and _module(p) is not None
      and _rank(_part(p), _module(p)) is None)
  assert not missing, f'give these a rank in RANKS: {missing}'


def test_the_library_has_no_top_level_module_but_losses():
  modules = {n for n in os.listdir(LIB) if n.endswith('.py')}
  extra = sorted(modules - TOP_LEVEL_MODULES)
  assert not extra, (f'put these in the package of their layer: {extra}')
  assert TOP_LEVEL_MODULES <= modules


def _bad_imports(path: str, modules: set[str]) -> list[str]:
  """The imports of `modules` that the library file `path` may not make."""
  part = _part(path)
  rank = _rank(part, _module(path))
  bad = []
  for module in sorted(modules):
    names = module.split('.')
    if names[0] == 'experiments':
      bad.append(module)
    if names[0] != 'distill' or len(names) < 2:
      continue
    if names[1] == part:
      # Inside a package: only where its modules are ranked; the modules
      # that '*' stands for import each other freely.
      ranks = RANKS.get(part, {})
      if (rank is not None and len(names) > 2
          and not {names[2], _module(path)}.isdisjoint(ranks)
          and _rank(part, names[2]) >= rank):
        bad.append(module)
      continue
    if names[1] not in LAYERS or part not in LAYERS:
      continue  # test_every_part_has_a_layer names them.
    if LAYERS[names[1]] >= LAYERS[part]:
      bad.append(module)
  return bad


def test_import_direction():
  bad = [(os.path.relpath(path, ROOT), module)
         for path in _library_files()
         for module in _bad_imports(path, _imports(path))]
  assert not bad, bad


def test_the_check_sees_both_levels():
  def bad(rel, module):
    return _bad_imports(os.path.join(LIB, *rel.split('/')), {module})

  # Between packages: down is allowed, up and sideways are not.
  assert not bad('run/pipeline.py', 'distill.report.run_report')
  assert not bad('envs/evaluation.py', 'distill.train.checkpointing')
  assert bad('report/plots.py', 'distill.run.stages')
  assert bad('data/d4rl.py', 'distill.envs.suite')
  assert bad('train/loop.py', 'distill.envs.evaluation')
  assert bad('envs/datasets.py', 'distill.report.plots')
  assert bad('losses.py', 'distill.optim')
  assert bad('io/fileio.py', 'experiments.run')
  # Inside a ranked package: down the ranks only.
  assert not bad('run/stages.py', 'distill.run.engine')
  assert bad('run/engine.py', 'distill.run.stages')
  assert bad('run/pipeline.py', 'distill.run.preflight')
  assert bad('train/parallel.py', 'distill.train.loop')
  assert not bad('train/loop.py', 'distill.train.checkpointing')
  assert not bad('train/teacher.py', 'distill.train.loop')  # both '*'
  assert bad('envs/suite.py', 'distill.envs.datasets')
  assert bad('envs/evaluation.py', 'distill.envs.datasets')
  # Inside an unranked package, or from a package's entry: free.
  assert not bad('data/filtering.py', 'distill.data.d4rl')
  assert not bad('optim/__init__.py', 'distill.optim.surgery')


def test_importing_the_library_registers_no_flag_and_no_entry_point():
  modules = sorted(
      os.path.relpath(p, ROOT)[:-3].replace(os.sep, '.').removesuffix(
          '.__init__') for p in _library_files())
  code = (
      'import sys\nfrom absl import flags\n'
      # Third-party packages register their own flags (absl logging, chex,
      # orbax); only the library's own count.
      'import absl.logging, chex, gymnasium, jax, optax\n'
      'import orbax.checkpoint, tensorboardX\n'
      'before = set(flags.FLAGS)\n'
      f'for m in {modules!r}:\n  __import__(m)\n'
      'new = set(flags.FLAGS) - before\n'
      'assert not new, new\n'
      "leaked = [m for m in sys.modules if m.startswith('experiments')]\n"
      'assert not leaked, leaked\n'
      'print(len(set(sys.modules)))\n')
  proc = subprocess.run([sys.executable, '-c', code], cwd=ROOT,
                        capture_output=True, text=True, timeout=300,
                        check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert len(modules) > 30
