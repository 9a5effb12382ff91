"""Tests for distill.data.scores."""

import jax.numpy as jnp
import numpy as np
import pytest

from distill.data import scores


def test_d4rl_reference_values():
  assert scores.REF_RETURNS['hopper'] == (-20.272305, 3234.3)
  assert scores.REF_RETURNS['halfcheetah'] == (-280.178953, 12135.0)
  assert scores.REF_RETURNS['walker2d'] == (1.629008, 4592.3)
  assert scores.REF_RETURNS['ant'] == (-325.6, 3879.7)


@pytest.mark.parametrize('name, key', [
    ('hopper', 'hopper'),
    ('halfcheetah-medium-v2', 'halfcheetah'),
    ('d4rl:walker2d-medium-replay-v2', 'walker2d'),
    ('/home/anton/.d4rl/datasets/hopper_medium-v2.hdf5', 'hopper'),
    ('minari:mujoco/hopper/medium-v0', 'hopper'),
    ('mujoco/halfcheetah/expert-v0', 'halfcheetah'),
    ('suite:halfcheetah-forward-medium', 'halfcheetah'),
    ('ant-medium-v2', 'ant'),
    ('Hopper-Medium-v2', 'hopper'),
])
def test_reference_returns_lookup(name, key):
  assert scores.reference_returns(name) == scores.REF_RETURNS[key]


@pytest.mark.parametrize('name', [
    'antmaze-umaze-v2', 'pen-human-v1', '/home/anton/data/x.hdf5', '',
    'suite:', 'minari:D4RL/door/human-v2'])
def test_reference_returns_unknown(name):
  assert scores.reference_returns(name) is None


def test_longest_key_wins(monkeypatch):
  monkeypatch.setitem(scores.REF_RETURNS, 'halfcheetah-backward', (-5.0, 5.0))
  assert scores.reference_returns(
      'suite:halfcheetah-backward-medium') == (-5.0, 5.0)
  assert scores.reference_returns('halfcheetah-backward') == (-5.0, 5.0)
  assert scores.reference_returns(
      'suite:halfcheetah-forward-medium') == scores.REF_RETURNS['halfcheetah']
  assert scores.reference_returns(
      'halfcheetah-medium-v2') == scores.REF_RETURNS['halfcheetah']


def test_normalized_score():
  lo, hi = scores.REF_RETURNS['hopper']
  assert scores.normalized_score(lo, 'hopper') == pytest.approx(0.0)
  assert scores.normalized_score(hi, 'hopper-medium-v2') == pytest.approx(100)
  returns = np.array([[lo, hi], [(lo + hi) / 2, hi + (hi - lo)]])
  out = scores.normalized_score(returns, (lo, hi))
  assert out.shape == (2, 2)
  np.testing.assert_allclose(out, [[0, 100], [50, 200]])
  np.testing.assert_allclose(scores.normalized_score([lo, hi], 'hopper'),
                             [0, 100])
  out = scores.normalized_score(jnp.array([1000.0]), (0.0, 2000.0))
  np.testing.assert_allclose(out, [50.0])
  with pytest.raises(ValueError, match='antmaze'):
    scores.normalized_score(1.0, 'antmaze-umaze-v2')
