"""The second study's verdicts, recomputed from its members' records alone.

Each testbed's `verdicts.json` (`docs/study2/`, locomotion;
`docs/study2_mt10/`, MT10) is written by `experiments.verdicts` through
`distill.report.aggregate` (rliable). This test reads only the testbed's
`members.jsonl` (one line per member: its configuration, seed, record and
`results.json`) with `json` and NumPy, applies the analysis as
`docs/preregistration.md` words it (MT10: its amendment 2, the success
rate in points, rows 6, 7 and 12 over 3 seeds, the 1 x 8 rows not run),
and checks every published number:

- the point differences X - Y of the means over tasks, exactly;
- which cloning row H3 compares with (the better of scratch and %BC at each
  size, by mean over tasks);
- the per-task probability of improvement, exactly;
- the 95% and Bonferroni (1 - 0.05/9) intervals within their Monte-Carlo
  error, with an own stratified bootstrap (another generator, 20,000
  replications);
- each comparison's and each hypothesis's verdict, from the own intervals;
- the provenance: every member ran at the one recorded commit, clean.

The configuration names are written out here from the pre-registration's
table of rows, not taken from `configs/study2.py`.
"""

import dataclasses
import json
import os

import numpy as np
import pytest

DOCS = os.path.join(os.path.dirname(__file__), '..', 'docs')
# The pre-registration's rows (its table "Rows and seeds"), by label.
_SMALL = ',student.model.num_layers=1,student.model.width=8'
_BC = ',student.bc_top_fraction=0.25'
ROWS = {
    'max_kl+previous': 'curriculum=max_kl,surgery=previous',
    'round_robin': 'curriculum=round_robin,surgery=none',
    'uniform': 'curriculum=uniform,surgery=none',
    'mixture': 'curriculum=mixture,surgery=none',
    'max_kl': 'curriculum=max_kl,surgery=none',
    'scratch': 'curriculum=scratch,surgery=none',
    '%BC': 'curriculum=scratch,surgery=none' + _BC,
    'max_kl+previous 1x8': 'curriculum=max_kl,surgery=previous' + _SMALL,
    'mixture 1x8': 'curriculum=mixture,surgery=none' + _SMALL,
    'scratch 1x8': 'curriculum=scratch,surgery=none' + _SMALL,
    '%BC 1x8': 'curriculum=scratch,surgery=none' + _SMALL + _BC,
    'max_kl+previous decay 0.9':
        'curriculum=max_kl,surgery=previous,surgery.decay=0.9',
}
_H12 = ('max_kl+previous', 'round_robin', 'uniform', 'mixture', 'max_kl')
# (hypothesis, X, Y); a Y of 'cloning' is the better of the two rows.
COMPARISONS = (
    ('H1', 'max_kl+previous', 'round_robin'),
    ('H1', 'max_kl+previous', 'uniform'),
    ('H1', 'max_kl+previous', 'mixture'),
    ('H2', 'max_kl+previous', 'max_kl'),
    ('H3 2x32', 'max_kl+previous', 'cloning'),
    ('H3 2x32', 'mixture', 'cloning'),
    ('H3 1x8', 'max_kl+previous 1x8', 'cloning 1x8'),
    ('H3 1x8', 'mixture 1x8', 'cloning 1x8'),
    ('H4', 'max_kl+previous decay 0.9', 'max_kl+previous'),
)
CLONING = {'cloning': ('scratch', '%BC'),
           'cloning 1x8': ('scratch 1x8', '%BC 1x8')}
REPS = 20_000


@dataclasses.dataclass(frozen=True)
class Testbed:
  """What the pre-registration fixed for one testbed, and its outcome."""
  study: str
  commit: str
  config: str  # the --config of every member's command
  metric: str  # the results.json key, per task
  scale: float  # to the published units (success rate: points)
  tasks: tuple[str, ...]
  seeds: dict[str, int]  # label -> seeds 0..n-1; absent: not run
  members: int  # the study's size, as docs/results.md states it
  # Published bounds come from 2000 replications; their Monte-Carlo error,
  # measured on these data by repeating a 2000-replication bootstrap 200
  # times, is at most `error` (std) at 95% and at the Bonferroni level,
  # whose tails hold 5-6 replications. The tolerances are 4 of those stds.
  error: tuple[float, float]
  hypotheses: dict[str, str]  # the reading docs/results.md and README state

  def tolerance(self, key: str) -> float:
    return 4 * self.error[key == 'difference_corrected']


