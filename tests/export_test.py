"""distill/report/export.py, export_loader.py and experiments/export.py."""

import importlib.util
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from distill.envs import evaluation
from distill.models import decision_transformer as dt_lib
from distill.models import model as model_lib
from distill.report import export
from distill.train import checkpointing

K = 4
TASKS = ['hopper', 'walker2d']


@pytest.fixture(scope='module')
def student_dir(tmp_path_factory):
  """A random two-task student checkpoint (hopper 11/3, walker2d 17/6)."""
  model = dt_lib.DecisionTransformer(
      obs_dims=(11, 17), act_dims=(3, 6), num_layers=2, width=16,
      num_heads=2, dropout=0.1, context_len=K, max_timestep=1000)
  params = model_lib.init_params(model, jax.random.key(3))
  # Larger weights than the init, so actions differ visibly between inputs.
  params = jax.tree.map(lambda x: x * 5.0, params)
  r = np.random.default_rng(0)
  meta = {'tasks': TASKS, 'model': model_lib.model_meta(model),
          'obs_dims': [11, 17], 'act_dims': [3, 6], 'context_len': K,
          'rtg_scale': 1000.0, 'max_timestep': 1000,
          'state_mean': [r.normal(size=11).tolist(),
                         r.normal(size=17).tolist()],
          'state_std': [r.uniform(0.5, 2, 11).tolist(),
                        r.uniform(0.5, 2, 17).tolist()]}
  directory = str(tmp_path_factory.mktemp('run') / 'student' / 'last')
  manager = checkpointing.make_manager(directory)
  checkpointing.save(manager, 9, {'params': params}, meta)
  manager.close()
  return directory


def _inputs(n, seed=0):
  r = np.random.default_rng(seed)
  mask = np.ones((n, K), np.float32)
  mask[0, :2] = 0.0
  return (r.normal(size=(n, K, 1)).astype(np.float32),
          r.normal(size=(n, K, 17)).astype(np.float32),
          r.uniform(-1, 1, (n, K, 6)).astype(np.float32),
          r.integers(0, 1000, (n, K)).astype(np.int32), mask,
          (np.arange(n) % 2).astype(np.int32))


def _load_copied_loader(directory):
  spec = importlib.util.spec_from_file_location(
      'copied_export_loader', os.path.join(directory, 'export_loader.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_exported_actions_equal_in_process_policy(student_dir, tmp_path):
  meta = export.export_policy(student_dir, str(tmp_path / 'export'))
  assert meta['tasks'] == TASKS and meta['step'] == 9
  assert sorted(os.listdir(tmp_path / 'export')) == [
      'export_loader.py', 'policy.jaxexport', 'policy.json']
  loader = _load_copied_loader(str(tmp_path / 'export'))
  policy = loader.load(str(tmp_path / 'export'))
  model, params, _ = checkpointing.load_policy(student_dir)
  act = jax.jit(model_lib.make_policy_fn(model))
  for n in (1, 5, 64):  # One artifact serves every batch size.
    inputs = _inputs(n, seed=n)
    want = np.asarray(act(params, *inputs, jax.random.key(0)))
    got = policy(*inputs)
    assert got.shape == (n, 6)
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert np.abs(want).max() > 0.1  # Not a trivially constant policy.
  with open(tmp_path / 'export' / 'policy.json', encoding='utf-8') as f:
    written = json.load(f)
  np.testing.assert_allclose(written['state_std'][1],
                             meta['state_std'][1])


def test_actor_matches_evaluation_context(student_dir, tmp_path):
  # The loader's one-environment Actor keeps the same context as the
  # evaluation: drive both with the same observations and rewards.
  export.export_policy(student_dir, str(tmp_path / 'export'))
  loader = _load_copied_loader(str(tmp_path / 'export'))
  policy = loader.load(str(tmp_path / 'export'))
  model, params, meta = checkpointing.load_policy(student_dir)
  in_process = evaluation.make_policy(model, params, task_id=1)
  calls = []

  def recording(*args, **kwargs):
    calls.append(in_process(*args, **kwargs))
    return calls[-1]

  ctx = evaluation._with_context(  # pylint: disable=protected-access
      recording, jax.random.key(0), num_envs=1, context_len=K,
      state_size=17, action_size=6, start_rtg=5.0,
      rtg_scale=1000.0, max_timestep=1000,
      state_mean=np.asarray(meta['state_mean'][1], np.float32),
      state_std=np.asarray(meta['state_std'][1], np.float32),
      task_N=None, act_mask_NxA=np.ones((1, 6), bool))
  actor = loader.Actor(policy, 'walker2d', target_return=5000.0)
  r = np.random.default_rng(1)
  reward = 0.0
  for step in range(7):
    obs = r.normal(size=17)
    first = step in (0, 5)  # A new episode at step 5.
    if first:
      actor.reset()
    want = ctx(step, obs[None], np.array([reward]), np.array([first]))[0]
    got = actor.act(obs, reward)
    np.testing.assert_allclose(got, want, atol=1e-6)
    reward = float(r.normal())


@pytest.mark.slow
def test_export_entry_point(student_dir, tmp_path):
  workdir = os.path.dirname(os.path.dirname(student_dir))
  out = str(tmp_path / 'out')
  subprocess.run([sys.executable, '-m', 'experiments.export',
                  f'--workdir={workdir}', f'--out={out}'], check=True,
                 cwd=os.path.dirname(os.path.dirname(__file__)))
  assert os.path.exists(os.path.join(out, 'policy.jaxexport'))
