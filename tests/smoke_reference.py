"""One uninterrupted smoke run shared by the end-to-end test modules.

    shared = smoke_reference.shared_dir(tmp_path_factory, d4rl_dir)
    reference = smoke_reference.reference_run(shared)  # its workdir
    proc = smoke_reference.run(shared, workdir, *flags, fault=None)

Test modules wrap the first two in module-scoped fixtures.

`configs/mt_distill.py:smoke` on two small D4RL files whose names do not
start with a task name, run once per pytest session (under a file lock, in
a directory the pytest-xdist workers share), with JAX's compilation cache
there too, so that later runs in the session compile nothing. Its XLA code
is compiled without optimizations, as the test session's is
(`conftest.TEST_XLA_FLAGS`; the models are tiny, compiling is most of a
run's time), but with XLA's default fusion code path (`run`). Tests copy
the reference before changing anything.
"""

import fcntl
import os
import pathlib
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASKS = ('hopper', 'walker2d')


def shared_dir(tmp_path_factory, d4rl_dir) -> pathlib.Path:
  """A directory shared by the xdist workers, with renamed D4RL files.

  Args:
    tmp_path_factory: pytest's fixture.
    d4rl_dir: conftest's fixture (small D4RL files of the smoke tasks).

  Returns:
    The directory (`files/my_<task>.hdf5` in it).
  """
  root = tmp_path_factory.getbasetemp()
  if 'PYTEST_XDIST_WORKER' in os.environ:  # One session root per run.
    root = root.parent
  root = root / 'smoke-reference'
  root.mkdir(exist_ok=True)
  with open(root / 'lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    for task in TASKS:  # Names without the task first (defect 3).
      target = root / 'files' / f'my_{task}.hdf5'
      if not target.exists():
        target.parent.mkdir(exist_ok=True)
        shutil.copy(os.path.join(d4rl_dir, f'{task}-medium.hdf5'), target)
  return root


# The test session's flags but XLA's default fusion code path: a population
# run with `mesh.members='map'` equals the single run to the last bit under
# XLA's default fusion (pipeline_test), not under the older one (2.5e-8
# apart). The runs here share their own compilation cache, so after the
# first run they compile little either way.
_OLD_FUSION = '--xla_cpu_use_fusion_emitters=false'


def run(shared, workdir, *flags, fault=None):
  """Runs `experiments.run` on the smoke config in a subprocess.

  Args:
    shared: from `shared_dir`.
    workdir: the run's workdir.
    *flags: more `--config.` flags.
    fault: a `DISTILL_FAULT` value (`distill.train.guards`), or None.

  Returns:
    The `subprocess.CompletedProcess` (text stdout and stderr).
  """
  env = dict(os.environ, DISTILL_DATA_DIR=str(shared / 'data'),
             JAX_COMPILATION_CACHE_DIR=str(shared / 'jax-cache'),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='-1',
             XLA_FLAGS=' '.join(
                 f for f in os.environ.get('XLA_FLAGS', '').split()
                 if f != _OLD_FUSION))
  if fault:
    env['DISTILL_FAULT'] = fault
  cmd = [sys.executable, '-m', 'experiments.run',
         '--config=configs/mt_distill.py:smoke', f'--workdir={workdir}',
         f'--config.data.spec={shared}/files/my_{{task}}.hdf5',
         '--config.eval.max_episode_steps=5', *flags]
  return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=900, check=False)


def reference_run(shared: pathlib.Path) -> str:
  """The uninterrupted run, made once per session.

  Args:
    shared: from `shared_dir`.

  Returns:
    Its workdir (copy it before changing anything: `copy`).
  """
  workdir = shared / 'reference'
  with open(shared / 'lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not (shared / 'reference.done').exists():
      shutil.rmtree(workdir, ignore_errors=True)
      proc = run(shared, workdir)
      assert proc.returncode == 0, proc.stderr[-4000:]
      (shared / 'reference.done').write_text('ok')
  return str(workdir)


def copy(reference_dir, tmp_path):
  """A private copy of the reference workdir to change."""
  workdir = str(tmp_path / 'work')
  shutil.copytree(reference_dir, workdir)
  return workdir
