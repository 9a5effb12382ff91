"""Tests of distill/envs/suite.py: generation, determinism, cache, atomicity."""

import hashlib
import os
import subprocess
import sys

import h5py
import jax
import numpy as np
import pytest

from distill.data import d4rl
from distill.envs import sac
from distill.envs import suite
from distill.envs import tasks


@pytest.fixture(name="snap_dir")
def fixture_snap_dir(tmp_path):
  """Tiny random-init snapshots (three stages) for hopper and halfcheetah."""
  d = tmp_path / "snapshots"
  for name in ("hopper", "halfcheetah-forward"):
    task = tasks.TASKS[name]
    actor = sac.Actor(act_dim=task.act_dim, hidden=(16, 16))
    for i, stage in enumerate(suite.STAGES):
      params = actor.init(jax.random.key(i),
                          np.zeros((1, task.obs_dim), np.float32))["params"]
      sac.save_snapshot(str(d / f"{name}-{stage}"), params,
                        dict(obs_dim=task.obs_dim, act_dim=task.act_dim,
                             hidden=[16, 16], stage=stage, env_steps=i))
  return str(d)


@pytest.fixture(autouse=True)
def _one_process(monkeypatch):
  # Worker processes cost a Python start each; one test covers them.
  monkeypatch.setitem(suite.DEFAULTS, "num_workers", 1)


@pytest.fixture(name="data_dir")
def fixture_data_dir(tmp_path, monkeypatch):
  d = tmp_path / "cache"
  monkeypatch.setenv("DISTILL_DATA_DIR", str(d))
  return d


def _files(d):
  return sorted(os.listdir(d / "suite")) if (d / "suite").exists() else []


def test_parse_name_splits_on_last_dash():
  assert suite.parse_name("halfcheetah-backward-medium") == (
      "halfcheetah-backward", "medium")
  assert suite.parse_name("hopper-mixed") == ("hopper", "mixed")
  with pytest.raises(d4rl.DatasetError, match="valid: halfcheetah-forward"):
    suite.parse_name("cheetah-medium")
  with pytest.raises(d4rl.DatasetError, match="valid: medium, mixed"):
    suite.load("hopper", "expert")


def test_tiny_dataset_is_valid_d4rl(data_dir, snap_dir):
  data = suite.load("hopper", "mixed", num_transitions=300, num_envs=4,
                    seed=1, snap_dir=snap_dir)
  d4rl.validate(data, source="test")
  assert data["observations"].shape == (300, 11)
  assert data["actions"].shape == (300, 3)
  assert data["next_observations"].shape == (300, 11)
  assert data["observations"].dtype == np.float32
  assert np.all(np.abs(data["actions"]) <= 1.0)
  term, tout = data["terminals"], data["timeouts"]
  assert not np.any(term & tout)
  assert term.sum() > 0  # random hopper policies fall
  # Within an episode, the next observation is the following observation.
  ends = term | tout
  np.testing.assert_array_equal(data["next_observations"][:-1][~ends[:-1]],
                                data["observations"][1:][~ends[:-1]])
  # Each episode starts near the reset pose (hopper height ~1.25).
  bounds = d4rl.episode_bounds(term, tout)
  assert bounds[-1, 1] == 300 and ends[-1]
  np.testing.assert_allclose(data["observations"][bounds[:, 0], 0], 1.25,
                             atol=0.01)
  card = suite.read_card("hopper", "mixed", num_transitions=300, num_envs=4,
                         seed=1, snap_dir=snap_dir)
  assert card["transitions"] == 300
  assert card["episodes"] == len(bounds)
  assert [s["stage"] for s in card["snapshots"]] == list(suite.STAGES)
  assert sum(s["transitions"] for s in card["snapshots"]) == 300
  assert card["versions"]["gymnasium"]


def test_same_seed_same_bytes(tmp_path, monkeypatch, snap_dir):
  def make(sub, seed):
    monkeypatch.setenv("DISTILL_DATA_DIR", str(tmp_path / sub))
    suite.load("hopper", "medium", num_transitions=200, num_envs=3,
               seed=seed, snap_dir=snap_dir)
    d = tmp_path / sub / "suite"
    return {f: (d / f).read_bytes() for f in sorted(os.listdir(d))}

  a, b, c = make("a", 0), make("b", 0), make("c", 1)
  assert a == b
  assert list(a.values()) != list(c.values())


