"""Optax transforms: gradient surgery and curriculum selectors.

Every transform here is a plain optax `GradientTransformation` (the surgery,
`project_conflicting` and `pcgrad`, which take no extra arguments) or a
`GradientTransformationExtraArgs` (the curriculum selectors, which accept
keyword-only extra arguments such as `task_divergences`), so `optax.chain` and
direct calls behave as they do for optax's own transforms.

One API across the package:

- A transform that needs randomness takes `key` (a typed `jax.random.key`, raw
  uint32 key data or an int seed) as the argument after `num_tasks` (first
  for `pcgrad`); its state holds the key's raw uint32 data.
- Selectors pass `updates` through and can be called with `updates=None`;
  `pcgrad` and `bi_objective` take stacked per-task updates [T, ...] and
  check them against `params`.
- Float hyperparameters are checked when known and can be scheduled with
  `optax.inject_hyperparams`; errors read `distill.optim.<name>: ...`.
- States keep structure, shapes and dtypes (int32 / float32 / uint32, and the
  params' dtypes for params-shaped fields) across updates, with or without
  `jax_enable_x64`, and round-trip through msgpack, pickle and orbax.

Wrappings tested (tests/optim_interop_test.py, docs/optim_interop.md): jit,
chain, inject_hyperparams, MultiSteps, masked, partition, lax.scan, lax.cond,
bf16, float64, sharded params (Auto and Explicit mesh axes), msgpack, pickle,
orbax.
"""

from distill.optim.curriculum import learning_progress
from distill.optim.curriculum import LearningProgressState
from distill.optim.curriculum import max_kl
from distill.optim.curriculum import MaxKLState
from distill.optim.curriculum import mixture
from distill.optim.curriculum import MixtureState
from distill.optim.curriculum import round_robin
from distill.optim.curriculum import RoundRobinState
from distill.optim.curriculum import uniform
from distill.optim.curriculum import UniformState
from distill.optim.novelty import bi_objective
from distill.optim.novelty import BiObjectiveState
from distill.optim.novelty import rnd
from distill.optim.novelty import RNDState
from distill.optim.surgery import pcgrad
from distill.optim.surgery import pcgrad_orders
from distill.optim.surgery import PCGradState
from distill.optim.surgery import project_conflicting
from distill.optim.surgery import ProjectConflictingState
from distill.optim.surgery import task_gram

__all__ = [
    'bi_objective', 'BiObjectiveState', 'learning_progress',
    'LearningProgressState', 'max_kl', 'MaxKLState', 'mixture',
    'MixtureState', 'pcgrad', 'pcgrad_orders', 'PCGradState',
    'project_conflicting', 'ProjectConflictingState', 'rnd', 'RNDState',
    'round_robin', 'RoundRobinState', 'task_gram', 'uniform', 'UniformState',
]
