"""Deathmatch: several agents per floorplan shoot each other through their middle pixels.

As megastep's: res 512 averaged by 4 (128-pixel observations), fov 70, momentum movement,
observations ``rgb``, ``d``, ``imu`` and ``health``. Each step:

1. agents whose health fell to 0 or below respawn at a random spawn point with health 1;
2. the agents move;
3. the scene is rendered; agent i *hits* agent j when one of the two middle observation
   pixels of i (each read at the centre of its ``subsample`` group) sees j's model;
4. every hit costs its target 5% health, every step costs 0.1%, and an agent outside
   the plan's bounds (plus 1 m clearance) loses 5% more.

The reward of an agent is the number of hits it inflicted this step. There is no
terminal state (agents respawn); episodes are truncated after ``params.max_steps``.
The reset also renders and scores once, as megastep's did, so health starts at 0.999.

megastep gave 4 envs each floorplan; here every reset draws one of the env's
``n_geometries`` plans, so for n envs pass about n/4 geometries to get its mix.
Plan bounds are the geometry's mask extent, (width, height) = mask (W, H) * res, with x
compared to the width (megastep compared x to the height, a slip with no effect on square
plans).
"""
from __future__ import annotations

from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from .. import modules, spaces
from ..arrdict import arrdict, dotdict
from ..state import Agents
from .base import SceneryEnvironment
from .explorer import _default_geometries


@struct.dataclass
class DeathmatchParams:
    """Every number of the Deathmatch env; vmap over it to sweep."""

    fov: float = 70.0
    fps: float = 10.0
    accel: float = 5.0
    ang_accel: float = 180.0
    decay: float = 0.125
    max_depth: float = 10.0
    hit_damage: float = 0.05      # health a target loses per hit
    step_cost: float = 0.001      # health every agent loses per step
    outside_damage: float = 0.05  # extra health lost per step outside the plan
    clearance: float = 1.0        # metres beyond the plan's bounds before 'outside'
    max_steps: int = 1024         # episode truncation


@struct.dataclass
class DeathmatchState:
    agents: Agents          # E=1: (1, A) poses
    geometry: jax.Array     # () int32
    health: jax.Array       # (A,) float32, respawn when <= 0
    inflicted: jax.Array    # (A,) float32, damage dealt since the agent's last respawn
    hits: jax.Array         # (A, A) bool, [i, j]: i hit j on the last step
    length: jax.Array       # () int32


class Deathmatch(SceneryEnvironment):
    """Multi-agent shooting. See the module docstring.

    Observations ``arrdict(rgb=(A, 3, 1, W), d=(A, 1, 1, W), imu=(A, 3), health=(A, 1))``;
    actions ``arrdict(movement=int32 (A,))``; reward (A,) hits inflicted.

    Args:
        n_agents: agents per plan.
        res: render resolution (512). subsample: 4.
        geometries: plans, one drawn per reset; defaults to ``floorplans.sample``.
        n_geometries: how many default plans.
        backend: "kernel" or "reference". seed: seeds textures, lights, spawns.
    """

    def __init__(self, n_agents: int = 4, res: int = 512, subsample: int = 4,
                 geometries: Optional[Sequence] = None, n_geometries: int = 4,
                 backend: str = "kernel", seed: int = 0):
        if geometries is None:
            geometries = _default_geometries(n_geometries, seed)
        super().__init__(geometries, n_agents, res, subsample, backend, seed)
        if self.width < 2:
            raise ValueError(f"res, subsample: expected at least 2 observation pixels, got {self.width}")
        self._first_person_modules()

    @property
    def default_params(self) -> DeathmatchParams:
        return DeathmatchParams()

    def observation_space(self, params=None):
        return dotdict(rgb=self.rgb.space, d=self.depth.space, imu=self.imu.space,
                       health=spaces.MultiVector(self.n_agents, 1))

    def action_space(self, params=None):
        return dotdict(movement=self.movement.space)

    def _targets(self, r):
        """(A, A) bool: [i, j] where i's middle pixels see agent j's model."""
        A = self.n_agents
        idx = modules.downsample(r.indices[:, 0], self.subsample)[..., self.subsample // 2]  # (A, W)
        middle = idx[:, self.width // 2 - 1:self.width // 2 + 1]
        owner = jnp.where((middle >= 0) & (middle < 8 * A), middle // 8, -1)
        sees = jnp.any(owner[:, :, None] == jnp.arange(A), axis=1)
        return sees & ~jnp.eye(A, dtype=bool)  # an agent never sees its own model

    def _observe(self, state, params):
        r = self._render(state.geometry, state.agents, params.fov)
        hits = self._targets(r)
        inflicted_now = jnp.sum(hits, 1).astype(jnp.float32)
        wounds = jnp.sum(hits, 0).astype(jnp.float32)
        pos = state.agents.positions[0]
        bounds = self.bounds[state.geometry]
        outside = jnp.any((pos < -params.clearance) | (pos > bounds + params.clearance), -1)
        health = (state.health - params.hit_damage * wounds
                  - params.outside_damage * outside - params.step_cost)
        state = state.replace(health=health.astype(jnp.float32), hits=hits,
                              inflicted=state.inflicted + params.hit_damage * inflicted_now)
        obs = arrdict(rgb=self.rgb(r), d=self.depth(r, params.max_depth),
                      imu=self.imu(state.agents)[0], health=state.health[:, None])
        return obs, state, inflicted_now

    def reset_env(self, key, params):
        k_geom, k_spawn = jax.random.split(key)
        geometry = self._pick_geometry(k_geom)
        A = self.n_agents
        state = DeathmatchState(
            agents=self._spawn(k_spawn, geometry), geometry=geometry,
            health=jnp.ones((A,), jnp.float32), inflicted=jnp.zeros((A,), jnp.float32),
            hits=jnp.zeros((A, A), bool), length=jnp.zeros((), jnp.int32))
        obs, state, _ = self._observe(state, params)
        return obs, state

    def step_env(self, key, state, action, params):
        dead = state.health <= 0
        agents = self.spawns(key, state.agents, dead, state.geometry)
        state = state.replace(agents=agents, health=jnp.where(dead, 1.0, state.health),
                              inflicted=jnp.where(dead, 0.0, state.inflicted))
        agents = self.movement.apply(state.agents, self._movement(action), params.fps, params.accel,
                                     params.ang_accel, params.decay)
        agents, _ = self._physics(state.geometry, agents, params.fps)
        state = state.replace(agents=agents, length=state.length + 1)
        obs, state, reward = self._observe(state, params)
        truncated = state.length >= params.max_steps
        return obs, state, reward, jnp.zeros((), bool), truncated, {"respawned": dead}

    def state(self, env_state, params=None) -> dotdict:
        """Numpy plot state: plan, health and inflicted-damage bars, last step's hits."""
        s = jax.device_get(env_state)
        return self._plot_state(
            env_state, params, bars=dotdict(health=np.clip(np.asarray(s.health), 0, 1),
                                            inflicted=np.asarray(s.inflicted)),
            hits=np.asarray(s.hits), text=[f"length {int(s.length)}"])