TESTBEDS = {
    'locomotion': Testbed(
        study=os.path.join(DOCS, 'study2'),
        commit='9ce615534ada98c64f8196faf6c054e3767be45f',
        config='--config=configs/study2.py',
        metric='student_score', scale=1.0,
        tasks=('halfcheetah-backward', 'halfcheetah-forward', 'hopper',
               'walker2d'),
        seeds={label: 10 if label in _H12 else 5 for label in ROWS},
        members=85,
        error=(0.19, 0.41),
        hypotheses={'H1': 'inconclusive', 'H2': 'inconclusive',
                    'H3 2x32': 'contradicted', 'H3 1x8': 'contradicted',
                    'H4': 'inconclusive'}),
    'mt10': Testbed(
        study=os.path.join(DOCS, 'study2_mt10'),
        commit='e93b2886861ae7d76929bdac648016368bdac7a8',
        config='--config=configs/study2.py:mt10',
        metric='student_success_rate', scale=100.0,
        tasks=('button-press-topdown-v3', 'door-open-v3', 'drawer-close-v3',
               'drawer-open-v3', 'peg-insert-side-v3', 'pick-place-v3',
               'push-v3', 'reach-v3', 'window-close-v3', 'window-open-v3'),
        seeds={label: 10 if label in _H12 else 3 for label in ROWS
               if '1x8' not in label},
        members=59,
        error=(0.28, 0.56),
        hypotheses={'H1': 'inconclusive', 'H2': 'inconclusive',
                    'H3 2x32': 'contradicted', 'H3 1x8': 'not run',
                    'H4': 'inconclusive'}),
}
testbeds = pytest.mark.parametrize('bed', TESTBEDS.values(), ids=TESTBEDS)


def _members(bed: Testbed) -> list[dict]:
  with open(os.path.join(bed.study, 'members.jsonl'), encoding='utf-8') as f:
    return [json.loads(line) for line in f if line.strip()]


def _published(bed: Testbed) -> dict:
  with open(os.path.join(bed.study, 'verdicts.json'), encoding='utf-8') as f:
    return json.load(f)


def _scores(bed: Testbed, members: list[dict], tasks: list[str]
            ) -> dict[str, np.ndarray]:
  """Label -> [seeds, tasks] of the last checkpoint's primary measure."""
  by_config = {}
  for m in members:
    seed = m['overrides']['seed']
    row = [bed.scale * m['results']['tasks'][t][bed.metric] for t in tasks]
    by_config.setdefault(m['configuration'], {})[seed] = row
  out = {}
  for label, config in ROWS.items():
    if label not in bed.seeds:
      assert config not in by_config, label
      continue
    runs = by_config[config]
    assert sorted(runs) == list(range(bed.seeds[label])), (label,
                                                            sorted(runs))
    out[label] = np.array([runs[s] for s in sorted(runs)], np.float64)
  return out


def _bootstrap_mean(x_SxT: np.ndarray, rng: np.random.Generator
                    ) -> np.ndarray:
  """REPS resampled means over tasks, runs resampled within each task."""
  s, t = x_SxT.shape
  idx_RxSxT = rng.integers(0, s, size=(REPS, s, t))
  resampled = np.take_along_axis(x_SxT[None], idx_RxSxT, axis=1)
  return resampled.mean(axis=1).mean(axis=1)


def _interval(diff_R: np.ndarray, level: float) -> tuple[float, float]:
  tail = 100 * (1 - level) / 2
  low, high = np.percentile(diff_R, [tail, 100 - tail])
  return float(low), float(high)


def _verdict(low: float, high: float) -> str:
  if low > 0:
    return 'supported'
  if high < 0:
    return 'contradicted'
  return 'inconclusive'


