"""The functional environment interface, in the style of gymnax.

An environment object holds only shape-fixing settings (number of agents, resolution,
geometries); every number lives in a ``params`` pytree so that ``jax.vmap`` over params
sweeps hyperparameters. All methods are pure and written for one environment; ``vmap``
them over keys (and states, actions) for a batch.

Subclasses implement ``reset_env``, ``step_env``, ``default_params``,
``observation_space`` and ``action_space``. The base class adds auto-reset once, in
``step``.

Shapes, for an env with ``A`` agents:
    obs: an arrdict of arrays as in ``observation_space(params)``, each with leading (A,).
    action: an array (or arrdict) in ``action_space(params)``, int32 (A,) for movement.
    reward: float32 (A,).
    terminated, truncated: bool ().
    info: a dict of arrays; ``step`` adds ``final_observation``.
"""
from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp

from ..arrdict import arrdict


class Environment:
    """Base class: auto-reset on top of a subclass's raw ``step_env``/``reset_env``."""

    n_agents: int = 1

    @property
    def default_params(self) -> Any:
        raise NotImplementedError

    def reset_env(self, key: jax.Array, params: Any) -> tuple[arrdict, Any]:
        """Starts a fresh episode: returns (obs, state)."""
        raise NotImplementedError

    def step_env(self, key: jax.Array, state: Any, action: Any, params: Any):
        """The raw transition, no auto-reset: (obs, state, reward, terminated, truncated, info)."""
        raise NotImplementedError

    def observation_space(self, params: Any):
        raise NotImplementedError

    def action_space(self, params: Any):
        raise NotImplementedError

    def reset(self, key: jax.Array, params: Optional[Any] = None) -> tuple[arrdict, Any]:
        """Returns (obs, state) of a fresh episode drawn with ``key``."""
        params = self.default_params if params is None else params
        return self.reset_env(key, params)

    def step(self, key: jax.Array, state: Any, action: Any, params: Optional[Any] = None):
        """One transition with auto-reset.

        Where the episode ends (terminated or truncated), the returned obs and state are
        those of a fresh episode and ``info["final_observation"]`` holds the last
        observation of the ended one.

        Returns:
            (obs, state, reward, terminated, truncated, info).
        """
        params = self.default_params if params is None else params
        key_step, key_reset = jax.random.split(key)
        obs_step, state_step, reward, terminated, truncated, info = self.step_env(
            key_step, state, action, params)
        obs_reset, state_reset = self.reset_env(key_reset, params)
        done = jnp.logical_or(terminated, truncated)
        pick = lambda fresh, old: jax.lax.select(jnp.broadcast_to(done, fresh.shape), fresh, old)
        state = jax.tree_util.tree_map(pick, state_reset, state_step)
        obs = jax.tree_util.tree_map(pick, obs_reset, obs_step)
        info = dict(info)
        info["final_observation"] = obs_step
        return obs, state, reward, terminated, truncated, info
