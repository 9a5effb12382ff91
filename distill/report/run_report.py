"""Run outputs: `results.json`, `report.md` and PNG plots.

Every file is written to a temporary name in the target directory and renamed,
so a reader never sees a half-written report and a failed write leaves the
previous one in place.

Shapes: N logged steps, T tasks.
"""

from collections.abc import Mapping, Sequence
import os
from typing import Any

import numpy as np

from distill.data import scores as score_refs
from distill.io.fileio import write_atomic
from distill.io.fileio import write_json
from distill.report import aggregate
from distill.report import plots

_fmt = aggregate.format_number  # "-" for None or a non-finite value


# (aggregate name, per-task key); the success rates where tasks report them.
_AGGREGATED = (("teacher", "teacher_score"), ("student", "student_score"),
               ("teacher_success", "teacher_success_rate"),
               ("student_success", "student_success_rate"))


def assemble_results(
    *,
    tasks: Sequence[str],
    datasets: Mapping[str, Any],
    teachers: Mapping[str, Any],
    students: Mapping[str, Any],
    which: str,
    teacher_params: int,
    student_params: int,
    latency_ms: Mapping[str, float],
    history: Mapping[str, np.ndarray],
    curriculum: str,
    surgery: str,
    wall_s: Mapping[str, float],
    seed: int,
    student_steps: int,
    teacher_steps: int,
    reps: int,
) -> dict[str, Any]:
  """The contents of `results.json` (docs/design.md, section 5).

  Args:
    tasks: task names.
    datasets: `datasets.json` (per task, its summary).
    teachers: `teachers/eval.json` (per task, an evaluation result).
    students: `student/eval.json` (per checkpoint label, per task).
    which: the student checkpoint in the headline columns, 'last' or 'best'.
    teacher_params: parameters of one teacher.
    student_params: parameters of the student.
    latency_ms: batch-1 action latency, 'teacher_batch1', 'student_batch1'.
    history: per-step distillation metrics (`distill_loop.load_history`).
    curriculum: the curriculum's name.
    surgery: the surgery's name.
    wall_s: wall time per stage.
    seed: the run's seed.
    student_steps: distillation steps.
    teacher_steps: teacher training steps.
    reps: bootstrap replications of the aggregates.

  Returns:
    The results dictionary.
  """
  per_task = {}
  for t in tasks:
    per_task[t] = {
        "dataset_score": datasets[t].get("normalized_return_mean"),
        "teacher_score": teachers[t]["normalized_mean"],
        "teacher_score_std": teachers[t]["normalized_std"],
        "student_score": students[which][t]["normalized_mean"],
        "student_score_std": students[which][t]["normalized_std"],
        "student_last_score": students["last"][t]["normalized_mean"],
        "student_best_score": students["best"][t]["normalized_mean"],
        "teacher_return": teachers[t]["return_mean"],
        "student_return": students[which][t]["return_mean"],
    }
    # Tasks that report success (Meta-World): the success rates beside.
    for key, r in (("dataset_success_rate", datasets[t]),
                   ("teacher_success_rate", teachers[t]),
                   ("student_success_rate", students[which][t]),
                   ("student_last_success_rate", students["last"][t]),
                   ("student_best_success_rate", students["best"][t])):
      if r.get("success_rate") is not None:
        per_task[t][key] = r["success_rate"]
  counts_T = history.get("curriculum/counts")
  counts_T = (np.zeros(len(tasks), np.int64) if counts_T is None
              or not len(counts_T) else counts_T[-1])
  projected = history.get("surgery/projected", np.zeros(0))
  return {
      "tasks": per_task,
      "teacher_params": {t: int(teacher_params) for t in tasks},
      "student_params": int(student_params),
      "latency_ms": dict(latency_ms),
      "curriculum": {"name": curriculum,
                     "counts": {t: int(c) for t, c in zip(tasks, counts_T)}},
      "surgery": {"name": surgery,
                  "projected_fraction": float(np.mean(projected))
                                        if len(projected) else 0.0},
      "wall_s": dict(wall_s),
      "seed": int(seed),
      "student_checkpoint": which,
      "student_steps": int(student_steps),
      "teacher_steps": int(teacher_steps),
      "aggregate": {
          who: aggregate.interval_estimates(
              np.array([[per_task[t][key] for t in tasks]]), reps=reps)
          for who, key in _AGGREGATED
          if all(key in per_task[t] for t in tasks)},
  }


