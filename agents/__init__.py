"""Learning on megastep_jax envs: heads built from spaces, actor-critic networks, PPO
compiled end to end, evaluation and the training command (``python -m agents.train``)."""
from . import evaluate, heads, initializers, networks, ppo
from .networks import ActorCritic
from .ppo import PPOConfig, make_train, make_trainer

__all__ = ["evaluate", "heads", "initializers", "networks", "ppo", "ActorCritic", "PPOConfig",
           "make_train", "make_trainer"]
