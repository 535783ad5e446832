"""megastep_jax environments: a functional interface and the demo envs.

>>> env = Explorer(backend="reference")
>>> obs, state = env.reset(jax.random.PRNGKey(0), env.default_params)
"""
from .base import Batched, Environment, SceneryEnvironment, SceneryPool, Stateful, sweep
from .deathmatch import Deathmatch, DeathmatchParams, DeathmatchState
from .explorer import Explorer, ExplorerParams, ExplorerState
from .minimal import Minimal, MinimalParams, MinimalState

__all__ = ["Environment", "SceneryEnvironment", "SceneryPool", "Batched", "Stateful", "sweep",
           "Minimal", "MinimalParams", "MinimalState", "Explorer", "ExplorerParams",
           "ExplorerState", "Deathmatch", "DeathmatchParams", "DeathmatchState"]
