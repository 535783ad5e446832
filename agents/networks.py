"""Actor-critic networks: an intake built from the observation space, an MLP or LSTM core,
and policy and value heads built from the action space.

The network runs on sequences: ``obs`` leaves are ``(T, B, *feature)``, ``reset`` is
``(T, B)`` and true where ``obs[t]`` is the first observation of an episode. The LSTM
zeroes its carry at those steps, so one call can span several episodes of a stream. A
rollout calls it with T = 1 each step; the PPO loss calls it on whole minibatch
sequences, starting from the carry stored at the start of the rollout.
"""
from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from . import heads
from .initializers import orthogonal

__all__ = ["ActorCritic", "LSTMCore", "MLPCore", "CORES"]


class MLPCore(nn.Module):
    """A ReLU layer with no memory; its carry is an empty tuple."""

    width: int

    @nn.compact
    def __call__(self, carry, x: jax.Array, reset: jax.Array):
        del reset
        y = nn.relu(nn.Dense(self.width, kernel_init=orthogonal(math.sqrt(2.0)))(x))
        return carry, y

    @staticmethod
    def initial_carry(batch_shape: tuple[int, ...], width: int):
        del batch_shape, width
        return ()


class LSTMCore(nn.Module):
    """An LSTM scanned over time that starts afresh wherever ``reset`` is true.

    Call: ``carry ((B, width), (B, width)), x (T, B, width), reset (T, B)`` ->
    ``(carry, y (T, B, width))``.
    """

    width: int

    @functools.partial(nn.scan, variable_broadcast="params", split_rngs={"params": False},
                       in_axes=0, out_axes=0)
    @nn.compact
    def __call__(self, carry, x: jax.Array, reset: jax.Array):
        zeros = jax.tree_util.tree_map(jnp.zeros_like, carry)
        carry = jax.tree_util.tree_map(lambda z, c: jnp.where(reset[..., None], z, c), zeros, carry)
        carry, y = nn.OptimizedLSTMCell(self.width, recurrent_kernel_init=orthogonal())(carry, x)
        return carry, y

    @staticmethod
    def initial_carry(batch_shape: tuple[int, ...], width: int):
        z = jnp.zeros((*batch_shape, width), jnp.float32)
        return (z, z)


CORES = {"mlp": MLPCore, "lstm": LSTMCore}


class ActorCritic(nn.Module):
    """Intake -> core -> (policy logits, value), sharing the intake and the core.

    Attributes:
        obs_space: the env's observation space, a space or, for a dict of spaces, a tuple
            of (key, space) pairs: build with :meth:`from_spaces` to convert.
        action_space: the env's action space, likewise.
        width: features of the intake, core and heads.
        core: ``"lstm"`` or ``"mlp"``.
        image_kwargs: (name, value) pairs for the image intakes (see :func:`heads.intake`).

    Call: ``(carry, obs (T, B, ...), reset (T, B))`` -> ``(carry, logits, value (T, B))``,
    logits being a tree of ``(T, B, n_actions)`` log-probabilities shaped like the action
    space.
    """

    obs_space: Any
    action_space: Any
    width: int = 128
    core: str = "lstm"
    image_kwargs: tuple = ()

    @nn.compact
    def __call__(self, carry, obs, reset: jax.Array):
        x = heads.intake(self.obs_space, self.width, image_kwargs=self.image_kwargs,
                         name="intake")(obs)
        carry, y = CORES[self.core](self.width, name="core")(carry, x, reset)
        logits = heads.output(self.action_space, self.width, name="policy")(y)
        value = heads.ValueOutput(self.width, name="value")(y)
        return carry, logits, value

    def initial_carry(self, batch_shape: tuple[int, ...]):
        """The carry of fresh streams: zeros for the LSTM, ``()`` for the MLP."""
        return CORES[self.core].initial_carry(tuple(batch_shape), self.width)

    @classmethod
    def from_spaces(cls, obs_space, action_space, **kwargs) -> "ActorCritic":
        """Builds the network for an env's spaces (dicts keep their key order)."""
        return cls(heads.freeze_space(obs_space), heads.freeze_space(action_space), **kwargs)

    def __post_init__(self):
        if self.core not in CORES:
            raise ValueError(f"core: expected one of {sorted(CORES)}, got {self.core!r}")
        super().__post_init__()
