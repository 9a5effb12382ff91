"""Fault injection on the smoke pipeline: kills, signals, damage, bad input.

One uninterrupted run of `configs/mt_distill.py:smoke` (on small D4RL files
whose names do not start with a task name; `smoke_reference`) is the
reference; the other runs are killed, stopped, fed damaged files or bad
flags, and must end with the same `results.json` scores, the same
parameters and the same history as the reference, or be refused before any
work with a message naming the field or file. Kill points are injected
deterministically with `DISTILL_FAULT` (`distill.train.guards`), never by
timing.
"""

import json
import os
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import mt_distill
from distill.envs import evaluation
from distill.report import run_report
from distill.run import stages
from distill.train import checkpointing
from distill.train import logs
import smoke_reference  # tests/ is on sys.path under pytest

TASKS = smoke_reference.TASKS
_run = smoke_reference.run
_copy = smoke_reference.copy


@pytest.fixture(scope='module', name='shared')
def fixture_shared(tmp_path_factory, d4rl_dir):
  return smoke_reference.shared_dir(tmp_path_factory, d4rl_dir)


@pytest.fixture(scope='module', name='reference')
def fixture_reference(shared):
  return smoke_reference.reference_run(shared)


def _params(directory):
  return jax.tree.leaves(checkpointing.load_policy(directory)[1])


def _assert_same_results(workdir, reference):
  """Same scores, parameters and history as the uninterrupted run."""
  got, want = (json.load(open(os.path.join(d, 'results.json')))
               for d in (workdir, reference))
  for key in ('tasks', 'curriculum', 'surgery', 'aggregate',
              'teacher_params', 'student_params', 'teacher_steps',
              'student_steps'):
    assert got[key] == want[key], key
  for sub in ('teachers/hopper', 'teachers/walker2d', 'student/last',
              'student/best'):
    for a, b in zip(_params(os.path.join(workdir, sub)),
                    _params(os.path.join(reference, sub)), strict=True):
      np.testing.assert_array_equal(a, b, err_msg=sub)
  with np.load(os.path.join(workdir, 'student', 'history.npz')) as a, \
      np.load(os.path.join(reference, 'student', 'history.npz')) as b:
    assert sorted(a.files) == sorted(b.files)
    for k in a.files:
      np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def _damage(path, offset=None, data=None):
  """Overwrites bytes in the middle of a file (random unless `data`)."""
  size = os.path.getsize(path)
  offset = size // 2 if offset is None else offset
  data = data if data is not None else np.random.default_rng(0).bytes(
      min(64, size - offset))
  with open(path, 'r+b') as f:
    f.seek(offset)
    f.write(data)


def _largest_file(directory):
  files = [os.path.join(r, f) for r, _, fs in os.walk(directory) for f in fs
           if f != checkpointing.MANIFEST]
  return max(files, key=os.path.getsize)


@pytest.mark.slow
def test_reference_run_reports_a_d4rl_file_named_without_its_task(reference):
  # Defect 3: such a file crashed the report stage (dataset_score None).
  results = json.load(open(os.path.join(reference, 'results.json')))
  for task in TASKS:
    assert np.isfinite(results['tasks'][task]['dataset_score'])
  with open(os.path.join(reference, 'report.md')) as f:
    assert '| hopper |' in f.read()


# Kill points in the order a run reaches them (SIGKILL unless 'term'); each
# run continues from where the previous one died.
FAULTS = (
    'teachers@5:term',  # SIGTERM before the first checkpoint (every 10)
    'teachers@15',  # between the teachers' checkpoints at 10 and 20
    'teachers/hopper@20',  # hopper saved step 20, walker2d not yet
    'stage/teacher_eval/end',  # eval.json written, stamp not marked done
    'distill/best@10',  # defect 1: the first `best`, no `last` yet
    'distill/last@20',  # `last` saved, history.npz not yet
    'distill@30:term',  # SIGTERM off the checkpoint grid (every 20)
    'stage/student_eval/start',
)


# The teachers train together (one vmapped group), so that the kill points
# fall between the saves of teachers that resume from one step; on CPU
# 'auto' trains them one by one. Its uninterrupted run is its reference.
TOGETHER = '--config.teacher.vmap=True'


