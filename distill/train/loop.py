"""The host loop of every trainer (teachers, students), and its helpers.

    get = loop.fused(lambda n: make_update(n), in_shardings=...)
    state = loop.run(get, state, (source, task), step=0, steps=1000, ...)

`run` is flat: each dispatch runs `n` fused updates of a compiled function
(one per `n`, `fused`), advances the progress bar (steps/s, ETA, loss),
injects the fault of its point (tests), and at the log and checkpoint
points checks for non-finite numbers, logs and saves; a SIGTERM or SIGINT
ends the dispatch, saves, and stops (`guards.Stopped`).

A single seed is a population of one: the trainers keep every member's
state stacked on a leading [P] axis, and `over_members` runs a population
of one as the member's own function, so a single-seed run computes what a
run of its own computes, to the last bit.

Letters: P members of a population, U units trained together (members, or
members times teachers).
"""

from collections.abc import Callable, Sequence
import functools
import numbers
from typing import Any, NamedTuple

from absl import logging
import jax
import jax.numpy as jnp
import tqdm

from distill.train import checkpointing
from distill.train import guards
from distill.train import parallel


class Members(NamedTuple):
  """The members of a population; a single seed is a population of one.

  Attributes:
    seeds: one per member P.
    directories: one output directory per member.
    writers: one metric writer (or None) per member.
    labels: 'seed_<s>' per member of a population of several; '' for a
      population of one, whose names and messages carry no seed (as a run
      of its own).
    single: given as one seed (not a sequence): the trainer returns its
      member's result itself, not a list of one.
  """

  seeds: list[int]
  directories: list[str]
  writers: list[Any]
  labels: list[str]
  single: bool


def members(caller: str, seed: int | Sequence[int],
            directory: str | Sequence[str], writer: Any = None) -> Members:
  """A trainer's population from its arguments (one seed or a sequence).

  Args:
    caller: names the trainer in the error.
    seed: one seed, or one per member.
    directory: one directory, or one per member.
    writer: one writer (or None), or one per member.

  Returns:
    The `Members`.

  Raises:
    ValueError: the sequences differ in length, or are empty.
  """
  single = isinstance(seed, numbers.Integral)
  seeds = [int(seed)] if single else [int(s) for s in seed]
  dirs = [directory] if single else list(directory)
  writers = ([writer] * len(seeds) if single or writer is None
             else list(writer))
  if not (len(seeds) == len(dirs) == len(writers)) or not seeds:
    raise ValueError(f'{caller}: {len(seeds)} seeds, {len(dirs)}'
                     f' directories and {len(writers)} writers; need one of'
                     ' each per member')
  labels = [''] if len(seeds) == 1 else [f'seed_{s}' for s in seeds]
  return Members(seeds, dirs, writers, labels, single)


def _stack(trees, lead):
  return jax.tree.map(
      lambda *xs: jnp.stack(xs).reshape(lead + xs[0].shape), *trees)


def _unstack(tree, n, num_lead):
  flat = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[num_lead:]), tree)
  return [jax.tree.map(lambda x, j=j: x[j], flat) for j in range(n)]


def _count_nonfinite(tree, num_lead):
  flat = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[num_lead:]), tree)
  return jax.vmap(guards.count_nonfinite)(flat)


@functools.cache
def _jitted(fn, sharding, static):
  # Jitted: op by op, every leaf shape would compile its own stack or slice.
  return jax.jit(fn, static_argnums=static,
                 **({} if sharding is None else {'out_shardings': sharding}))


def stack(trees: Sequence[Any], lead: Sequence[int] | None = None,
          sharding: Any = None) -> Any:
  """Stacks equal-structured trees on new leading axes, on the device.

  Args:
    trees: the trees, in order.
    lead: the new leading axes (their product is `len(trees)`); default
      one axis `(len(trees),)`.
    sharding: where the result goes (`out_shardings`); None: where jit
      puts it.

  Returns:
    One tree whose leaves have leading axes `lead`.
  """
  lead = (len(trees),) if lead is None else tuple(lead)
  return _jitted(_stack, sharding, (1,))(list(trees), lead)


def unstack(tree: Any, n: int, num_lead: int = 1,
            sharding: Any = None) -> list[Any]:
  """The inverse of `stack`: the `n` trees along the leading axes.

  Args:
    tree: leaves with `num_lead` leading axes holding `n` entries in all.
    n: how many trees.
    num_lead: leading axes to merge into one before splitting.
    sharding: where each tree goes; None: where jit puts it.

  Returns:
    The `n` trees, in row-major order of the leading axes.
  """
  return _jitted(_unstack, sharding, (1, 2))(tree, n, num_lead)


def count_nonfinite(tree: Any, num_lead: int = 1,
                    sharding: Any = None) -> jax.Array:
  """Non-finite values per unit of a stacked tree (one array to fetch).

  Args:
    tree: leaves with `num_lead` leading axes (the units).
    num_lead: leading axes, merged into one [U] axis.
    sharding: where the counts go; None: where jit puts them.

  Returns:
    int32 [U].
  """
  return _jitted(_count_nonfinite, sharding, (1,))(tree, num_lead)


