"""Shared fixtures: small D4RL-format datasets and the configs' own variants.

    def test_x(fake_dataset, d4rl_dir, smoke_config): ...

`fake_dataset(n, obs_dim, act_dim, seed)` returns a D4RL-style dict in memory
(`make_three_episodes` a tiny one with known episode boundaries);
`d4rl_dir` is a directory of small D4RL HDF5 files, `hopper-medium.hdf5` and
`walker2d-medium.hdf5`, with the real tasks' observation and action sizes;
`smoke_config` is `configs/mt_distill.py:smoke` reading those files, with
evaluation episodes cut to a few steps.
"""

import os
import shutil
import sys
import tempfile


# The tests compile the same small programs many times over, in-process and
# in the command-line runs they start; caching the executables on disk
# roughly halves a smoke run and changes no result (the same executable is
# loaded). One cache per pytest run: the process that loads this file first
# (pytest-xdist's controller) makes it, before JAX is imported; the workers
# and every subprocess inherit it, and the maker removes it at the end.
# (Worker scripts that import this file outside pytest make none.)
_OWN_CACHE = None
if 'pytest' in sys.modules and 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  _OWN_CACHE = tempfile.mkdtemp(prefix='distill-test-jax-cache-')
  os.environ['JAX_COMPILATION_CACHE_DIR'] = _OWN_CACHE
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.2')

# XLA's backend optimizations and its newer fusion emitters off for the
# whole session (this process, the workers and every subprocess, which
# inherit XLA_FLAGS): the tests' models are tiny, so compiling is most of
# their time. Unoptimized code compiles in about half of it
# (decision_transformer_test and student_test: 490 s -> 256 s on one core,
# 2026-12-06), and the older fusion code path halves it again (the study's
# smoke run: 31.5 s -> 16.5 s of XLA compilation, 55 s -> 43 s in all,
# scores equal to 1e-8). No test compares numbers with a program compiled
# otherwise; programs that set their own XLA_FLAGS for a child (forced
# device counts) add to these, not replace them.
TEST_XLA_FLAGS = ('--xla_backend_optimization_level=0',
                  '--xla_cpu_use_fusion_emitters=false')
if 'pytest' in sys.modules:
  _flags = os.environ.get('XLA_FLAGS', '').split()
  os.environ['XLA_FLAGS'] = ' '.join(
      _flags + [f for f in TEST_XLA_FLAGS if f not in _flags])


# The longest modules, longest first (the sum of their tests' durations in
# `pytest -n 2 --durations=0` on a 2-core CPU with the flags above,
# 2026-12-06: faults 266 s, sweep 215 s, bench 135 s, pipeline 128 s,
# student 98 s, gpu_check 88 s, parallel 70 s, optim_interop 54 s,
# decision_transformer 53 s, distributed 46 s, teacher 33 s, filtering 31 s,
# dataset_info 26 s, run 23 s; the rest under 20 s each). With `--dist
# loadscope` (pytest.ini) workers take modules in collection order, so these
# go first: a long module started last would run alone at the end while the
# other worker idles.
LONGEST_MODULES = ('faults_test.py', 'sweep_test.py', 'bench_test.py',
                   'pipeline_test.py', 'student_test.py', 'gpu_check_test.py',
                   'parallel_test.py', 'optim_interop_test.py',
                   'decision_transformer_test.py', 'distributed_test.py',
                   'teacher_test.py', 'filtering_test.py',
                   'dataset_info_test.py', 'run_test.py',
                   'study_report_test.py', 'evaluation_test.py',
                   'curriculum_test.py', 'checkpointing_test.py',
                   'suite_test.py', 'mt10_test.py')


def pytest_collection_modifyitems(session, config, items):
  del session, config
  rank = {name: i for i, name in enumerate(LONGEST_MODULES)}
  # Stable: the other modules, and the tests within each, keep their order.
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def pytest_sessionfinish(session, exitstatus):
  del session, exitstatus
  if _OWN_CACHE:
    shutil.rmtree(_OWN_CACHE, ignore_errors=True)


import numpy as np  # noqa: E402  pylint: disable=g-import-not-at-top
import pytest  # noqa: E402  pylint: disable=g-import-not-at-top

from configs import mt_distill  # noqa: E402
from distill.data import d4rl  # noqa: E402

# Observation and action sizes of the smoke config's tasks.
SMOKE_DIMS = {'hopper': (11, 3), 'walker2d': (17, 6)}


def make_fake_dataset(n: int, obs_dim: int, act_dim: int, seed: int = 0, *,
                      episode_len: int = 30) -> dict[str, np.ndarray]:
  """A D4RL-style dataset of random numbers, episodes cut by timeouts."""
  r = np.random.default_rng(seed)
  timeouts = np.zeros(n, bool)
  timeouts[episode_len - 1::episode_len] = True
  return dict(observations=r.normal(size=(n, obs_dim)).astype(np.float32),
              actions=np.tanh(r.normal(size=(n, act_dim))).astype(np.float32),
              rewards=r.normal(size=n).astype(np.float32),
              terminals=np.zeros(n, bool), timeouts=timeouts)


def make_three_episodes(n: int = 9, *, act: float = 0.5
                        ) -> dict[str, np.ndarray]:
  """Hopper-sized data: episodes of 3 (terminal), 4 (timeout) and 2
  unfinished steps; rewards 0, 1, ..., n-1."""
  return {
      'observations': np.zeros((n, 11), np.float32),
      'actions': np.full((n, 3), act, np.float32),
      'rewards': np.arange(n, dtype=np.float32),
      'terminals': np.eye(n, dtype=bool)[2],
      'timeouts': np.eye(n, dtype=bool)[6],
  }


@pytest.fixture(scope='session')
def fake_dataset():
  """The factory `make_fake_dataset(n, obs_dim, act_dim, seed)`."""
  return make_fake_dataset


@pytest.fixture(scope='session')
def d4rl_dir(tmp_path_factory) -> str:
  """Small D4RL HDF5 files `<task>-medium.hdf5` for the smoke tasks."""
  directory = str(tmp_path_factory.mktemp('d4rl'))
  for i, (task, (obs, act)) in enumerate(SMOKE_DIMS.items()):
    d4rl.write_hdf5(os.path.join(directory, f'{task}-medium.hdf5'),
                    make_fake_dataset(600, obs, act, seed=i, episode_len=100))
  return directory


@pytest.fixture
def smoke_config(d4rl_dir):
  """`configs/mt_distill.py:smoke` on the files of `d4rl_dir`."""
  config = mt_distill.get_config('smoke')
  config.data.spec = os.path.join(d4rl_dir, '{task}-{quality}.hdf5')
  config.eval.max_episode_steps = 5
  return config
