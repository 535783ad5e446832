"""Compatibility module: the names that lived here before ``envs/`` was split by concern.

- the protocol and auto-reset: :mod:`megastep_jax.envs.protocol`;
- batching (``Batched``, ``Stateful``, ``sweep``): :mod:`megastep_jax.envs.batching`;
- the scene runtime and scenery pool: :mod:`megastep_jax.envs.runtime`.

Code that imports ``megastep_jax.envs.base.Environment`` (or ``Batched``, ``sweep``,
``SceneryPool``) keeps working.
"""
from .batching import Batched, Stateful, sweep
from .protocol import Environment, check_action, check_params, checked_step
from .runtime import SceneRuntime, SceneryPool, plan_bounds

__all__ = ["Environment", "Batched", "Stateful", "sweep", "SceneryPool", "SceneRuntime",
           "check_action", "check_params", "checked_step", "plan_bounds"]