@pytest.mark.slow
def test_killed_at_any_point_a_rerun_ends_as_if_never_killed(
    shared, tmp_path):
  reference = str(tmp_path / 'reference')
  proc = _run(shared, reference, TOGETHER)
  assert proc.returncode == 0, proc.stderr[-3000:]
  workdir = str(tmp_path / 'work')
  for point in FAULTS:
    proc = _run(shared, workdir, TOGETHER, fault=point)
    if point.endswith(':term'):
      where, step = point[:-len(':term')].split('@')
      assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-3000:]
      assert f'checkpoint saved at step {step}; run the same' in proc.stderr
      assert f'stopped by SIGTERM during {where}' in proc.stderr
      assert 'Traceback' not in proc.stderr
      dirs = (['student/last'] if where == 'distill' else
              [f'teachers/{t}' for t in TASKS])
      for d in dirs:
        assert checkpointing.latest_step(os.path.join(workdir, d)) == int(
            step)
    else:
      assert proc.returncode == -signal.SIGKILL, (point, proc.stderr[-3000:])
  proc = _run(shared, workdir, TOGETHER)
  assert proc.returncode == 0, proc.stderr[-3000:]
  _assert_same_results(workdir, reference)
  # The step saved by hopper alone was computed again; it was kept aside.
  assert os.listdir(os.path.join(workdir, 'teachers', 'hopper',
                                 'superseded')) == ['20']
  # Every run is in metrics.jsonl, each line tagged with its run.
  assert len(logs.read_runs(workdir)) == len(FAULTS) + 1


@pytest.mark.slow
def test_damaged_latest_checkpoints_fall_back_to_the_previous(
    shared, reference, tmp_path):
  workdir = _copy(reference, tmp_path)
  teacher = os.path.join(workdir, 'teachers', 'hopper')
  last = os.path.join(workdir, 'student', 'last')
  _damage(_largest_file(os.path.join(teacher, '20')))
  _damage(_largest_file(os.path.join(last, '40')))
  with open(os.path.join(workdir, 'student', 'history.npz'), 'wb'):
    pass  # Written again from the checkpoint.
  proc = _run(shared, workdir)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert os.path.join(workdir, 'student', 'history.npz') in proc.stderr
  for path in (teacher, last):
    assert f'checkpoint {path}/' in proc.stderr
    assert os.listdir(os.path.join(path, 'damaged')) == [
        '20' if path == teacher else '40']
  # Recomputed identically, so what consumed them did not rerun.
  assert 'stage teacher_eval: up to date' in proc.stderr
  assert 'stage student_eval: up to date' in proc.stderr
  _assert_same_results(workdir, reference)


@pytest.mark.slow
def test_damaged_state_files_are_rebuilt_and_named(shared, reference,
                                                    tmp_path):
  workdir = _copy(reference, tmp_path)
  join = lambda *p: os.path.join(workdir, *p)
  _damage(join('datasets.json'), 0, b'\x00garbage')
  with open(join('teachers', 'eval.json'), 'r+b') as f:
    f.truncate(20)
  _damage(join('student', 'eval.json'), 2, b'~~~~')
  _damage(join('wall_s.json'), 0, b'{{{{')
  _damage(join('stamps', 'student_eval.json'), 0, b'\xff\xfe')
  # keep=1, no older copy: distilled again (the rest of the student is
  # intact, so only the check of `best` can find it).
  _damage(_largest_file(join('student', 'best', '40')))
  with open(join('metrics.jsonl'), 'a') as f:
    f.write('{"step": 7, "cut by a ki')
  proc = _run(shared, workdir)
  assert proc.returncode == 0, proc.stderr[-3000:]
  for rel in ('datasets.json', 'teachers/eval.json', 'student/eval.json',
              'wall_s.json', 'stamps/student_eval.json', 'student/best'):
    assert join(rel) in proc.stderr, rel
  _assert_same_results(workdir, reference)
  with pytest.warns(UserWarning, match='not JSON'):
    assert len(logs.read_runs(workdir)) == 2


@pytest.mark.slow
def test_nan_in_teacher_training_stops_naming_it_and_keeps_good_state(
    shared, tmp_path):
  workdir = str(tmp_path / 'work')
  # Both teachers train together: both stop at the NaN, at step 10.
  proc = _run(shared, workdir, TOGETHER, fault='teachers@15:nan')
  assert proc.returncode != 0
  assert ("teachers: non-finite loss nan for task 'hopper' at step 20"
          in proc.stderr)
  assert 'the last good checkpoint is step 10' in proc.stderr
  for task in TASKS:
    directory = os.path.join(workdir, 'teachers', task)
    assert checkpointing.latest_step(directory) == 10
    assert all(np.isfinite(x).all() for x in _params(directory))
  assert not os.path.exists(os.path.join(workdir, 'teachers', 'eval.json'))
  assert not os.path.exists(os.path.join(workdir, 'results.json'))


