"""The library's import direction (docs/design.md, section 8).

`data`, `models`, `losses` and `optim` import none of each other; `envs`
may use `data`, `models` and `losses` but `data` never uses `envs`; nothing
in `distill` imports `experiments`; importing the library registers no flag.
Imports are read
from the source (deferred ones included), so a cycle cannot hide inside a
function body.
"""

import ast
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIB = os.path.join(ROOT, 'distill')

# Package (or top-level module) -> the distill packages it must not import.
FORBIDDEN = {
    'data': {'envs', 'models', 'losses', 'optim', 'train', 'datasets',
             'pipeline', 'evaluation', 'checkpointing', 'report'},
    'models': {'data', 'envs', 'losses', 'optim', 'train'},
    'losses': {'data', 'envs', 'models', 'optim', 'train'},
    'optim': {'data', 'envs', 'models', 'losses', 'train'},
    'envs': {'optim', 'train', 'pipeline', 'datasets'},
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


def test_import_direction():
  bad = []
  for path in _library_files():
    part = _part(path)
    for module in _imports(path):
      if module.split('.')[0] == 'experiments':
        bad.append((path, module))
      names = module.split('.')
      if names[0] != 'distill' or len(names) < 2:
        continue
      if names[1] in FORBIDDEN.get(part, ()):
        bad.append((path, module))
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