def over_members(fn: Callable[..., Any], in_axes: Sequence[int | None],
                 batched: Callable[[Callable[..., Any]], Callable[..., Any]]
                 ) -> Callable[..., Any]:
  """`fn` over a leading member axis [P]; a population of one runs `fn`.

  Args:
    fn: one member's function; its outputs are pytrees of arrays.
    in_axes: per positional argument, 0 (a leading [P] axis) or None
      (shared).
    batched: makes the population's function from `fn` (e.g.
      `parallel.over_members` or `jax.vmap`), used when P > 1.

  Returns:
    `f(*args)` with outputs carrying the leading [P] axis. With P = 1 it
    calls `fn` on the member's slice: the program of a run of its own
    (vmapped over one member, XLA may pick other kernels and round
    differently).
  """
  many = batched(fn)
  mapped = [i for i, ax in enumerate(in_axes) if ax == 0]

  def apply(*args):
    if jax.tree.leaves(args[mapped[0]])[0].shape[0] > 1:
      return many(*args)
    one = [jax.tree.map(lambda x: x[0], a) if ax == 0 else a
           for a, ax in zip(args, in_axes)]
    return jax.tree.map(lambda x: x[None], fn(*one))

  return apply


def fused(make_update: Callable[[int], Callable[..., Any]], **jit_kwargs
          ) -> Callable[[int], Callable[..., Any]]:
  """`get(n)`: `make_update(n)` jitted once per `n`, donating the state.

  Args:
    make_update: `n -> update(state, *args) -> (state, metrics)` fusing n
      steps.
    **jit_kwargs: for `jax.jit` (shardings).

  Returns:
    The cached getter.
  """
  return functools.cache(lambda n: jax.jit(make_update(n), donate_argnums=0,
                                           **jit_kwargs))


def align(managers: Sequence[Any], names: Sequence[str]) -> int | None:
  """The step that units trained together resume from, all of them.

  A run killed between their saves leaves some a step ahead of the others:
  those steps are moved aside (they are computed again, identically).

  Args:
    managers: one checkpoint manager per unit (reloaded when changed).
    names: the units' names, for the warning.

  Returns:
    The latest intact step they all have, or None.
  """
  intact = [set(checkpointing.intact_steps(str(m.directory)))
            for m in managers]
  step = max(set.intersection(*intact), default=None)
  for m, name, have in zip(managers, names, intact):
    ahead = sorted(s for s in have if step is None or s > step)
    for s in ahead:
      moved = checkpointing.set_aside(str(m.directory), s, 'superseded')
      logging.warning('%s: step %d is ahead of the others trained with it (a'
                      ' run stopped between their saves); moved it to %s,'
                      ' resuming all from step %s', name, s, moved, step)
    if ahead:
      m.reload()
  return step


def run(update: Callable[[int], Callable[..., Any]], state: Any,
        args: Sequence[Any], *, step: int, steps: int,
        steps_per_dispatch: int, log_every: int, ckpt_every: int, desc: str,
        what: str, fault: str, check: Callable[..., Any],
        log: Callable[[Any, Any, int], dict[str, str]],
        save: Callable[[Any, int], None],
        observe: Callable[[Any, int, int], None] | None = None) -> Any:
  """Trains from `step` to `steps` in fused dispatches; the host loop.

  Each dispatch runs `n = min(steps_per_dispatch, steps - step)` updates,
  `state, metrics = update(n)(state, *args)`, then in order:
  `observe(metrics, prev, step)` (every dispatch), the injected fault
  `<fault>@<step>` ('nan' poisons the parameters, `guards.fault`), and at a
  log or checkpoint point (a multiple of `log_every` / `ckpt_every`
  crossed, the last step, a stop request) `host = check(state, metrics,
  prev=, step=, checked=)` (raises on non-finite numbers; `checked` is the
  step of the previous check), then at a log point `log(state, host, step)`
  (returns the progress bar's postfix) and at a checkpoint point
  `save(state, step)`.

  Args:
    update: from `fused`.
    state: the state at `step`, members (and units) stacked.
    args: the update's other arguments (datasets, teachers), on the device.
    step: the step `state` is at.
    steps: the last step.
    steps_per_dispatch: updates fused per dispatch.
    log_every: steps between log points (<= 0: only the last step).
    ckpt_every: steps between checkpoints (<= 0: only the last step).
    desc: the progress bar's label.
    what: names the loop in `guards.Stopped`.
    fault: names the loop in fault points (`guards.fault`).
    check: see above.
    log: see above.
    save: see above.
    observe: see above; None: nothing every dispatch.

  Returns:
    The state at `steps`.

  Raises:
    guards.Stopped: SIGTERM/SIGINT arrived; the state was saved at the step
      reached.
  """
  bar = tqdm.tqdm(total=steps, initial=step, unit='step', desc=desc,
                  dynamic_ncols=True,
                  disable=not parallel.is_main_process())
  checked = step
  with guards.deferred():
    while step < steps:
      n = min(steps_per_dispatch, steps - step)
      state, metrics = update(n)(state, *args)
      prev, step = step, step + n
      bar.update(n)
      if observe is not None:
        observe(metrics, prev, step)
      if guards.fault(f'{fault}@{step}'):
        state = state._replace(params=guards.poison(state.params))
      stop = guards.stop_requested()
      crossed = lambda every: every > 0 and step // every > prev // every
      to_log = crossed(log_every) or step == steps
      to_save = crossed(ckpt_every) or step == steps or stop
      if not (to_log or to_save):
        continue
      # Checked before every save, so a checkpoint is always finite.
      host = check(state, metrics, prev=prev, step=step, checked=checked)
      checked = step
      if to_log:
        bar.set_postfix(log(state, host, step))
      if to_save:
        save(state, step)
      if stop:
        bar.close()
        raise guards.Stopped(stop, what, step)
  bar.close()
  return state