@pytest.mark.slow
def test_nan_in_distillation_stops_naming_it_and_writes_no_score(
    shared, reference, tmp_path):
  del reference  # Compiled everything this run needs.
  workdir = str(tmp_path / 'work')
  # Defect 6: parameters that turn NaN in the last update, the loss still
  # finite, were saved, evaluated to NaN scores, and the run exited 0.
  proc = _run(shared, workdir, fault='distill@40:nan')
  assert proc.returncode != 0
  assert 'distill: non-finite parameters' in proc.stderr
  assert 'at step 40' in proc.stderr
  assert 'the last good checkpoint is step 20' in proc.stderr
  last = os.path.join(workdir, 'student', 'last')
  assert checkpointing.latest_step(last) == 20
  assert all(np.isfinite(x).all() for x in _params(last))
  assert not os.path.exists(os.path.join(workdir, 'student', 'eval.json'))
  assert not os.path.exists(os.path.join(workdir, 'results.json'))


@pytest.mark.slow
def test_more_teacher_steps_rerun_the_distillation(shared, reference,
                                                   tmp_path):
  # Defect 4: the student was reported up to date with new teachers.
  workdir = _copy(reference, tmp_path)
  proc = _run(shared, workdir, '--config.teacher.steps=25',
              "--config.stages=('teachers','teacher_eval','distill')")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'stage distill: config or inputs changed' in proc.stderr
  stamp = json.load(open(os.path.join(workdir, 'stamps', 'distill.json')))
  assert {t: fp['step'] for t, fp in stamp['inputs']['teachers'].items()
          } == {'hopper': 25, 'walker2d': 25}
  assert stamp['done']
  assert [d for d in os.listdir(workdir) if d.startswith('student.stale-')]
  evals = json.load(open(os.path.join(workdir, 'teachers', 'eval.json')))
  assert evals['hopper']['step'] == 25


@pytest.mark.slow
def test_switching_configs_back_and_forth_keeps_every_output(
    shared, reference, tmp_path):
  # Defect 5: earlier *.stale-* outputs were deleted, plots overwritten.
  workdir = _copy(reference, tmp_path)
  for reps in (100, 200, 100):
    proc = _run(shared, workdir, f'--config.report.reps={reps}',
                "--config.stages=('report',)")
    assert proc.returncode == 0, proc.stderr[-3000:]
  for name in ('results.json', 'report.md', 'kl.png', 'scores.png'):
    stale = [f for f in os.listdir(workdir) if f.startswith(name + '.stale')]
    assert len(stale) == 3, (name, stale)
  hashes = [r['config_hash'] for r in logs.read_runs(workdir)]
  assert len(hashes) == 4 and hashes[1] == hashes[3] != hashes[2]


def _smoke_config(shared):
  config = mt_distill.get_config('smoke')
  config.data.spec = f'{shared}/files/my_{{task}}.hdf5'
  return config


def _wrong_sizes(shared, config):
  # The walker2d file (17/6) for the hopper task (11/3).
  config.data.specs = {'hopper': f'{shared}/files/my_walker2d.hdf5'}


def _damaged_file(shared, config):
  path = shared / 'files' / 'damaged.hdf5'
  shutil.copy(shared / 'files' / 'my_hopper.hdf5', path)
  _damage(path, 0, b'\0' * 512)  # The HDF5 superblock.
  config.data.specs = {'hopper': str(path)}


def _missing_key(shared, config):
  import h5py  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  path = shared / 'files' / 'no_actions.hdf5'
  shutil.copy(shared / 'files' / 'my_hopper.hdf5', path)
  with h5py.File(path, 'a') as f:
    del f['actions']
  config.data.specs = {'hopper': str(path)}


def _set(field, value):
  def apply(shared, config):
    del shared
    *parents, leaf = field.split('.')
    node = config
    for p in parents:
      node = node[p]
    with node.ignore_type():
      node[leaf] = value
  return apply


# (how the input is bad, what the message must name)
BAD_INPUTS = [
    (_set('teacher.steps', -5), 'teacher.steps=-5'),
    (_set('student.steps', 0), 'student.steps=0'),
    (_set('teacher.batch_size', 0), 'teacher.batch_size'),
    (_set('student.optimizer.lr', float('nan')), 'student.optimizer.lr'),
    (_set('teacher.optimizer.lr', -1e-3), 'teacher.optimizer.lr'),
    # The cosine decay ends inside the warmup: refused before the teachers
    # train, not when the distillation starts.
    (_set('student.optimizer.warmup_steps', 1000),
     'student.optimizer.decay_steps=40: must exceed'),
    (_set('teacher.model.dropout', 1.5), 'teacher.model.dropout'),
    (_set('teacher.keep', 0), 'teacher.keep'),
    (_set('teacher.steps_per_dispatch', 2.5), 'teacher.steps_per_dispatch'),
    (_set('eval.episodes', 0), 'eval.episodes'),
    (_set('teacher.vmap', 'yes'), 'teacher.vmap'),
    (_set('student.model.num_heads', 3), 'student.model.width'),
    (_set('data.context_len', 0), 'data.context_len'),
    (_set('data.suite_transitions', -1), 'data.suite_transitions'),
    (_set('report.student_checkpoint', 'first'), 'report.student_checkpoint'),
    (_set('tasks', ('hopper', 'ant')), "unknown tasks ['ant']"),
    (_set('tasks', ('hopper', 'hopper')), 'repeats a task'),
    (_set('eval.target_return.hopper', float('inf')),
     'eval.target_return.hopper'),
    (_set('data.spec', 'suite:{task}-expert'), "unknown quality 'expert'"),
    (_set('data.spec', '/nonexistent/{task}.hdf5'), 'no such file'),
    (_wrong_sizes, "key 'observations' has shape (600, 17)"),
    (_damaged_file, 'damaged.hdf5: cannot be read as HDF5'),
    (_missing_key, "no_actions.hdf5: key 'actions': missing"),
]


