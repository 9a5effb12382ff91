"""Tests of distill/checkpointing.py (and teacher resume)."""

import os

import chex
import jax
import numpy as np

from distill import checkpointing
from distill.models import model as model_lib
from distill.train import teacher
import teacher_test  # tests/ is on sys.path under pytest


def test_save_restore_roundtrip(tmp_path):
  source, _ = teacher_test.make_source()
  config = teacher_test.make_config()
  model, train_step, state = teacher_test.build(config, source)
  batch = teacher.segments.sample_task_batch(source, jax.random.key(0), 0, 4)
  state, _ = jax.jit(train_step)(state, batch)
  meta = {'model': model_lib.model_meta(model), 'task': 'a',
          'state_mean': [np.zeros(5, np.float32)]}
  manager = checkpointing.make_manager(str(tmp_path / 'a'), keep=2)
  for step in (1, 2, 3):
    checkpointing.save(manager, step, state, meta)
  assert manager.all_steps() == [2, 3]  # keep=2
  abstract = jax.eval_shape(lambda: state)
  restored, meta2 = checkpointing.restore(manager, abstract)
  manager.close()
  assert type(restored) is teacher.TrainState
  chex.assert_trees_all_equal(restored.params, state.params)
  chex.assert_trees_all_equal(restored.opt_state, state.opt_state)
  np.testing.assert_array_equal(jax.random.key_data(restored.rng),
                                jax.random.key_data(state.rng))
  assert meta2['task'] == 'a' and meta2['state_mean'] == [[0.0] * 5]
  # The next step from the restored state equals the next step from state.
  a, _ = jax.jit(train_step)(state, batch)
  b, _ = jax.jit(train_step)(restored, batch)
  chex.assert_trees_all_close(a.params, b.params)

  # load_policy: the model and params from the directory alone.
  model2, params, meta3 = checkpointing.load_policy(str(tmp_path / 'a'))
  assert model2 == model and meta3['step'] == 3
  args = (batch.rtg, batch.states, batch.actions, batch.timesteps, batch.mask,
          batch.task)
  out = model.apply({'params': state.params}, *args, train=False)
  out2 = model2.apply({'params': params}, *args, train=False)
  chex.assert_trees_all_close(out, out2)
  assert checkpointing.latest_step(str(tmp_path / 'a')) == 3
  assert checkpointing.latest_step(str(tmp_path / 'none')) is None


def test_teacher_resume_equals_straight_run(tmp_path):
  source, stats = teacher_test.make_source()
  data = teacher_test.DATA
  straight = teacher.train_teachers(
      teacher_test.make_config(), data, tasks=('a', 'b'), source=source,
      stats=stats, directory=str(tmp_path / 'straight'), seed=1)
  # Stop after 3 steps, then continue to 6 from the checkpoint.
  teacher.train_teachers(
      teacher_test.make_config(steps=3), data, tasks=('a', 'b'),
      source=source, stats=stats, directory=str(tmp_path / 'resumed'), seed=1)
  assert checkpointing.latest_step(str(tmp_path / 'resumed' / 'b')) == 3
  resumed = teacher.train_teachers(
      teacher_test.make_config(), data, tasks=('a', 'b'), source=source,
      stats=stats, directory=str(tmp_path / 'resumed'), seed=1)
  for task in ('a', 'b'):
    assert int(resumed[task].step) == 6
    chex.assert_trees_all_close(resumed[task].params, straight[task].params,
                                atol=1e-6)
  # Each teacher loads from its own directory, with its true dims.
  model, params, meta = checkpointing.load_policy(
      os.path.join(tmp_path, 'resumed', 'b'))
  assert meta['task'] == 'b' and meta['obs_dims'] == [4]
  assert meta['act_dims'] == [2] and model.obs_dims == (5,)
  assert len(meta['state_mean'][0]) == 4 and meta['context_len'] == 4
  chex.assert_trees_all_close(params, resumed['b'].params)