def test_time_limit_and_budget_cuts_are_timeouts(data_dir, snap_dir):
  data = suite.load("halfcheetah-forward", "medium", num_transitions=2500,
                    num_envs=2, snap_dir=snap_dir)
  assert not data["terminals"].any()
  # Two streams of 1250 steps: a full 1000-step episode, then a cut one.
  np.testing.assert_array_equal(np.flatnonzero(data["timeouts"]),
                                [999, 1249, 2249, 2499])


def test_cache_is_reused(data_dir, snap_dir, monkeypatch):
  kw = dict(num_transitions=100, num_envs=2, snap_dir=snap_dir)
  first = suite.load("hopper", "medium", **kw)
  files = _files(data_dir)
  assert len(files) == 2  # the HDF5 file and its card
  mtimes = [os.stat(data_dir / "suite" / f).st_mtime_ns for f in files]

  def fail(*args, **kwargs):
    raise AssertionError("regenerated a cached dataset")

  monkeypatch.setattr(suite, "generate", fail)
  second = suite.load("hopper", "medium", **kw)
  assert _files(data_dir) == files
  assert [os.stat(data_dir / "suite" / f).st_mtime_ns for f in files] == mtimes
  np.testing.assert_array_equal(first["observations"], second["observations"])


def test_interrupted_generation_leaves_no_partial_file(
    data_dir, snap_dir, monkeypatch):
  kw = dict(num_transitions=100, num_envs=2, snap_dir=snap_dir)
  real = h5py.Group.create_dataset
  calls = []

  def create_then_fail(self, name, *args, **kwargs):
    calls.append(name)
    if len(calls) == 3:
      raise KeyboardInterrupt("injected mid-write")
    return real(self, name, *args, **kwargs)

  monkeypatch.setattr(h5py.Group, "create_dataset", create_then_fail)
  with pytest.raises(KeyboardInterrupt):
    suite.load("hopper", "medium", **kw)
  assert _files(data_dir) == []
  monkeypatch.setattr(h5py.Group, "create_dataset", real)
  data = suite.load("hopper", "medium", **kw)
  assert len(data["rewards"]) == 100
  assert len(_files(data_dir)) == 2


def test_shipped_snapshots_load_and_act():
  for name, task in tasks.TASKS.items():
    for stage in suite.STAGES:
      params, info = sac.load_snapshot(
          os.path.join(suite.snapshot_dir(), f"{name}-{stage}"))
      assert (info["obs_dim"], info["act_dim"]) == (task.obs_dim,
                                                    task.act_dim)
  policy = jax.jit(sac.make_policy(task.act_dim, tuple(info["hidden"])),
                   static_argnames="deterministic")
  env = tasks.make_vector_env(name, 2, seed=0)
  obs, _ = env.reset()
  act = np.asarray(policy(params, obs, jax.random.key(0), False))
  assert act.shape == (2, task.act_dim) and np.all(np.abs(act) < 1.0)
  obs, reward, _, _, _ = env.step(act)
  assert np.all(np.isfinite(reward))


@pytest.mark.slow
def test_worker_processes_do_not_change_the_data(snap_dir):
  kw = dict(num_transitions=400, num_envs=4, seed=2, snap_dir=snap_dir)
  one, card_one = suite.generate("hopper", "mixed", num_workers=1, **kw)
  two, card_two = suite.generate("hopper", "mixed", num_workers=2, **kw)
  assert one.keys() == two.keys()
  for k in one:
    np.testing.assert_array_equal(one[k], two[k], err_msg=k)
  assert card_one == card_two


# SHA-256 of the data arrays of small datasets from the shipped snapshots
# (generator version 3, mujoco 3.3.0). The same on any x86-64 machine
# with AVX2 and FMA (glibc then runs the same math routines inside
# MuJoCo) and the same package versions; a change means the generator
# changed: bump
# GENERATOR_VERSION and re-measure the README's dataset table.
PINNED = {
    ("hopper", "medium"):
        "5740bda092b7a182389fbe58114ae3d2a4e0a0270111d4901bfe81b8e2685e37",
    ("halfcheetah-backward", "mixed"):
        "b811c317f8e4420c350f814c0166a817e6fddceebe647b4ed06b463d0d91643e",
}


@pytest.mark.parametrize("task,quality", sorted(PINNED))
def test_generated_data_fingerprint_is_pinned(task, quality):
  data, card = suite.generate(task, quality, num_transitions=600, seed=0,
                              num_envs=2)
  assert card["data_sha256"] == d4rl.data_sha256(data)
  assert card["data_sha256"] == PINNED[task, quality]
  assert card["generator_version"] == suite.GENERATOR_VERSION == 3
  # Actions on the 2**-16 grid, within the action space.
  q = data["actions"] / suite.ACTION_QUANTUM
  np.testing.assert_array_equal(q, np.round(q))
  assert np.abs(data["actions"]).max() <= 1.0


