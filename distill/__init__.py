"""distill: offline multi-task RL by distilling Decision Transformer teachers."""

__version__ = "0.1.0"