def plot_divergences(path: str, steps_N: np.ndarray, kl_NxT: np.ndarray,
                     tasks: Sequence[str]) -> None:
  """Per-teacher KL(teacher || student) over distillation steps."""
  fig = plots.figure()
  ax = fig.add_subplot(1, 1, 1)
  for t, task in enumerate(tasks):
    ax.plot(steps_N, kl_NxT[:, t], label=task, lw=1.2)
  ax.set_yscale("log")
  plots.label_axes(ax, xlabel="distillation step",
                   ylabel="KL(teacher || student), probe batches")
  plots.save_png(fig, path)


def plot_curriculum(path: str, steps_N: np.ndarray, choice_N: np.ndarray,
                    tasks: Sequence[str], window: int = 50) -> None:
  """The curriculum's choices over time: share of each teacher per window."""
  fig = plots.figure()
  ax = fig.add_subplot(1, 1, 1)
  choice_N = np.asarray(choice_N)
  if (choice_N < 0).all():  # A mixture uses every teacher in every batch.
    ax.text(0.5, 0.5, "mixture: every teacher in every batch",
            ha="center", va="center", transform=ax.transAxes)
  else:
    n = len(choice_N) // window * window
    if n == 0:
      window, n = max(len(choice_N), 1), len(choice_N)
    blocks = choice_N[:n].reshape(-1, window)
    x = np.asarray(steps_N)[:n].reshape(-1, window)[:, -1]
    shares = np.stack([(blocks == t).mean(axis=1) for t in range(len(tasks))])
    ax.stackplot(x, shares, labels=tasks, alpha=0.85)
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"share of steps (window {window})")
    ax.legend(fontsize=8, loc="upper right")
  ax.set_xlabel("distillation step")
  plots.save_png(fig, path)


def _cell(a: Mapping[str, Any]) -> str:
  return _fmt(a["value"]) + (
      f" [{_fmt(a['ci_low'])}, {_fmt(a['ci_high'])}]" if "ci_low" in a
      else "")


def _aggregate_table(aggregates: Mapping[str, Any]) -> list[str]:
  """Markdown rows: per policy, runs, mean (primary) and IQM with CIs.

  The mean over tasks comes first: with few tasks the IQM can keep values
  of some tasks only, and a line under the table names them
  (`aggregate.iqm_kept`, where the aggregate records it).
  """
  lines = ["| policy | runs | mean | IQM |", "|---|---:|---|---|"]
  notes = []
  for who, agg in aggregates.items():
    lines.append(f"| {who} | {agg.get('runs', 1)} | {_cell(agg['mean'])} "
                 f"| {_cell(agg['iqm'])} |")
    kept = agg.get("iqm_kept")
    if kept and aggregate.iqm_uneven(list(kept.values())):
      notes.append(f"The {who} IQM keeps values of: "
                   + aggregate.format_iqm_kept(list(kept), list(kept.values()))
                   + ".")
  return lines + [""] + ([" ".join(notes + [aggregate.IQM_RULE]), ""]
                         if notes else [])


def _success_table(tasks: Mapping[str, Any]) -> list[str]:
  """Markdown rows of the success rates, where the tasks report success."""
  keys = ("dataset_success_rate", "teacher_success_rate",
          "student_success_rate")
  if not any(k in r for r in tasks.values() for k in keys):
    return []
  lines = ["## Success rate per task", "",
           "Fraction of episodes in which some step reported success"
           " (Meta-World's success rate).", "",
           "| task | dataset | teacher | student |", "|---|---:|---:|---:|"]
  for task, r in tasks.items():
    lines.append(f"| {task} | " + " | ".join(
        _fmt(r.get(k), 2) for k in keys) + " |")
  means = [[r[k] for r in tasks.values() if r.get(k) is not None]
           for k in keys]
  lines.append("| **mean** | " + " | ".join(
      _fmt(float(np.mean(m)) if m else None, 2) for m in means) + " |")
  return lines + [""]


