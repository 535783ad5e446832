"""Deathmatch: several agents per floorplan shoot each other through their middle pixels.

As megastep's (``demo/envs/deathmatch.py``): res 512 averaged by 4 (128-pixel
observations), fov 70, momentum movement, observations ``rgb``, ``d``, ``imu`` and
``health``. Each step:

1. agents whose health fell to 0 or below respawn at a random spawn point with health 1;
   that agent's stream of experience ends here (``info["agent_terminated"]`` True for it
   alone, as megastep's per-agent ``reset``), and its reward this step is 0;
2. the agents move;
3. the scene is rendered; agent i *hits* agent j when one of the two middle observation
   pixels of i (each read at the centre of its ``subsample`` group) sees j's model;
4. every hit costs its target 5% health, every step costs 0.1%, and an agent outside
   the plan's bounds (plus 1 m clearance) loses 5% more.

The reward of an agent is the number of hits it inflicted this step. There is no
terminal state (agents respawn); episodes are truncated after ``params.max_steps``, and
on that step nothing is rendered for the ended episode (reward 0, the render serves the
fresh one). The reset also renders and scores once, as megastep's did, so health starts
at 0.999.

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
from ..arrdict import dotdict
from ..state import Agents
from .explorer import default_geometries
from .protocol import Environment
from .runtime import SceneRuntime, first_person_obs


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
    agents: Agents          # angles (A,), positions (A, 2), angvelocity (A,), velocity (A, 2)
    geometry: jax.Array     # () int32
    health: jax.Array       # (A,) float32, respawn when <= 0
    inflicted: jax.Array    # (A,) float32, damage dealt since the agent's last respawn
    hits: jax.Array         # (A, A) bool, [i, j]: i hit j on the last step
    length: jax.Array       # () int32


class Deathmatch(Environment):
    """Multi-agent shooting. See the module docstring.

    Observations ``arrdict(rgb=(A, 3, 1, W), d=(A, 1, 1, W), imu=(A, 3), health=(A, 1))``;
    actions ``arrdict(movement=int32 (A,))`` or the bare (A,); reward (A,) hits inflicted.

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
            geometries = default_geometries(n_geometries, seed)
        self.scene = SceneRuntime(geometries, n_agents, res, subsample, backend, seed)
        if self.scene.width < 2:
            raise ValueError(f"res, subsample: expected at least 2 observation pixels, got {self.scene.width}")
        self.n_agents, self.res, self.subsample = self.scene.n_agents, res, subsample
        self.width, self.backend = self.scene.width, backend
        self.rgb, self.depth, self.imu, self.movement = modules.first_person_senses(
            self.n_agents, res, subsample)

    @property
    def default_params(self) -> DeathmatchParams:
        return DeathmatchParams()

    def observation_space(self, params=None):
        return dotdict(rgb=self.rgb.space, d=self.depth.space, imu=self.imu.space,
                       health=spaces.MultiVector(self.n_agents, 1))

    def action_space(self, params=None):
        return dotdict(movement=self.movement.space)

    def init(self, key, params):
        k_geom, k_spawn = jax.random.split(key)
        geometry = self.scene.pick_geometry(k_geom)
        A = self.n_agents
        return DeathmatchState(
            agents=self.scene.spawn(k_spawn, geometry), geometry=geometry,
            health=jnp.ones((A,), jnp.float32), inflicted=jnp.zeros((A,), jnp.float32),
            hits=jnp.zeros((A, A), bool), length=jnp.zeros((), jnp.int32))

    def transition(self, key, state, action, params):
        dead = state.health <= 0
        agents = self.scene.spawn(key, state.geometry, state.agents, dead)
        agents = self.movement.apply(agents, action["movement"], params.fps, params.accel,
                                     params.ang_accel, params.decay)
        agents, _ = self.scene.physics(state.geometry, agents, params.fps)
        state = state.replace(agents=agents, health=jnp.where(dead, 1.0, state.health),
                              inflicted=jnp.where(dead, 0.0, state.inflicted), length=state.length + 1)
        truncated = state.length >= params.max_steps
        reward = jnp.zeros((self.n_agents,), jnp.float32)
        info = {"respawned": dead, "agent_terminated": dead}
        return state, reward, jnp.zeros((), bool), truncated, info

    def targets(self, r):
        """(A, A) bool: [i, j] where i's middle pixels see agent j's model."""
        A, s = self.n_agents, self.subsample
        idx = modules.downsample(r.indices[:, 0], s)[..., s // 2]  # (A, W)
        middle = idx[:, self.width // 2 - 1:self.width // 2 + 1]
        owner = jnp.where((middle >= 0) & (middle < 8 * A), middle // 8, -1)
        sees = jnp.any(owner[:, :, None] == jnp.arange(A), axis=1)
        return sees & ~jnp.eye(A, dtype=bool)  # an agent never sees its own model

    def observe(self, state, params):
        r = self.scene.render(state.geometry, state.agents, params.fov)
        hits = self.targets(r)
        inflicted = jnp.sum(hits, 1).astype(jnp.float32)
        wounds = jnp.sum(hits, 0).astype(jnp.float32)
        pos = state.agents.positions
        bounds = self.scene.bounds[state.geometry]
        outside = jnp.any((pos < -params.clearance) | (pos > bounds + params.clearance), -1)
        health = (state.health - params.hit_damage * wounds
                  - params.outside_damage * outside - params.step_cost)
        state = state.replace(health=health.astype(jnp.float32), hits=hits,
                              inflicted=state.inflicted + params.hit_damage * inflicted)
        obs = first_person_obs(self.rgb, self.depth, self.imu, r, state.agents, params.max_depth)
        obs["health"] = state.health[:, None]
        return obs, state, inflicted

    def state(self, env_state, params=None) -> dotdict:
        """Numpy plot state: plan, strips, health and inflicted-damage bars, last step's hits."""
        params = self.default_params if params is None else params
        env_state = jax.tree_util.tree_map(jnp.asarray, env_state)  # numpy states too
        obs, _, _ = self.observe(env_state, params)
        obs["health"] = env_state.health[:, None]
        s = jax.device_get(env_state)
        return self.scene.plot_state(
            s.geometry, s.agents, params.fov, obs=jax.device_get(obs),
            bars=dotdict(health=np.clip(np.asarray(s.health), 0, 1), inflicted=np.asarray(s.inflicted)),
            hits=np.asarray(s.hits), text=[f"length {int(s.length)}"])
