"""megastep_jax environments: a functional interface and the demo envs.

>>> env = Explorer(backend="reference")
>>> obs, state = env.reset(jax.random.PRNGKey(0), env.default_params)

Layout: ``protocol.py`` (the env interface and auto-reset), ``batching.py`` (``Batched``,
``Stateful``, ``sweep``), ``runtime.py`` (``SceneRuntime``, ``SceneryPool``: what an env
holds to spawn, render, step physics and plot), and one file per demo env.
"""
from .base import SceneryEnvironment  # deprecated: the old tutorial's base class
from .batching import Batched, Stateful, sweep
from .deathmatch import Deathmatch, DeathmatchParams, DeathmatchState
from .explorer import Explorer, ExplorerParams, ExplorerState
from .minimal import Minimal, MinimalParams, MinimalState
from .protocol import Environment, checked_step
from .runtime import SceneRuntime, SceneryPool

__all__ = ["Environment", "SceneryEnvironment", "SceneRuntime", "SceneryPool", "Batched", "Stateful", "sweep",
           "checked_step", "Minimal", "MinimalParams", "MinimalState", "Explorer", "ExplorerParams",
           "ExplorerState", "Deathmatch", "DeathmatchParams", "DeathmatchState"]