@pytest.mark.parametrize('spoil,message', BAD_INPUTS)
def test_bad_input_is_refused_before_any_work(shared, tmp_path, spoil,
                                              message):
  config = _smoke_config(shared)
  spoil(shared, config)
  workdir = tmp_path / 'work'
  with pytest.raises((ValueError, KeyError), match=None) as info:
    stages.run(config, str(workdir))
  assert message in str(info.value)
  assert not workdir.exists()


def test_unusable_workdirs_are_refused_before_any_work(shared, tmp_path,
                                                       monkeypatch):
  config = _smoke_config(shared)
  blocker = tmp_path / 'a_file'
  blocker.write_text('x')
  with pytest.raises(ValueError, match='is a file, not a directory'):
    stages.run(config, str(blocker))
  monkeypatch.setattr(shutil, 'disk_usage', lambda p: shutil._ntuple_diskusage(
      1 << 30, 1 << 30, 1 << 20))  # pylint: disable=protected-access
  with pytest.raises(ValueError, match='1 MiB free'):
    stages.run(config, str(tmp_path / 'work'))
  assert not (tmp_path / 'work').exists()


@pytest.mark.slow
def test_fewer_steps_than_the_checkpoints_is_refused(shared, reference):
  config = _smoke_config(shared)
  config.eval.max_episode_steps = 5
  config.teacher.steps = 10
  before = sorted(os.listdir(reference))
  with pytest.raises(ValueError, match=r'teacher.steps=10: the checkpoints'):
    stages.run(config, reference)
  assert sorted(os.listdir(reference)) == before


def test_a_nan_evaluation_is_never_written_as_a_score(shared, tmp_path,
                                                      monkeypatch):
  def nan_evaluation(directory, **kwargs):
    del directory, kwargs
    return {'step': 20, 'normalized_mean': float('nan'),
            'normalized_std': 0.0, 'return_mean': float('nan')}

  monkeypatch.setattr(evaluation, 'evaluate_checkpoint', nan_evaluation)
  run = stages.Run(_smoke_config(shared), str(tmp_path))
  with pytest.raises(FloatingPointError, match='non-finite normalized_mean'):
    stages._teacher_eval(run)  # pylint: disable=protected-access
  assert not (tmp_path / 'teachers' / 'eval.json').exists()


def test_results_with_a_nan_score_are_refused(tmp_path):
  results = {'tasks': {'hopper': {'teacher_score': float('nan')}}}
  with pytest.raises(ValueError, match='nan at tasks/hopper/teacher_score'):
    run_report.write_report(str(tmp_path), results, steps_N=np.zeros(0),
                            kl_NxT=np.zeros((0, 1)), choice_N=np.zeros(0))
  assert os.listdir(tmp_path) == []


def test_a_stop_signal_while_starting_exits_cleanly_before_any_work(
    tmp_path):
  # A SIGTERM that lands during the imports (an import may swallow an
  # exception raised in it) is recorded and honoured before any work.
  workdir = tmp_path / 'work'
  code = ('import os, signal, sys\n'
          f'sys.argv = ["run", "--workdir={workdir}",'
          ' "--config=configs/mt_distill.py:smoke"]\n'
          'from experiments import run\n'
          'os.kill(os.getpid(), signal.SIGTERM)\n'
          'from absl import app\n'
          'app.run(run.main)\n')
  proc = subprocess.run([sys.executable, '-c', code], cwd=smoke_reference.ROOT,
                        capture_output=True, text=True, timeout=300,
                        check=False)
  assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-3000:]
  assert ('stopped by SIGTERM while starting, before any stage ran; run the'
          ' same command again') in proc.stderr
  assert 'Traceback' not in proc.stderr
  assert not workdir.exists()