_ACTIONS_PROBE = """
import hashlib, numpy as np
from distill.envs import sac, suite
params, _ = sac.load_snapshot(suite.snapshot_dir() + '/walker2d-final')
rng = np.random.default_rng(0)
obs, eps = rng.normal(size=(5000, 17)) * 3, rng.normal(size=(5000, 6))
noise = suite._noise(7, 3)
print(hashlib.sha256(suite.behavior_actions(params, obs, eps).tobytes()
      + np.stack([noise.standard_normal(6) for _ in range(5000)]).tobytes()
      ).hexdigest())
"""


_DATA_PROBE = """
from distill.envs import suite
print(suite.generate('hopper', 'medium', num_transitions=600, seed=0,
                     num_envs=2)[1]['data_sha256'])
"""

# Another CPU, emulated: NumPy without its AVX2/AVX-512 kernels, XLA's code
# for a CPU without AVX (generator version 2 then wrote other bytes: its
# behavior policy ran in XLA), glibc without its FMA/AVX2 math routines.
_NUMPY_XLA = dict(
    NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL AVX512_SPR X86_V3",
    XLA_FLAGS="--xla_cpu_max_isa=SSE4_2")
_GLIBC = dict(GLIBC_TUNABLES="glibc.cpu.hwcaps=-AVX2,-FMA,-AVX512F")


def _probe(code, **env):
  return subprocess.run(
      [sys.executable, "-c", code], capture_output=True, text=True,
      check=True, env=dict(os.environ, **env)).stdout.strip().splitlines()[-1]


@pytest.mark.slow
def test_generated_data_do_not_depend_on_the_cpu():
  here = _probe(_ACTIONS_PROBE)
  assert len(here) == 64
  assert _probe(_ACTIONS_PROBE, **_NUMPY_XLA, **_GLIBC) == here
  # The whole dataset too. (Not under the glibc mask: MuJoCo's own physics
  # uses glibc's math, so a CPU without FMA, made before 2013, gives other
  # episodes; every CPU with AVX2 and FMA runs the same routines.)
  assert _probe(_DATA_PROBE, **_NUMPY_XLA) == PINNED["hopper", "medium"]


def test_behavior_actions_match_the_actor(snap_dir):
  params, info = sac.load_snapshot(os.path.join(snap_dir, "hopper-final"))
  actor = sac.Actor(act_dim=3, hidden=tuple(info["hidden"]))
  rng = np.random.default_rng(0)
  obs, eps = rng.normal(size=(50, 11)), rng.normal(size=(50, 3))
  mean, log_std = actor.apply({"params": params}, obs.astype(np.float32))
  want = np.tanh(np.asarray(mean, np.float64)
                 + np.exp(np.asarray(log_std, np.float64)) * eps)
  got = suite.behavior_actions(params, obs, eps)
  np.testing.assert_allclose(got, want, atol=suite.ACTION_QUANTUM)


def test_damaged_cache_is_generated_again_with_a_warning(data_dir, snap_dir):
  kw = dict(num_transitions=300, num_envs=2, snap_dir=snap_dir)
  first = suite.load("hopper", "medium", **kw)
  path = next(p for p in (data_dir / "suite").iterdir()
              if p.suffix == ".hdf5")
  card = suite.read_card("hopper", "medium", **kw)
  assert card["file_sha256"] == fileio_sha(path)
  original = path.read_bytes()
  with open(path, "r+b") as f:  # A zeroed block inside the data.
    f.seek(len(original) // 2)
    f.write(b"\0" * 512)
  with pytest.warns(UserWarning, match=f"{path} is damaged"):
    second = suite.load("hopper", "medium", **kw)
  assert path.read_bytes() == original  # Generated again, identically.
  np.testing.assert_array_equal(first["observations"],
                                second["observations"])
  damaged = [p.name for p in (data_dir / "suite").iterdir()
             if ".damaged" in p.name]
  assert len(damaged) == 2  # The file and its card, kept aside.
  card_path = path.with_suffix(".json")
  card_path.write_text("{not json")
  with pytest.warns(UserWarning, match="has a damaged card"):
    suite.load("hopper", "medium", **kw)
  assert path.read_bytes() == original


def fileio_sha(path):
  return hashlib.sha256(path.read_bytes()).hexdigest()
