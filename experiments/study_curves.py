"""The study's curves: which teacher each member learned from, and its KLs.

A member's `curves` (its line of members.jsonl, experiments/publish.py)
hold per-window columns, one per teacher, in the order of that member's
`config.tasks`, not the alphabetical order of `sweep.json` and its
`results` (written with sorted keys). The first study's plots labelled
the columns with the sorted names and so swapped the two halfcheetah
tasks. `member_tasks` finds each member's own order and `aligned` puts
its columns in the report's order before any average.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from distill.report import plots


def member_tasks(files: Mapping[str, Any]) -> list[str]:
  """The task of each column of a member's `curves`.

  Args:
    files: the member as published (its line of members.jsonl): 'curves',
      'results' (its `results.json`).

  Returns:
    The tasks in the columns' order: the curves' own `tasks` when they
    record them (members published since they do); otherwise the order
    in which the member's own per-task step counts (`results.json`
    `curriculum.counts`, keyed by task) equal the columns' totals.

  Raises:
    ValueError: the order cannot be told from the member's own records
      (no `tasks`, and no unambiguous match of the counts).
  """
  curves = files['curves']
  if curves.get('tasks'):
    return list(curves['tasks'])
  counts = (files.get('results') or {}).get('curriculum', {}).get('counts')
  if not counts or not curves.get('choices'):
    raise ValueError('the curves have no tasks and the member has no'
                     ' curriculum counts to match its columns with')
  totals = np.asarray(curves['choices']).sum(0)
  order = []
  for total in totals:
    match = [t for t, c in counts.items() if c == total and t not in order]
    if len(match) != 1:
      raise ValueError(f'cannot tell the task of a curves column with'
                       f' {int(total)} steps from the counts {counts}')
    order.append(match[0])
  return order


def aligned(files: Mapping[str, Any], key: str, tasks: Sequence[str],
            order: Sequence[str] | None = None) -> np.ndarray:
  """A member's `curves[key]` [windows, tasks] in the order `tasks`.

  Args:
    files: the member's published files (see `member_tasks`).
    key: 'choices' or 'kl_mean'.
    tasks: the report's task order.
    order: the member's own column order (default: `member_tasks(files)`).

  Returns:
    The series with column i holding `tasks[i]`.
  """
  order = list(order if order is not None else member_tasks(files))
  series = np.asarray(files['curves'][key], dtype=np.float64)
  return series[:, [order.index(t) for t in tasks]]


def curriculum_order(members: Sequence[Mapping[str, Any]],
                     fallback: Sequence[str] = ()) -> list[str]:
  """The column order shared by a group of members that run one task list.

  A member whose choices cannot identify its columns (a mixture uses every
  teacher at once; round-robin gives every teacher the same count) takes
  the order of one that can: members that do not override `config.tasks`
  all run the same list in the same order.

  Args:
    members: the published files of members that share `config.tasks`.
    fallback: the order to use when none of them tells it.

  Returns:
    The order, or `fallback` when no member tells it.
  """
  for files in members:
    try:
      return member_tasks(files)
    except ValueError:
      continue
  return list(fallback)


def choice_shares(members: Sequence[Mapping[str, Any]], tasks: Sequence[str],
                  order: Sequence[str] = ()
                  ) -> tuple[np.ndarray, np.ndarray, list[float]] | None:
  """Share of steps per teacher, overall and over time, in `tasks` order.

  Args:
    members: the published files of one configuration's members.
    tasks: the report's task order.
    order: the members' column order when they cannot tell it themselves
      (see `curriculum_order`).

  Returns:
    `(share_T, share_WxT, step_end_W)`: the share of all steps over all
    members, the mean share per window, the windows' last steps; None
    when no member records its choices.
  """
  members = [m for m in members if m.get('curves', {}).get('choices')]
  if not members:
    return None
  order = curriculum_order(members, order)
  choices = [aligned(m, 'choices', tasks, order) for m in members]
  totals = np.sum([c.sum(0) for c in choices], axis=0)
  share_T = totals / max(totals.sum(), 1.0)
  share_WxT = np.mean([c / np.maximum(c.sum(1, keepdims=True), 1.0)
                       for c in choices], axis=0)
  return share_T, share_WxT, members[0]['curves']['step_end']


def mean_kl(members: Sequence[Mapping[str, Any]], tasks: Sequence[str],
            order: Sequence[str] = ()
            ) -> tuple[np.ndarray, list[float]] | None:
  """Mean over members of the KL per teacher [windows, tasks] and steps.

  Args:
    members: the published files of one configuration's members.
    tasks: the report's task order.
    order: as for `choice_shares`.

  Returns:
    `(kl_WxT, step_end_W)`, or None without curves or a known order.
  """
  order = curriculum_order(members, order)
  members = [m for m in members if m.get('curves', {}).get('kl_mean')]
  if not members or not order:
    return None
  kl = np.mean([aligned(m, 'kl_mean', tasks, order) for m in members],
               axis=0)
  return kl, members[0]['curves']['step_end']


def plot_choices(path: str, members: Sequence[Mapping[str, Any]],
                 tasks: Sequence[str], order: Sequence[str] = ()) -> None:
  """Share of steps learning from each teacher over time, labelled."""
  shares = choice_shares(members, tasks, order)
  if shares is None:
    return
  _, share_WxT, steps = shares
  many = len(tasks) > 4  # a legend inside would hide the bands
  fig = plots.figure(width=8.0 if many else 6.0, height=3.2)
  ax = fig.add_subplot(1, 1, 1)
  ax.stackplot(steps, share_WxT.T, labels=tasks)
  ax.set_xlabel('step')
  ax.set_ylabel('share of steps per teacher')
  ax.set_ylim(0, 1)
  if many:
    ax.legend(fontsize=7, loc='upper left', bbox_to_anchor=(1.01, 1.0))
  else:
    ax.legend(fontsize=7, loc='upper right')
  plots.save_png(fig, path)


def plot_kl(path: str, variants: Mapping[str, Sequence[Mapping[str, Any]]],
            tasks: Sequence[str], order: Sequence[str] = ()) -> None:
  """KL per teacher over steps, one panel per variant (mean over seeds)."""
  curves = {n: mean_kl(ms, tasks, order) for n, ms in variants.items()}
  curves = {n: c for n, c in curves.items() if c is not None}
  if not curves:
    return
  fig = plots.figure(width=3.2 * len(curves), height=3.0)
  for i, (name, (kl, steps)) in enumerate(curves.items()):
    ax = fig.add_subplot(1, len(curves), i + 1)
    for t, task in enumerate(tasks):
      ax.plot(steps, kl[:, t], label=task, lw=1.2)
    ax.set_yscale('log')
    ax.set_title(name.replace('curriculum=', '').replace(',surgery=', ' + '),
                 fontsize=8)
    ax.set_xlabel('step', fontsize=8)
    if not i:
      ax.set_ylabel('KL(teacher || student), probes', fontsize=8)
      ax.legend(fontsize=6)
    ax.grid(alpha=0.3)
  plots.save_png(fig, path)
