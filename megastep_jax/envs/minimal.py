"""Minimal: one agent in a box, RGB observations, simple movement. A template for new envs.

megastep's Minimal has no reward and never ends; here the reward is 0 and episodes are
truncated after ``params.max_steps`` steps so auto-reset can be exercised.
"""
from __future__ import annotations

from typing import Optional, Sequence

import jax
import jax.numpy as jnp
from flax import struct

from .. import modules, toys
from ..arrdict import arrdict, dotdict
from ..state import Agents
from .protocol import Environment
from .runtime import SceneRuntime


@struct.dataclass
class MinimalParams:
    """Every number of the Minimal env; vmap over it to sweep."""

    fov: float = 130.0        # degrees
    fps: float = 10.0         # steps per second
    speed: float = 10.0       # m/s of linear actions (0.1 m per step at the defaults)
    ang_speed: float = 180.0  # deg/s of turns (1.8 degrees per step at the defaults)
    max_steps: int = 200      # episode truncation


@struct.dataclass
class MinimalState:
    agents: Agents         # angles (A,), positions (A, 2), angvelocity (A,), velocity (A, 2)
    geometry: jax.Array    # () int32, index into the env's geometries
    length: jax.Array      # () int32, steps since reset


class Minimal(Environment):
    """A box, one agent, RGB observations and :class:`~megastep_jax.modules.SimpleMovement`.

    Observations ``arrdict(rgb=(A, 3, 1, res))``; actions ``arrdict(movement=int32 (A,))``
    or the bare int32 (A,).

    Args:
        n_agents: agents in the box.
        res: render resolution.
        geometries: plans to draw from at each reset; defaults to ``[toys.box()]``.
        backend: "kernel" or "reference".
        seed: seeds textures, lights and spawn points.
    """

    def __init__(self, n_agents: int = 1, res: int = 64, geometries: Optional[Sequence] = None,
                 backend: str = "kernel", seed: int = 0):
        self.scene = SceneRuntime(geometries or [toys.box()], n_agents, res, 1, backend, seed)
        self.n_agents, self.res, self.backend = self.scene.n_agents, res, backend
        self.rgb = modules.RGB(self.n_agents, res)
        self.movement = modules.SimpleMovement(self.n_agents)

    @property
    def default_params(self) -> MinimalParams:
        return MinimalParams()

    def observation_space(self, params=None):
        return dotdict(rgb=self.rgb.space)

    def action_space(self, params=None):
        return dotdict(movement=self.movement.space)

    def init(self, key, params):
        k_geom, k_spawn = jax.random.split(key)
        geometry = self.scene.pick_geometry(k_geom)
        return MinimalState(agents=self.scene.spawn(k_spawn, geometry), geometry=geometry,
                            length=jnp.zeros((), jnp.int32))

    def transition(self, key, state, action, params):
        agents = self.movement.apply(state.agents, action["movement"], params.fps, params.speed,
                                     params.ang_speed)
        agents, _ = self.scene.physics(state.geometry, agents, params.fps)
        state = state.replace(agents=agents, length=state.length + 1)
        reward = jnp.zeros((self.n_agents,), jnp.float32)
        return state, reward, jnp.zeros((), bool), state.length >= params.max_steps, {}

    def observe(self, state, params):
        r = self.scene.render(state.geometry, state.agents, params.fov)
        return arrdict(rgb=self.rgb(r)), state, jnp.zeros((self.n_agents,), jnp.float32)

    def state(self, env_state, params=None) -> dotdict:
        """Numpy plot state: plan, agent poses, fov and the first-person strips."""
        params = self.default_params if params is None else params
        env_state = jax.tree_util.tree_map(jnp.asarray, env_state)  # numpy states too
        obs, _, _ = self.observe(env_state, params)
        return self.scene.plot_state(env_state.geometry, env_state.agents, params.fov,
                                     obs=jax.device_get(obs), text=[f"length {int(env_state.length)}"])
