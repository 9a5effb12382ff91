"""Tests of distill/run/stages.py: the table, what derives from it, the entry.

The whole pipeline runs in run_test.py, pipeline_test.py and faults_test.py;
the engine's rules on toy stages in engine_test.py.
"""

import inspect
import json
import os

from distill.run import pipeline
from distill.run import preflight
from distill.run import stages
from distill.run import sweeps
from distill.train import student as student_lib


def test_the_teacher_job_is_derived_from_the_table():
  assert stages.TEACHER_STAGES == ('datasets', 'teachers', 'teacher_eval')
  assert set(stages.TEACHER_FIELDS) == {'seed', 'seeds', 'mesh', 'tasks',
                                        'data', 'teacher', 'eval'}
  shared = [name for name, s in stages.STAGES.items() if s.shared]
  assert shared == ['teachers', 'teacher_eval']
  for name in stages.TEACHER_STAGES:
    assert set(stages.STAGES[name].keys) <= set(stages.TEACHER_FIELDS)
  # One list: the sweep's names are the table's.
  assert sweeps.TEACHER_STAGES is stages.TEACHER_STAGES
  assert sweeps.TEACHER_FIELDS is stages.TEACHER_FIELDS


def test_no_stage_body_validates_the_config_again():
  for name, stage in stages.STAGES.items():
    assert 'check_config' not in inspect.getsource(stage.run), name
  assert 'check_config(' not in inspect.getsource(pipeline)


def test_the_entry_validates_the_config_once(smoke_config, tmp_path,
                                             monkeypatch):
  calls = []
  for module in (preflight, student_lib):
    original = module.check_config

    def counted(config, original=original, name=module.__name__):
      calls.append(name)
      return original(config)

    monkeypatch.setattr(module, 'check_config', counted)
  smoke_config.stages = ('datasets',)
  workdir = str(tmp_path / 'w')
  stages.run(smoke_config, workdir)
  assert sorted(calls) == ['distill.run.preflight', 'distill.train.student']
  with open(os.path.join(workdir, 'datasets.json')) as f:
    assert set(json.load(f)) == set(smoke_config.tasks)
  # A rerun skips the stage, and validates once again (its own entry).
  calls.clear()
  stages.run(smoke_config, workdir)
  assert len(calls) == 2
  with open(os.path.join(workdir, 'stamps', 'datasets.json')) as f:
    stamp = json.load(f)
  assert stamp['done'] and stamp['hash'] == stages.stage_hash(
      smoke_config, 'datasets', stamp['inputs'])
