"""Optax transforms: gradient surgery and curriculum selectors.

Every transform here is a plain optax `GradientTransformation` (or
`GradientTransformationExtraArgs`) and chains with any optax optimizer.
"""

from distill.optim.novelty import bi_objective
from distill.optim.novelty import BiObjectiveState
from distill.optim.curriculum import learning_progress
from distill.optim.curriculum import LearningProgressState
from distill.optim.curriculum import max_kl
from distill.optim.curriculum import MaxKLState
from distill.optim.curriculum import mixture
from distill.optim.curriculum import MixtureState
from distill.optim.novelty import rnd
from distill.optim.novelty import RNDState
from distill.optim.curriculum import round_robin
from distill.optim.curriculum import RoundRobinState
from distill.optim.curriculum import uniform
from distill.optim.curriculum import UniformState
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
