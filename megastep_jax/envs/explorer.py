"""Explorer: one agent per floorplan, rewarded for seeing wall texels it has not seen yet.

As megastep's: res 256 rendered and averaged down to 64-pixel observations, fov 130,
momentum movement, observations ``rgb``, depth ``d`` and ``imu``. The reward is the number
of newly seen wall texels (texels under a rendered pixel) divided by the observation width
(64 at the defaults). The number of texels seen so far is the episode's *potential*; an
episode terminates when its length reaches ``potential + patience`` (200), so an agent that
keeps finding new walls keeps playing.

megastep gave every env its own floorplan; here every reset draws one of the env's
``geometries`` uniformly (all vmapped envs share their scenery, see
:mod:`megastep_jax.envs.base`). On the step that ends an episode the reward is that
step's (megastep zeroed it).
"""
from __future__ import annotations

from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from ..arrdict import arrdict, dotdict
from ..state import Agents
from .base import SceneryEnvironment


@struct.dataclass
class ExplorerParams:
    """Every number of the Explorer env; vmap over it to sweep."""

    fov: float = 130.0           # degrees
    fps: float = 10.0
    accel: float = 5.0           # m/s^2 of linear actions
    ang_accel: float = 180.0     # deg/s^2 of turns
    decay: float = 0.125         # velocity lost per step
    max_depth: float = 10.0      # metres at which depth reads 0
    patience: int = 200          # steps allowed beyond the potential
    max_steps: int = 100_000     # hard truncation (off in practice)
    reward_scale: float = 1.0    # multiplies the reward (1: new texels / observation width)


@struct.dataclass
class ExplorerState:
    agents: Agents          # E=1
    geometry: jax.Array     # () int32
    seen: jax.Array         # (T,) bool, texels of this geometry seen this episode
    potential: jax.Array    # () int32, number of texels seen
    length: jax.Array       # () int32, steps since reset


def _default_geometries(n: int, seed: int):
    from .. import floorplans

    return floorplans.sample(n, "training", seed)


class Explorer(SceneryEnvironment):
    """Seen-texel exploration. See the module docstring.

    Observations ``arrdict(rgb=(A, 3, 1, W), d=(A, 1, 1, W), imu=(A, 3))`` with
    ``W = res // subsample``; actions ``arrdict(movement=int32 (A,))``.

    Args:
        n_agents: agents per plan (1 as in megastep; more share the seen texels).
        res: render resolution, 256 by default.
        subsample: pixels averaged per observation pixel, 4 by default.
        geometries: plans; each reset draws one uniformly. Defaults to
            ``floorplans.sample(n_geometries, "training", seed)``.
        n_geometries: how many default plans.
        backend: "kernel" or "reference".
        seed: seeds textures, lights, spawns (and the default plans).
    """

    def __init__(self, n_agents: int = 1, res: int = 256, subsample: int = 4,
                 geometries: Optional[Sequence] = None, n_geometries: int = 8,
                 backend: str = "kernel", seed: int = 0):
        if geometries is None:
            geometries = _default_geometries(n_geometries, seed)
        super().__init__(geometries, n_agents, res, subsample, backend, seed)
        self._first_person_modules()

    @property
    def default_params(self) -> ExplorerParams:
        return ExplorerParams()

    def observation_space(self, params=None):
        return dotdict(rgb=self.rgb.space, d=self.depth.space, imu=self.imu.space)

    def action_space(self, params=None):
        return dotdict(movement=self.movement.space)

    def _texels(self, geometry, r):
        """Texel index (within the geometry) under each pixel, -1 off walls: (A*R,) int32."""
        starts, widths = self.pool.local(geometry)
        idx = r.indices.reshape(-1)
        j = jnp.maximum(idx, 0)
        w = widths[j]
        k = jnp.minimum(jnp.floor(w * r.locations.reshape(-1)).astype(jnp.int32), w - 1)
        wall = (idx >= 8 * self.n_agents) & (w > 0)
        return jnp.where(wall, starts[j] + k, -1)

    def _observe(self, state, params):
        """Renders, marks seen texels: (obs, state with new seen/potential, new texel count)."""
        r = self._render(state.geometry, state.agents, params.fov)
        tex = self._texels(state.geometry, r)
        T = state.seen.shape[0]
        # off-wall pixels write to an out-of-range index, which scatter drops
        seen = state.seen.at[jnp.where(tex >= 0, tex, T)].set(True, mode="drop")
        potential = jnp.sum(seen, dtype=jnp.int32)
        obs = arrdict(rgb=self.rgb(r), d=self.depth(r, params.max_depth), imu=self.imu(state.agents)[0])
        return obs, state.replace(seen=seen, potential=potential), potential - state.potential

    def reset_env(self, key, params):
        k_geom, k_spawn = jax.random.split(key)
        geometry = self._pick_geometry(k_geom)
        state = ExplorerState(
            agents=self._spawn(k_spawn, geometry), geometry=geometry,
            seen=jnp.zeros((self.pool.n_texels,), bool), potential=jnp.zeros((), jnp.int32),
            length=jnp.zeros((), jnp.int32))
        obs, state, _ = self._observe(state, params)
        return obs, state

    def step_env(self, key, state, action, params):
        agents = self.movement.apply(state.agents, self._movement(action), params.fps, params.accel,
                                     params.ang_accel, params.decay)
        agents, _ = self._physics(state.geometry, agents, params.fps)
        state = state.replace(agents=agents, length=state.length + 1)
        obs, state, new = self._observe(state, params)
        reward = jnp.full((self.n_agents,), params.reward_scale * new / self.width, jnp.float32)
        terminated = state.length >= state.potential + params.patience
        truncated = state.length >= params.max_steps
        info = {"potential": state.potential}
        return obs, state, reward, terminated, truncated, info

    def state(self, env_state, params=None) -> dotdict:
        """Numpy plot state: plan with seen texels highlighted, length and potential."""
        s = jax.device_get(env_state)
        g = int(np.asarray(s.geometry))
        n_texels = int(np.asarray(self.pool.scenery.n_texels)[g])
        patience = int(np.asarray((params or self.default_params).patience))
        return self._plot_state(
            env_state, params, seen=np.asarray(s.seen)[:n_texels],
            text=[f"length {int(s.length)}/{int(s.potential) + patience}",
                  f"potential {int(s.potential)}"])