def render_markdown(results: Mapping[str, Any]) -> str:
  """The contents of `results.json` as Markdown tables."""
  tasks = results["tasks"]
  lines = ["# distill report", ""]
  lines += [f"Seed {results.get('seed')}; curriculum "
            f"`{results['curriculum']['name']}`, surgery "
            f"`{results['surgery']['name']}`. Scores are D4RL-normalized means "
            "over evaluation episodes (std in parentheses); the student row is "
            f"the **{results.get('student_checkpoint', 'last')}** checkpoint.",
            ""]
  lines += ["## Scores per task", "",
            "| task | dataset | teacher | student | student / teacher |"
            " best behaviour policy |",
            "|---|---:|---:|---:|---:|---:|"]
  for task, r in tasks.items():
    ratio = (r["student_score"] / r["teacher_score"]
             if r.get("teacher_score") not in (None, 0) else None)
    lines.append(
        f"| {task} | {_fmt(r.get('dataset_score'))} "
        f"| {_fmt(r.get('teacher_score'))} ({_fmt(r.get('teacher_score_std'))})"
        f" | {_fmt(r.get('student_score'))}"
        f" ({_fmt(r.get('student_score_std'))})"
        f" | {_fmt(ratio, 2)} | {_fmt(score_refs.behaviour_score(task))} |")
  def mean(k):
    values = [r[k] for r in tasks.values() if r.get(k) is not None]
    return float(np.mean(values)) if values else None
  ratio = (mean("student_score") / mean("teacher_score")
           if mean("teacher_score") else None)
  lines.append(f"| **mean** | {_fmt(mean('dataset_score'))} "
               f"| {_fmt(mean('teacher_score'))} "
               f"| {_fmt(mean('student_score'))}"
               f" | {_fmt(ratio, 2)} | |")
  lines += ["", "*dataset*: normalized mean return of the episodes learned"
            " from; *best behaviour policy*: deterministic score of the best"
            " policy that generated them (distill/envs/SNAPSHOTS.md; - where"
            " none was measured).", ""]
  lines += _success_table(tasks)
  if "aggregate" in results:
    runs = min(a.get("runs", 1) for a in results["aggregate"].values())
    title = ("95% stratified bootstrap CI, rliable" if runs > 1 else
             "n=1 run: no interval; run several seeds for one")
    lines += [f"## Aggregates over tasks ({title})", ""]
    lines += _aggregate_table(results["aggregate"])
  lines += ["## Size and latency", "",
            "| model | parameters | batch-1 latency (ms) |", "|---|---:|---:|"]
  lat = results.get("latency_ms", {})
  for task, n in results["teacher_params"].items():
    lines.append(f"| teacher {task} | {n:,} "
                 f"| {_fmt(lat.get('teacher_batch1'), 2)} |")
  lines.append(f"| student (all tasks) | {results['student_params']:,} "
               f"| {_fmt(lat.get('student_batch1'), 2)} |")
  teacher_mean = np.mean(list(results["teacher_params"].values()))
  ratio = teacher_mean / results["student_params"]
  lines += ["", f"One teacher has {ratio:.1f}x the student's parameters.", ""]
  counts = results["curriculum"].get("counts", {})
  lines += ["## Curriculum and surgery", "",
            "| task | steps learned from it |", "|---|---:|"]
  lines += [f"| {t} | {c} |" for t, c in counts.items()]
  frac = results["surgery"].get("projected_fraction")
  lines += ["", "Fraction of updates projected by the surgery: "
            f"{_fmt(frac, 3)}", ""]
  if results.get("wall_s"):
    lines += ["## Wall time (s)", "", "| stage | seconds |", "|---|---:|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in results["wall_s"].items()]
    lines.append("")
  lines += ["## Plots", "", "![KL per teacher](kl.png)", "",
            "![Curriculum choices](curriculum.png)", "",
            "![Scores per task](scores.png)", ""]
  return "\n".join(lines)


def write_report(workdir: str, results: Mapping[str, Any], *,
                 steps_N: np.ndarray, kl_NxT: np.ndarray,
                 choice_N: np.ndarray) -> None:
  """Writes `results.json`, `report.md` and the PNG plots into `workdir`.

  Args:
    workdir: output directory.
    results: the results dictionary (see docs/design.md, section 5).
    steps_N: distillation steps at which `kl_NxT` and `choice_N` were logged.
    kl_NxT: per-teacher KL on probe batches.
    choice_N: the teacher chosen at each step (-1 for a mixture).
  """
  # A NaN score is never written as if it were a result (refused first).
  write_json(os.path.join(workdir, "results.json"), results, allow_nan=False)
  tasks = list(results["tasks"])
  plot_divergences(os.path.join(workdir, "kl.png"), steps_N, kl_NxT, tasks)
  plot_curriculum(os.path.join(workdir, "curriculum.png"), steps_N, choice_N,
                  tasks)
  plots.plot_task_scores(os.path.join(workdir, "scores.png"), tasks, {
      "dataset": [results["tasks"][t].get("dataset_score") for t in tasks],
      "teacher": [results["tasks"][t].get("teacher_score") for t in tasks],
      "student": [results["tasks"][t].get("student_score") for t in tasks],
  }, ylabel="D4RL-normalized score")
  write_atomic(os.path.join(workdir, "report.md"), render_markdown(results))


def population_results(members: Sequence[Mapping[str, Any]], *,
                       reps: int) -> dict[str, Any]:
  """The `results.json` of a population: every member's, and aggregates.

  Args:
    members: one `assemble_results` dictionary per member (seed), each as a
      single-seed run's `results.json` (also written in `seed_<s>/`).
    reps: bootstrap replications of the aggregate CIs.

  Returns:
    `{'seeds', 'members', 'tasks': {task: {'<who>_score' (mean over seeds),
    '<who>_scores' (per seed), 'student_score_estimate' (the mean with its
    95% interval)}}, 'aggregate': {who: interval_estimates over seeds x
    tasks; the student's with 'iqm_kept' (`aggregate.iqm_kept`)}, ...}`
    plus the fields the members share (curriculum name, surgery name,
    steps, parameters, latency, wall time).
  """
  tasks = list(members[0]["tasks"])
  per_task = {}
  for t in tasks:
    per_task[t] = {}
    for who in ("dataset", "teacher", "student"):
      values = [m["tasks"][t].get(f"{who}_score") for m in members]
      per_task[t][f"{who}_scores"] = values
      per_task[t][f"{who}_score"] = (
          None if any(v is None for v in values) else float(np.mean(values)))
      rates = [m["tasks"][t].get(f"{who}_success_rate") for m in members]
      if all(v is not None for v in rates):
        per_task[t][f"{who}_success_rates"] = rates
        per_task[t][f"{who}_success_rate"] = float(np.mean(rates))
  shared = {k: members[0][k] for k in (
      "teacher_params", "student_params", "latency_ms", "student_checkpoint",
      "student_steps", "teacher_steps", "wall_s")}
  student_SxT = np.array([[m["tasks"][t]["student_score"] for t in tasks]
                          for m in members])
  # Each task's mean over seeds with its interval: with few tasks the
  # aggregate over tasks hides which task moved.
  for t, est in zip(tasks, aggregate.per_task_means(student_SxT, reps=reps)):
    per_task[t]["student_score_estimate"] = est
  aggregates = {
      who: aggregate.interval_estimates(
          np.array([[m["tasks"][t][key] for t in tasks]
                    for m in members]), reps=reps)
      for who, key in _AGGREGATED
      if all(key in m["tasks"][t] for m in members for t in tasks)}
  aggregates["student"]["iqm_kept"] = dict(
      zip(tasks, aggregate.iqm_kept(student_SxT)))
  return {
      "seeds": [int(m["seed"]) for m in members],
      "members": list(members),
      "tasks": per_task,
      "curriculum": {"name": members[0]["curriculum"]["name"]},
      "surgery": {"name": members[0]["surgery"]["name"]},
      **shared,
      "aggregate": aggregates,
  }


def _population_task_table(results: Mapping[str, Any]) -> list[str]:
  """Per task: the student's mean over seeds with its interval, beside
  the teacher, the dataset and the best behaviour policy."""
  lines = ["## Per task, mean over seeds", "",
           "| task | student (95% CI) | teacher | dataset |"
           " best behaviour policy |", "|---|---|---:|---:|---:|"]
  for task, r in results["tasks"].items():
    est = r.get("student_score_estimate") or {"value": r["student_score"]}
    lines.append(f"| {task} | {_cell(est)} | {_fmt(r.get('teacher_score'))}"
                 f" | {_fmt(r.get('dataset_score'))}"
                 f" | {_fmt(score_refs.behaviour_score(task))} |")
  return lines + [""]


def render_population_markdown(results: Mapping[str, Any]) -> str:
  """A population's `results.json` as Markdown: per seed, then aggregates."""
  tasks, seeds = list(results["tasks"]), results["seeds"]
  lines = ["# distill report: population", "",
           f"Seeds {', '.join(str(s) for s in seeds)} (one member each, own "
           f"teachers and student, trained in one program); curriculum "
           f"`{results['curriculum']['name']}`, surgery "
           f"`{results['surgery']['name']}`; the student column is the "
           f"**{results.get('student_checkpoint', 'last')}** checkpoint. "
           "Each member's own report: `seed_<s>/report.md`.", ""]
  lines += ["## Student scores per seed", "",
            "| seed | " + " | ".join(tasks) + " | mean | teacher mean |",
            "|---|" + "---:|" * (len(tasks) + 2)]
  for seed, m in zip(seeds, results["members"]):
    student = [m["tasks"][t]["student_score"] for t in tasks]
    teacher = [m["tasks"][t]["teacher_score"] for t in tasks]
    lines.append(f"| [{seed}](seed_{seed}/report.md) | "
                 + " | ".join(_fmt(v) for v in student)
                 + f" | {_fmt(float(np.mean(student)))}"
                 f" | {_fmt(float(np.mean(teacher)))} |")
  lines.append("| **mean** | " + " | ".join(
      _fmt(results["tasks"][t]["student_score"]) for t in tasks) + " | "
               + _fmt(float(np.mean([results["tasks"][t]["student_score"]
                                     for t in tasks])))
               + " | " + _fmt(float(np.mean(
                   [results["tasks"][t]["teacher_score"] for t in tasks])))
               + " |")
  lines.append("")
  lines += _population_task_table(results)
  lines += _success_table(results["tasks"])
  runs = min(a.get("runs", 1) for a in results["aggregate"].values())
  title = ("95% stratified bootstrap CI over seeds, rliable" if runs > 1
           else "n=1 run: no interval")
  lines += [f"## Aggregates over seeds and tasks ({title})", ""]
  lines += _aggregate_table(results["aggregate"])
  if results.get("wall_s"):
    lines += ["## Wall time of the population (s)", "",
              "| stage | seconds |", "|---|---:|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in results["wall_s"].items()]
    lines.append("")
  return "\n".join(lines)


def write_population_report(workdir: str,
                            members: Sequence[Mapping[str, Any]], *,
                            reps: int) -> dict[str, Any]:
  """Writes a population's `results.json` and `report.md` into `workdir`.

  Args:
    workdir: the population's workdir (members' reports are in
      `seed_<s>/`, written by `write_report`).
    members: one `assemble_results` dictionary per member.
    reps: bootstrap replications of the aggregate CIs.

  Returns:
    The results dictionary written (`population_results`).
  """
  results = population_results(members, reps=reps)
  write_json(os.path.join(workdir, "results.json"), results, allow_nan=False)
  write_atomic(os.path.join(workdir, "report.md"),
               render_population_markdown(results))
  return results
