"""Tests of %BC (distill/data/filtering.py and its use by the student)."""

import math

import chex
import jax
import numpy as np
import pytest

from configs import mt_distill
from distill.data import filtering
from distill.data import segments
from distill.models import model as model_lib
from distill.run import pipeline
from distill.run import stages
from distill.train import distill_loop
from distill.train import student as student_lib

OBS_DIMS = (5, 3)
ACT_DIMS = (2, 1)
K = 4


def _naive_top(returns, lengths, fraction):
  """Chen et al.'s `pct_traj` loop, with ties broken by episode order."""
  budget = max(int(fraction * sum(lengths)), 1)
  ranked = sorted(range(len(returns)), key=lambda i: (-returns[i], i))
  kept, total = [ranked[0]], lengths[ranked[0]]
  for i in ranked[1:]:
    if total + lengths[i] > budget:
      break
    kept.append(i)
    total += lengths[i]
  return sorted(kept)


def _episodes(seed, num_episodes, obs_dim, act_dim, *, ties=False):
  """A dataset of episodes of random lengths (terminals and timeouts)."""
  r = np.random.default_rng(seed)
  lengths = r.integers(1, 12, num_episodes)
  n = int(lengths.sum())
  ends = np.cumsum(lengths) - 1
  terminals, timeouts = np.zeros(n, bool), np.zeros(n, bool)
  terminals[ends[::2]] = True
  timeouts[ends[1::2]] = True
  rewards = r.normal(size=n).astype(np.float32)
  if ties:  # Whole-number rewards: many episodes share a return.
    rewards = r.integers(0, 2, n).astype(np.float32)
  return {'observations': r.normal(size=(n, obs_dim)).astype(np.float32),
          'actions': np.tanh(r.normal(size=(n, act_dim))).astype(np.float32),
          'rewards': rewards, 'terminals': terminals, 'timeouts': timeouts}


@pytest.mark.parametrize('seed', range(6))
@pytest.mark.parametrize('fraction', [1e-9, 0.05, 0.1, 0.25, 0.5, 0.9, 1.0])
def test_kept_episodes_are_the_top_fraction_by_return(seed, fraction):
  data = _episodes(seed, 40, 3, 2, ties=seed % 2 == 1)
  bounds = [(s, e) for s, e in filtering.episode_returns(data)[0]]
  returns = [float(np.sum(data['rewards'][s:e], dtype=np.float64))
             for s, e in bounds]
  lengths = [e - s for s, e in bounds]
  want = _naive_top(returns, lengths, fraction)
  got = filtering.top_return_episodes(np.array(returns), np.array(lengths),
                                      fraction)
  np.testing.assert_array_equal(got, want)
  assert len(got) >= 1
  if fraction == 1.0:
    assert len(got) == len(bounds)
  # No kept episode has a lower return than a dropped one that would fit.
  dropped = sorted(set(range(len(bounds))) - set(want))
  assert not dropped or min(returns[i] for i in want) >= max(
      returns[i] for i in dropped)
  # The dataset cut to them: the kept episodes' rows, in dataset order.
  cut = filtering.keep_top_fraction(data, fraction)
  rows = np.concatenate([np.arange(*bounds[i]) for i in want])
  for key in ('observations', 'actions', 'rewards', 'terminals', 'timeouts'):
    np.testing.assert_array_equal(cut[key], data[key][rows])
  cut_bounds, cut_returns = filtering.episode_returns(cut)
  assert len(cut_bounds) == len(want)
  np.testing.assert_allclose(cut_returns, [returns[i] for i in want])


def test_ties_rounding_and_the_best_episode():
  returns = np.array([5.0, 7.0, 7.0, 1.0, 7.0])
  lengths = np.array([10, 10, 10, 10, 10])
  # Budget floor(0.5 * 50) = 25: two of the three 7s, the earlier ones.
  np.testing.assert_array_equal(
      filtering.top_return_episodes(returns, lengths, 0.5), [1, 2])
  # floor(0.39 * 50) = 19 < 20: one episode, the earliest best.
  np.testing.assert_array_equal(
      filtering.top_return_episodes(returns, lengths, 0.39), [1])
  # The best episode is kept even when longer than the budget.
  np.testing.assert_array_equal(
      filtering.top_return_episodes([1.0, 3.0], [1, 100], 0.01), [1])
  # The first episode that does not fit ends the selection.
  np.testing.assert_array_equal(
      filtering.top_return_episodes([3.0, 2.0, 1.0], [5, 10, 1], 0.5), [0])
  for bad in (0.0, -0.1, 1.5, math.nan):
    with pytest.raises(ValueError, match='fraction must be in'):
      filtering.top_return_episodes(returns, lengths, bad)


def _config(fraction=1.0, curriculum='scratch'):
  c = mt_distill.get_config('smoke')
  c.student.update_from_flattened_dict({
      'batch_size': 8, 'probe_size': 2, 'probe_pool': 8, 'model.width': 8,
      'model.num_layers': 1, 'optimizer.warmup_steps': 0, 'steps': 4,
      'steps_per_dispatch': 2, 'log_every': 2, 'ckpt_every': 4,
      'bc_top_fraction': fraction})
  c.curriculum.name = curriculum
  c.surgery.name = 'none'
  return c


@pytest.mark.parametrize('bad', [0.0, -0.5, 1.01, 2.0, math.nan, math.inf])
def test_config_refuses_fractions_outside_0_1(bad):
  config = _config(bad)
  with pytest.raises(ValueError, match=r'student\.bc_top_fraction=.*\(0, 1\]'):
    student_lib.check_config(config)
  with pytest.raises(ValueError, match=r'student\.bc_top_fraction'):
    stages.check_config(config)  # The run refuses it before any work.