def _improvement(x_S: np.ndarray, y_S: np.ndarray) -> float:
  """P(X > Y) over all pairs of runs, ties counted half."""
  gt = (x_S[:, None] > y_S[None, :]).mean()
  eq = (x_S[:, None] == y_S[None, :]).mean()
  return float(gt + 0.5 * eq)


@testbeds
def test_members_ran_at_the_recorded_commit_clean(bed):
  members = _members(bed)
  assert len(members) == sum(bed.seeds.values()) == bed.members
  for m in members:
    code = m['record']['code']
    assert code['commit'] == bed.commit, m['name']
    assert not code['dirty'], m['name']
    assert m['record']['status'] == 'done', m['name']
    command = m['record']['command']
    assert bed.config in command, m['name']
    assert f'--config.seed={m["overrides"]["seed"]}' in command, m['name']


@testbeds
def test_verdicts_recompute_from_the_members(bed):
  published = _published(bed)
  tasks = published['tasks']
  assert tasks == list(bed.tasks)
  assert published['metric'] == {'student_score': 'score',
                                 'student_success_rate': 'success_rate'}[
                                     bed.metric]
  not_run = [label for label in ROWS if label not in bed.seeds]
  assert published['missing'] == not_run
  scores = _scores(bed, _members(bed), tasks)
  means = {label: float(x.mean(axis=0).mean()) for label, x in scores.items()}
  chosen = {name: max(pair, key=means.__getitem__)
            for name, pair in CLONING.items()
            if all(label in means for label in pair)}
  level = 1 - 0.05 / len(COMPARISONS)
  assert np.isclose(published['confidence_corrected'], level)

  rng = np.random.default_rng(20261206)
  boot = {label: _bootstrap_mean(x, rng) for label, x in scores.items()}
  by_hypothesis = {}
  rows = published['comparisons']
  assert [(r['hypothesis'], r['x'], r['y']) for r in rows] == list(
      COMPARISONS)
  for (hypothesis, x, y), row in zip(COMPARISONS, rows):
    y_row = chosen.get(y, y)
    if x not in scores or y_row not in scores:  # rows the budget cut
      assert row['verdict'] == 'not run', (hypothesis, x)
      by_hypothesis.setdefault(hypothesis, []).append('not run')
      continue
    if y in CLONING:
      assert row['y_chosen'] == ROWS[y_row], (hypothesis, x)
    else:
      assert row['y_chosen'] is None
    assert row['runs'] == [bed.seeds[x], bed.seeds[y_row]]
    value = means[x] - means[y_row]
    assert np.isclose(row['difference']['value'], value, rtol=0, atol=1e-9)
    diff_R = boot[x] - boot[y_row]
    for key, lvl, verdict_key in (('difference', 0.95, 'verdict'),
                                  ('difference_corrected', level,
                                   'verdict_corrected')):
      low, high = _interval(diff_R, lvl)
      got = row[key]
      tolerance = bed.tolerance(key)
      assert abs(got['ci_low'] - low) < tolerance, (hypothesis, x, key,
                                                    got, low)
      assert abs(got['ci_high'] - high) < tolerance, (hypothesis, x, key,
                                                      got, high)
      assert row[verdict_key] == _verdict(low, high), (hypothesis, x, key)
    for t, task in enumerate(tasks):
      p = _improvement(scores[x][:, t], scores[y_row][:, t])
      assert np.isclose(row['improvement'][task]['value'], p, atol=1e-9), (
          hypothesis, x, task)
    by_hypothesis.setdefault(hypothesis, []).append(row['verdict'])

  for hypothesis, comparisons in by_hypothesis.items():
    if 'not run' in comparisons:
      expected = 'not run'
    elif all(v == 'supported' for v in comparisons):
      expected = 'supported'
    elif 'contradicted' in comparisons:
      expected = 'contradicted'
    else:
      expected = 'inconclusive'
    assert published['hypotheses'][hypothesis] == expected, hypothesis
  # The pre-registered reading, as docs/results.md and README state it.
  assert published['hypotheses'] == bed.hypotheses
