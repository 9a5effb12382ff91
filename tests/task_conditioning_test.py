"""A multi-task student acts in each task with that task's own adapters.

Guards the walker2d finding of the first study (docs/results_study1.md):
tasks of equal observation and action sizes (halfcheetah and walker2d,
17 / 6) must still reach their own embeddings and heads, in training
batches and in the evaluation of a checkpoint, whatever subset and order of
tasks is asked for.
"""

import jax
import numpy as np

from distill.data import segments
from distill.envs import evaluation
from distill.models import model as model_lib
from distill.train import checkpointing
import evaluation_test  # tests/ is on sys.path under pytest

TASKS = ('halfcheetah-forward', 'halfcheetah-backward', 'hopper', 'walker2d')


def _student():
  # Equal sizes for every task: only the task id tells them apart.
  model = model_lib.DecisionTransformer(
      obs_dims=(2,) * 4, act_dims=(1,) * 4, num_layers=1, width=8,
      num_heads=1, dropout=0.0, context_len=3, max_timestep=100)
  return model, model_lib.init_params(model, jax.random.key(7))


def test_checkpoint_evaluation_passes_each_task_its_own_index(tmp_path):
  model, params = _student()
  meta = {'tasks': list(TASKS), 'model': model_lib.model_meta(model),
          'obs_dims': [2] * 4, 'act_dims': [1] * 4, 'context_len': 3,
          'rtg_scale': 10.0, 'max_timestep': 100,
          'state_mean': [[0.0, 0.0]] * 4, 'state_std': [[1.0, 1.0]] * 4}
  manager = checkpointing.make_manager(str(tmp_path / 'student'))
  checkpointing.save(manager, 1, {'params': params}, meta)
  manager.close()
  # The reward depends on the action, so each task id gives its own return.
  make = evaluation_test.counting_envs([6, 4], action_scale=1.0)
  common = dict(episodes=2, num_envs=2, seed=3, context_len=3,
                rtg_scale=10.0, max_timestep=100, state_size=2,
                action_size=1, make_envs=make)
  asked = ['walker2d', 'halfcheetah-forward']  # Another order, a subset.
  targets = {'walker2d': 50.0, 'halfcheetah-forward': 60.0}
  together = evaluation.evaluate_checkpoint_tasks(
      str(tmp_path / 'student'), target_returns=targets, tasks=asked,
      episodes=2, num_envs=2, seed=3, make_envs=make)
  returns = {}
  for task_id, task in enumerate(TASKS):
    returns[task] = evaluation.evaluate(
        evaluation.make_policy(model, params, task_id=task_id),
        task if task in targets else 'walker2d',
        target_return=targets.get(task, 50.0), state_mean=np.zeros(2),
        state_std=np.ones(2), **common)['returns']
  for task in asked:
    np.testing.assert_allclose(together[task]['returns'], returns[task],
                               rtol=1e-6)
  # The adapters differ, so a wrong index would show.
  assert not np.allclose(returns['walker2d'], returns['halfcheetah-forward'])


def test_training_batches_carry_their_task_index(fake_dataset):
  data = [fake_dataset(40, 17, 6, seed=i) for i in range(len(TASKS))]
  source = segments.make_segment_source(data, context_len=3, rtg_scale=10.0,
                                        max_timestep=100)
  for task in range(len(TASKS)):
    batch = segments.sample_task_batch(source, jax.random.key(task), task, 8)
    assert np.all(np.asarray(batch.task) == task)
    # Its segments are that task's rows (actions identify the dataset).
    valid = np.asarray(batch.mask) > 0
    rows = {tuple(np.round(a, 5)) for a in data[task]['actions']}
    assert all(tuple(np.round(a, 5)) in rows
               for a in np.asarray(batch.actions)[valid])
