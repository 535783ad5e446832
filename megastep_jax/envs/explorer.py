"""Explorer: one agent per floorplan, rewarded for seeing wall texels it has not seen yet.

As megastep's (``demo/envs/explorer.py``): res 256 rendered and averaged down to 64-pixel
observations, fov 130, momentum movement, observations ``rgb``, depth ``d`` and ``imu``.
The reward is the number of newly seen wall texels (texels under a rendered pixel)
divided by the observation width (64 at the defaults). The number of texels seen so far
is the episode's *potential*.

The episode's end is megastep's: after the move, an episode whose length has reached
``potential + patience`` (200), with the potential of the previous step, terminates
before anything is rendered; the move is discarded (the env resets) and the step's
reward is 0. So an agent that keeps finding new walls keeps playing, and a step costs one
render, reset or not.

megastep gave every env its own floorplan; here every reset draws one of the env's
``geometries`` uniformly (all vmapped envs share their scenery, see
:mod:`megastep_jax.envs.runtime`).
"""
from __future__ import annotations

from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from .. import core, modules, spaces
from ..arrdict import arrdict, dotdict
from ..state import Agents
from .protocol import Environment
from .runtime import SceneRuntime, first_person_obs


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
    agents: Agents          # angles (A,), positions (A, 2), angvelocity (A,), velocity (A, 2)
    geometry: jax.Array     # () int32
    seen: jax.Array         # (ceil(T / 32),) int32, texels of this geometry seen this
                            # episode, packed: bit t % 32 of word t // 32 (core.unpack_seen)
    potential: jax.Array    # () int32, number of texels seen
    length: jax.Array       # () int32, steps since reset


def default_geometries(n: int, seed: int):
    """``n`` procedural training floorplans (the demo envs' default plans)."""
    from .. import floorplans  # deferred: only the default plans need the generator

    return floorplans.sample(n, "training", seed)


class Explorer(Environment):
    """Seen-texel exploration. See the module docstring.

    Observations ``arrdict(rgb=(A, 3, 1, W), d=(A, 1, 1, W), imu=(A, 3))`` with
    ``W = res // subsample``; actions ``arrdict(movement=int32 (A,))`` or the bare (A,).
    ``info["potential"]``: int32 (), the texels seen before this step's render (the
    potential the episode's end was judged by).

    With ``budget_obs=True`` the observations gain ``budget`` (A, 2), float32 in [0, 1]:
    how many steps the episode has left if no new texel is seen, ``left = potential +
    patience - length``, as ``(min(left / patience, 1), left / (left + patience))``. It
    is a function of what the agent has observed (its step count and its rewards, which
    count the texels it has seen) and the env's published rule, so it is no privileged
    information; a memoryless policy cannot otherwise know it.

    Args:
        n_agents: agents per plan (1 as in megastep; more share the seen texels).
        res: render resolution, 256 by default.
        subsample: pixels averaged per observation pixel, 4 by default.
        geometries: plans; each reset draws one uniformly. Defaults to
            ``floorplans.sample(n_geometries, "training", seed)``.
        n_geometries: how many default plans.
        backend: "kernel" or "reference".
        seed: seeds textures, lights, spawns (and the default plans).
        budget_obs: add the ``budget`` observation (see above).
    """

    def __init__(self, n_agents: int = 1, res: int = 256, subsample: int = 4,
                 geometries: Optional[Sequence] = None, n_geometries: int = 8,
                 backend: str = "kernel", seed: int = 0, budget_obs: bool = False):
        if not isinstance(budget_obs, bool):
            raise ValueError(f"budget_obs: expected a bool, got {budget_obs!r}")
        self.budget_obs = budget_obs
        if geometries is None:
            geometries = default_geometries(n_geometries, seed)
        self.scene = SceneRuntime(geometries, n_agents, res, subsample, backend, seed)
        self.n_agents, self.res, self.subsample = self.scene.n_agents, res, subsample
        self.width, self.backend = self.scene.width, backend
        self.rgb, self.depth, self.imu, self.movement = modules.first_person_senses(
            self.n_agents, res, subsample)

    @property
    def default_params(self) -> ExplorerParams:
        return ExplorerParams()

    def observation_space(self, params=None):
        space = dotdict(rgb=self.rgb.space, d=self.depth.space, imu=self.imu.space)
        if self.budget_obs:
            space["budget"] = spaces.MultiVector(self.n_agents, 2, 0.0, 1.0)
        return space

    def budget(self, state, params) -> jax.Array:
        """The ``budget`` observation of ``state``, float32 (A, 2) (see the class docstring)."""
        patience = jnp.asarray(params.patience, jnp.float32)
        left = jnp.maximum((state.potential + params.patience - state.length).astype(jnp.float32), 0.0)
        b = jnp.stack([jnp.minimum(left / patience, 1.0), left / (left + patience)])
        return jnp.broadcast_to(b, (self.n_agents, 2))

    def action_space(self, params=None):
        return dotdict(movement=self.movement.space)

    def init(self, key, params):
        k_geom, k_spawn = jax.random.split(key)
        geometry = self.scene.pick_geometry(k_geom)
        return ExplorerState(
            agents=self.scene.spawn(k_spawn, geometry), geometry=geometry,
            seen=jnp.zeros((core.seen_words(self.scene.n_texels),), jnp.int32),
            potential=jnp.zeros((), jnp.int32),
            length=jnp.zeros((), jnp.int32))

    def transition(self, key, state, action, params):
        agents = self.movement.apply(state.agents, action["movement"], params.fps, params.accel,
                                     params.ang_accel, params.decay)
        agents, _ = self.scene.physics(state.geometry, agents, params.fps)
        state = state.replace(agents=agents, length=state.length + 1)
        terminated = state.length >= state.potential + params.patience  # last step's potential
        truncated = state.length >= params.max_steps
        reward = jnp.zeros((self.n_agents,), jnp.float32)
        return state, reward, terminated, truncated, {"potential": state.potential}

    def observe(self, state, params):
        r = self.scene.render(state.geometry, state.agents, params.fov)
        seen, new = self.scene.mark_seen(state.seen, state.geometry, r)
        state = state.replace(seen=seen, potential=state.potential + new)
        obs = first_person_obs(self.rgb, self.depth, self.imu, r, state.agents, params.max_depth)
        if self.budget_obs:
            obs["budget"] = self.budget(state, params)
        reward = jnp.full((self.n_agents,), params.reward_scale * new / self.width, jnp.float32)
        return obs, state, reward

    def state(self, env_state, params=None) -> dotdict:
        """Numpy plot state: plan with seen texels highlighted, strips, length and potential."""
        params = self.default_params if params is None else params
        env_state = jax.tree_util.tree_map(jnp.asarray, env_state)  # numpy states too
        obs, _, _ = self.observe(env_state, params)
        s = jax.device_get(env_state)
        n_texels = self.scene.n_texels_of(s.geometry)
        return self.scene.plot_state(
            s.geometry, s.agents, params.fov, obs=jax.device_get(obs),
            seen=np.asarray(core.unpack_seen(s.seen, n_texels)),
            text=[f"length {int(s.length)}/{int(s.potential) + int(params.patience)}",
                  f"potential {int(s.potential)}"])
