"""Compatibility module: the names that lived here before ``envs/`` was split by concern.

- the protocol and auto-reset: :mod:`megastep_jax.envs.protocol`;
- batching (``Batched``, ``Stateful``, ``sweep``): :mod:`megastep_jax.envs.batching`;
- the scene runtime and scenery pool: :mod:`megastep_jax.envs.runtime`.

Code that imports ``megastep_jax.envs.base.Environment`` (or ``Batched``, ``sweep``,
``SceneryPool``) keeps working, and envs written on the former ``SceneryEnvironment``
(underscore hooks, agents with an env axis of 1) still run on the compatibility class
below.
"""
import jax

from .batching import Batched, Stateful, sweep
from .protocol import Environment, check_action, check_params, checked_step
from .runtime import SceneRuntime, SceneryPool, plan_bounds

__all__ = ["Environment", "SceneryEnvironment", "Batched", "Stateful", "sweep", "SceneryPool", "SceneRuntime",
           "check_action", "check_params", "checked_step", "plan_bounds"]


class SceneryEnvironment(Environment):
    """Deprecated: the former base class of envs set in geometries, kept for envs written
    against it (the old tutorial's). New envs hold a :class:`SceneRuntime` instead (see
    docs/tutorial.md).

    Envs built on it implement the two-method protocol (``reset_env``/``step_env``), so
    their auto-reset renders twice; their agents keep the kernels' env axis of 1
    (positions (1, A, 2)).
    """

    def __init__(self, geometries, n_agents: int, res: int, subsample: int, backend: str, seed: int,
                 n_spawns: int = 100):
        self.scene = SceneRuntime(geometries, n_agents, res, subsample, backend, seed, n_spawns)
        self.n_agents, self.res, self.subsample = self.scene.n_agents, res, subsample
        self.backend, self.width = backend, self.scene.width
        self.geometries, self.pool = self.scene.geometries, self.scene.pool
        self.spawns, self.bounds = self.scene.spawns, self.scene.bounds

    @property
    def n_geometries(self) -> int:
        return self.scene.n_geometries

    def _first_person_modules(self) -> None:
        from .. import modules  # deferred: this compatibility class only

        A = self.n_agents
        self.rgb = modules.RGB(A, self.res, self.subsample)
        self.depth = modules.Depth(A, self.res, self.subsample)
        self.imu = modules.IMU(A)
        self.movement = modules.MomentumMovement(A)

    def _pick_geometry(self, key):
        return self.scene.pick_geometry(key)

    def _spawn(self, key, geometry):
        return jax.tree_util.tree_map(lambda x: x[None], self.scene.spawn(key, geometry))

    def _render(self, geometry, agents, fov):
        return self.scene.render(geometry, jax.tree_util.tree_map(lambda x: x[0], agents), fov)

    def _physics(self, geometry, agents, fps):
        moved, progress = self.scene.physics(geometry, jax.tree_util.tree_map(lambda x: x[0], agents), fps)
        return jax.tree_util.tree_map(lambda x: x[None], moved), progress[None]

    def _movement(self, action):
        return action["movement"] if isinstance(action, dict) else action

    def _plot_state(self, env_state, params, **extra):
        params = self.default_params if params is None else params
        agents = jax.tree_util.tree_map(lambda x: x[0], jax.device_get(env_state.agents))
        return self.scene.plot_state(env_state.geometry, agents, params.fov, **extra)
