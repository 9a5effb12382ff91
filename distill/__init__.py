"""distill: offline multi-task RL, Decision Transformer teachers distilled."""

__version__ = "0.1.0"