def test_config_refuses_filtering_a_teacher_curriculum():
  student_lib.check_config(_config(0.3))
  student_lib.check_config(_config(1.0, 'max_kl'))
  with pytest.raises(ValueError, match=r'bc_top_fraction=0.3 .*max_kl'):
    student_lib.check_config(_config(0.3, 'max_kl'))


def test_fraction_reruns_the_distill_stage_not_the_teachers():
  plain, filtered = _config(1.0), _config(0.1)
  for stage in ('datasets', 'teachers', 'teacher_eval'):
    assert (stages.stage_hash(plain, stage, with_inputs=False)
            == stages.stage_hash(filtered, stage, with_inputs=False))
  for stage in ('distill', 'student_eval', 'report'):
    assert (stages.stage_hash(plain, stage, with_inputs=False)
            != stages.stage_hash(filtered, stage, with_inputs=False))
  # Plain cloning hashes as before the field existed (stamps stay valid).
  without = _config(1.0)
  del without.student['bc_top_fraction']
  assert (stages.stage_hash(plain, 'distill', with_inputs=False)
          == stages.stage_hash(without, 'distill', with_inputs=False))


@pytest.fixture(scope='module')
def setup():
  data = [_episodes(i, 30, o, a) for i, (o, a) in enumerate(zip(OBS_DIMS,
                                                               ACT_DIMS))]
  stats = [segments.state_stats(d) for d in data]
  config = _config(0.2)
  config.data.context_len = K
  source = pipeline.make_source(config.data, data, stats)
  clone = pipeline.make_clone_source(config, data, stats)
  teacher = model_lib.make_model(
      config.teacher.model, obs_dims=(max(OBS_DIMS),),
      act_dims=(max(ACT_DIMS),), context_len=K,
      max_timestep=config.data.max_timestep)
  teacher_params_T = jax.jit(jax.vmap(
      lambda k: model_lib.init_params(teacher, k)))(
          jax.random.split(jax.random.key(1), len(OBS_DIMS)))
  return config, data, stats, source, clone, teacher, teacher_params_T


def test_clone_source_holds_the_kept_episodes_normalized_as_the_full(setup):
  config, data, stats, source, clone, _, _ = setup
  assert pipeline.make_clone_source(_config(1.0), data, stats) is None
  for t, d in enumerate(data):
    cut = filtering.keep_top_fraction(d, 0.2)
    n = len(cut['rewards'])
    assert int(clone.sizes[t]) == n < int(source.sizes[t])
    off = int(clone.offsets[t])
    mean, std = stats[t]
    np.testing.assert_allclose(
        np.asarray(clone.states)[off:off + n, :OBS_DIMS[t]],
        (cut['observations'] - mean) / std, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(
        np.asarray(clone.actions)[off:off + n, :ACT_DIMS[t]], cut['actions'])
  del config


def test_training_step_under_jit_clones_only_the_kept_episodes(setup):
  config, _, _, source, clone, teacher, teacher_params_T = setup
  student = model_lib.make_model(config.student.model, obs_dims=OBS_DIMS,
                                 act_dims=ACT_DIMS, context_len=K,
                                 max_timestep=config.data.max_timestep)
  key = jax.random.key(3)
  selector = student_lib.make_selector(config.curriculum, 2, max(OBS_DIMS),
                                       key)
  optimizer = student_lib.make_optimizer(config, key)
  pool = student_lib.make_probe_pool(source, teacher, teacher_params_T, key,
                                     config.student.probe_pool)
  step = jax.jit(student_lib.make_distill_step(config, student, teacher,
                                               selector, optimizer))
  state = student_lib.init_state(student, selector, optimizer,
                                 jax.random.key(4))
  a, metrics = step(state, teacher_params_T, clone, pool)
  b, _ = step(state, teacher_params_T, source, pool)
  assert np.isfinite(metrics['train/loss'])
  # Another source, another update; the probes still see the full data.
  assert not all(np.allclose(x, y) for x, y in zip(
      jax.tree.leaves(a.params), jax.tree.leaves(b.params)))
  # Every batch segment the step can draw comes from a kept episode.
  batch = segments.sample_task_batch(clone, jax.random.key(5), 0, 256)
  kept = {tuple(np.round(r, 5)) for r in np.asarray(clone.states)[
      :int(clone.sizes[0])]}
  states = np.asarray(batch.states)[np.asarray(batch.mask) > 0]
  assert all(tuple(np.round(s, 5)) in kept for s in states)


@pytest.mark.slow
def test_population_trains_every_member_on_the_filtered_data(setup, tmp_path):
  config, _, stats, source, clone, teacher, teacher_params_T = setup
  params_PxT = jax.tree.map(lambda x: np.stack([x, x]), teacher_params_T)
  with config.unlocked():
    config.seeds = (0, 1)
  pop = distill_loop.train_student(
      config, source=source, teacher=teacher, teacher_params_T=params_PxT,
      stats=stats, directory=[str(tmp_path / 'p0'), str(tmp_path / 'p1')],
      seeds=(0, 1), clone_source=clone)
  single = pipeline.member_config(config, 0)
  state, *_ = distill_loop.train_student(
      single, source=source, teacher=teacher,
      teacher_params_T=teacher_params_T, stats=stats,
      directory=str(tmp_path / 's0'), clone_source=clone)
  assert int(pop[0][0].step) == int(pop[1][0].step) == 4
  chex.assert_trees_all_close(pop[0][0].params, state.params)
  # Without the clone source the filtered config is refused, not ignored.
  with pytest.raises(ValueError, match='clone_source'):
    distill_loop.train_student(
        single, source=source, teacher=teacher,
        teacher_params_T=teacher_params_T, stats=stats,
        directory=str(tmp_path / 's1'))
