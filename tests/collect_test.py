"""Tests of experiments/collect.py: SAC training writes three loadable stages.

The entry point runs as a subprocess: it defines absl flags, which must not
meet another entry point's flags in the test process.
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import collect as collect_config
from distill.envs import sac
from distill.envs import tasks as tasks_lib


@pytest.mark.slow
def test_smoke_training_writes_three_stage_snapshots(tmp_path):
  config = collect_config.get_config("smoke")
  result = subprocess.run(
      [sys.executable, "-m", "experiments.collect",
       "--config=configs/collect.py:smoke", f"--workdir={tmp_path}"],
      capture_output=True, text=True, timeout=600, check=False,
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert result.returncode == 0, result.stderr[-3000:]
  assert "[hopper] DONE" in result.stdout
  task = tasks_lib.get_task("hopper")
  steps = {}
  for stage in ("early", "middle", "final"):
    prefix = os.path.join(tmp_path, "snapshots", f"hopper-{stage}")
    params, info = sac.load_snapshot(prefix)
    assert info["seed"] == config.seeds.hopper
    assert info["stage"] == stage
    steps[stage] = info["env_steps"]
    policy = sac.make_policy(task.act_dim, info["hidden"])
    act = policy(params, np.zeros((3, task.obs_dim), np.float32),
                 jax.random.key(0), True)
    assert act.shape == (3, task.act_dim)
    assert np.all(np.abs(np.asarray(act)) <= 1.0)
  # The smoke run cannot reach the targets: every stage is written at the cap.
  assert max(steps.values()) <= config.sac.max_env_steps
  with open(os.path.join(tmp_path, "hopper.jsonl")) as f:
    log = [json.loads(line) for line in f]
  assert [r["step"] for r in log] == [1000, 2000]
  assert all(np.isfinite(r["eval_return"]) for r in log)


def test_every_task_has_a_seed_and_targets():
  config = collect_config.get_config()
  for name in config.tasks:
    key = name.replace("-", "_")
    assert isinstance(config.seeds[key], int)
    t = [config.targets[s][key] for s in ("early", "middle", "final")]
    assert t[0] < t[1] < t[2], name
