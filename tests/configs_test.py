"""The experiment configs load, and their variants differ as documented."""

import pytest

from configs import d4rl_locomotion
from configs import mt10
from configs import mt_distill
from configs import teachers
from distill.run import pipeline
from distill.run import stages
from distill.train import student as student_lib


@pytest.mark.parametrize('arg', [None, 'smoke', 'paper'])
def test_mt_distill_variants_pass_the_distillation_checks(arg):
  config = mt_distill.get_config(arg)
  student_lib.check_config(config)
  assert config.stages[-1] == 'report'
  assert all(s in stages.STAGES for s in config.stages)
  for task in config.tasks:
    assert pipeline.dataset_spec(config, task) == f'suite:{task}-medium'
    pipeline.task_value(config.eval.target_return, task, 'eval.target_return')


def test_student_is_smaller_than_a_teacher_in_every_variant():
  for arg in (None, 'paper'):
    config = mt_distill.get_config(arg)
    assert config.student.model.width < config.teacher.model.width
    assert (config.student.model.num_layers
            <= config.teacher.model.num_layers)


def test_paper_teacher_sizes():
  config = teachers.get_config('paper')
  model = config.teacher.model
  assert (model.num_layers, model.width, model.num_heads) == (3, 128, 1)
  assert model.dropout == 0.1 and config.data.context_len == 20
  opt = config.teacher.optimizer
  assert (opt.lr, opt.warmup_steps, opt.grad_clip) == (1e-4, 10_000, 0.25)


def test_d4rl_locomotion_points_each_task_at_its_d4rl_file():
  config = d4rl_locomotion.get_config()
  assert pipeline.dataset_spec(config, 'hopper') == (
      '~/.d4rl/datasets/hopper_medium-v2.hdf5')
  assert pipeline.dataset_spec(config, 'halfcheetah-forward') == (
      '~/.d4rl/datasets/halfcheetah_medium-v2.hdf5')
  replay = d4rl_locomotion.get_config('medium-replay')
  assert pipeline.dataset_spec(replay, 'walker2d') == (
      '~/.d4rl/datasets/walker2d_medium_replay-v2.hdf5')
  assert config.teacher.model.width == 128
  student_lib.check_config(config)


@pytest.mark.parametrize('module',
                         [mt_distill, teachers, d4rl_locomotion, mt10])
def test_unknown_variant_is_refused(module):
  with pytest.raises(ValueError, match='unknown'):
    module.get_config('nope')


@pytest.mark.parametrize('arg', [None, 'smoke'])
def test_mt10_variants_pass_the_distillation_checks(arg):
  config = mt10.get_config(arg)
  student_lib.check_config(config)
  assert all(s in stages.STAGES for s in config.stages)
  for task in config.tasks:
    assert pipeline.dataset_spec(config, task) == (
        f'suite:mt10/{task}-{config.data.quality}')
    pipeline.task_value(config.eval.target_return, task, 'eval.target_return')


def test_study2_mt10_is_the_gates_setting_with_the_budget_cuts():
  from configs import gate  # pylint: disable=g-import-not-at-top
  from configs import study2  # pylint: disable=g-import-not-at-top
  from distill.run import preflight  # pylint: disable=g-import-not-at-top
  config = study2.get_config('mt10')
  student_lib.check_config(config)
  preflight.check_config(config)
  gate_config = gate.get_config('mt10')
  assert config.data.to_dict() == gate_config.data.to_dict()
  assert config.teacher.to_dict() == gate_config.teacher.to_dict()
  assert config.teacher.steps == 9000 and config.data.quality == 'mixed'
  assert (config.curriculum.name, config.surgery.name) == ('max_kl',
                                                           'previous')
  assert config.student.steps == study2.STUDENT_STEPS == 6000
  assert config.student.optimizer.decay_steps == 6000
  assert config.student.batch_size == 60 and config.eval.episodes == 16
  # Amendment 2: rows 8-11 cut, rows 6, 7 and 12 at three seeds, rows 1-5
  # at ten; locomotion keeps all twelve.
  full, cut = study2.rows(), study2.rows('mt10')
  assert [r[1] for r in cut] == [r[1] for r in full[:7]] + [full[11][1]]
  assert [len(r[2]) for r in cut] == [10] * 5 + [3] * 3
  assert [len(r[2]) for r in full] == [10] * 5 + [5] * 7
  assert len(study2.get_sweep('mt10').members) == 59
  assert len(study2.get_sweep().members) == 85
