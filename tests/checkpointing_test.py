"""Tests of distill/train/checkpointing.py (and teacher resume)."""

import os

import chex
import jax
import numpy as np
import pytest

from distill.io import fileio
from distill.models import model as model_lib
from distill.train import checkpointing
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


def _tiny_manager(directory, steps=(1, 2), keep=3):
  manager = checkpointing.make_manager(str(directory), keep=keep)
  for step in steps:
    state = {'w': np.full(64, float(step), np.float32),
             'rng': jax.random.key(step)}
    checkpointing.save(manager, step, state, {'step': step})
  return manager


def _abstract():
  return jax.eval_shape(lambda: {'w': np.zeros(64, np.float32),
                                 'rng': jax.random.key(0)})


def _damage_largest(step_dir):
  files = [os.path.join(r, f) for r, _, fs in os.walk(step_dir) for f in fs
           if f != checkpointing.MANIFEST]
  path = max(files, key=os.path.getsize)
  with open(path, 'r+b') as f:
    f.seek(os.path.getsize(path) // 2)
    f.write(np.random.default_rng(0).bytes(16))


def test_damaged_latest_step_is_skipped_then_set_aside(tmp_path, caplog):
  _tiny_manager(tmp_path / 'c').close()
  _damage_largest(tmp_path / 'c' / '2')
  assert checkpointing.step_problems(str(tmp_path / 'c'))[2].startswith(
      'is damaged')
  assert checkpointing.latest_step(str(tmp_path / 'c')) == 1
  # A reader uses the previous step and says so; it moves nothing.
  state, meta, step = checkpointing.restore_raw(str(tmp_path / 'c'))
  assert step == 1 and meta['step'] == 1 and (state['w'] == 1).all()
  assert 'checkpoint' in caplog.text and '/c/2 is damaged' in caplog.text
  with pytest.raises(fileio.DamagedFileError, match='c/2 is damaged'):
    checkpointing.restore_raw(str(tmp_path / 'c'), step=2)
  # A writer moves it aside (never deletes it) and saves step 2 again.
  manager = checkpointing.make_manager(str(tmp_path / 'c'), keep=3)
  assert manager.all_steps() == [1]
  assert os.listdir(tmp_path / 'c' / 'damaged') == ['2']
  checkpointing.save(manager, 2, {'w': np.full(64, 2.0, np.float32),
                                  'rng': jax.random.key(2)}, {'step': 2})
  restored, _ = checkpointing.restore(manager, _abstract())
  assert (np.asarray(restored['w']) == 2).all()
  manager.close()


def test_a_step_that_exists_is_set_aside_not_an_error(tmp_path):
  # What blocked a rerun (orbax's StepAlreadyExistsError, defect 1).
  manager = _tiny_manager(tmp_path / 'c', steps=(1,))
  checkpointing.save(manager, 1, {'w': np.zeros(64, np.float32),
                                  'rng': jax.random.key(9)}, {'step': 1})
  assert os.listdir(tmp_path / 'c' / 'superseded') == ['1']
  restored, _ = checkpointing.restore(manager, _abstract())
  assert (np.asarray(restored['w']) == 0).all()
  manager.close()


def test_step_without_manifest_counts_only_where_none_has_one(tmp_path):
  _tiny_manager(tmp_path / 'c').close()
  os.remove(tmp_path / 'c' / '2' / checkpointing.MANIFEST)  # Killed before.
  assert checkpointing.latest_step(str(tmp_path / 'c')) == 1
  os.remove(tmp_path / 'c' / '1' / checkpointing.MANIFEST)  # Older format.
  assert checkpointing.latest_step(str(tmp_path / 'c')) == 2


def test_fingerprint_follows_values_not_files(tmp_path):
  _tiny_manager(tmp_path / 'a').close()
  _tiny_manager(tmp_path / 'b').close()  # Same values, other files.
  assert fileio.sha256_file(tmp_path / 'a' / '2' / '_CHECKPOINT_METADATA') \
      != fileio.sha256_file(tmp_path / 'b' / '2' / '_CHECKPOINT_METADATA')
  fa = checkpointing.fingerprint(str(tmp_path / 'a'))
  assert fa == checkpointing.fingerprint(str(tmp_path / 'b'))
  assert fa['step'] == 2
  _tiny_manager(tmp_path / 'c', steps=(1, 3)).close()
  assert checkpointing.fingerprint(str(tmp_path / 'c'))['sha256'] != fa[
      'sha256']
  assert checkpointing.fingerprint(str(tmp_path / 'none')) is None
