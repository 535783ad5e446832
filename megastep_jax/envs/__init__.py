"""megastep_jax environments: a functional interface and the demo envs."""
from .base import Environment

__all__ = ["Environment"]
