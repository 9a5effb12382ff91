"""Tests of distill/data/summary.py."""

import numpy as np
import pytest

from conftest import make_three_episodes
from distill.data import d4rl
from distill.data import scores
from distill.data import summary


def _data(n=9, act=0.5):
  return d4rl.validate(make_three_episodes(n, act=act), source='test')


def test_episode_statistics():
  info = summary.summarize(_data(), 'suite:hopper-medium')
  returns = np.array([0 + 1 + 2, 3 + 4 + 5 + 6, 7 + 8], np.float64)
  assert info['name'] == 'suite:hopper-medium'
  assert (info['episodes'], info['transitions']) == (3, 9)
  assert (info['obs_dim'], info['act_dim']) == (11, 3)
  assert info['return_mean'] == pytest.approx(returns.mean())
  assert info['return_std'] == pytest.approx(returns.std())
  assert (info['return_min'], info['return_max']) == (3.0, 18.0)
  assert (info['length_min'], info['length_max']) == (2, 4)
  assert (info['terminals'], info['timeouts']) == (1, 1)
  assert info['last_episode_unfinished'] is True
  assert info['action_min'] == info['action_max'] == 0.5
  assert info['normalized_return_mean'] == pytest.approx(
      scores.normalized_score(returns, 'hopper').mean())


def test_no_reference_returns_no_normalized_score():
  data = _data()
  data['timeouts'][-1] = True
  info = summary.summarize(data, '/data/pendulum.hdf5')
  assert 'normalized_return_mean' not in info
  assert info['last_episode_unfinished'] is False
