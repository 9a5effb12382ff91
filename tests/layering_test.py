"""The library's import direction (docs/design.md, section 8).

Every package and top-level module of `distill` has a layer, and imports
only from strictly lower layers: `data`, `models`, `losses` and `optim`
import none of each other; `envs` may use `data`, `models` and `losses` but
`data` never uses `envs`; `train` uses the packages below it but none of
the modules that assemble runs (`pipeline`, `evaluation`, `datasets`,
`report`); nothing in `distill` imports `experiments`; importing the
library registers no flag. Imports are read from the source (deferred ones
included), so a cycle cannot hide inside a function body. A new package or
module must be given its layer here.
"""

import ast
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIB = os.path.join(ROOT, 'distill')

# Package (or top-level module) -> its layer. A part may import parts of
# lower layers only (never its own layer, never above).
LAYERS = {
    # Leaves: no distill imports.
    'fileio': 0, 'lock': 0, 'parallel': 0, 'aggregate': 0, 'cost': 0,
    'provenance': 0, 'export_loader': 0,
    # The independent packages, and helpers over the leaves.
    'data': 1, 'models': 1, 'losses': 1, 'optim': 1, 'plots': 1,
    'engine': 1,
    # Environments, checkpoints, reports over them.
    'envs': 2, 'checkpointing': 2, 'report': 2, 'sweep_summary': 2,
    # Training, evaluation, dataset loading, export.
    'train': 3, 'evaluation': 3, 'datasets': 3, 'export': 3,
    # What a run loads, and the checks before it.
    'pipeline': 4,
    'preflight': 5,
    # The stage table (the entry of a run), and the sweeps derived from it.
    'stages': 6,
    'sweeps': 7,
}


def _part(path: str) -> str:
  rel = os.path.relpath(path, LIB)
  head = rel.split(os.sep)[0]
  return head[:-3] if head.endswith('.py') else head


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


def test_import_direction():
  bad = []
  for path in _library_files():
    part = _part(path)
    for module in _imports(path):
      if module.split('.')[0] == 'experiments':
        bad.append((path, module))
      names = module.split('.')
      if names[0] != 'distill' or len(names) < 2 or names[1] == part:
        continue
      if names[1] not in LAYERS or part not in LAYERS:
        continue  # test_every_part_has_a_layer names them.
      if LAYERS[names[1]] >= LAYERS.get(part, 0):
        bad.append((os.path.relpath(path, ROOT), module))
  assert not bad, bad


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
