"""Vectorised envs over any megastep_jax env, for libraries that expect one object holding
many envs.

- :mod:`~megastep_jax.vecenv.baselines`: the OpenAI-baselines interface
  (:class:`VecEnvBase`, wrappers, helpers) and :class:`VecEnv`, which implements it.
- :mod:`~megastep_jax.vecenv.slots`: the engine, :class:`Slots` (envs stepped in one
  jitted call, their agents flattened into slots) and the gymnasium spaces of a slot.
- :mod:`~megastep_jax.vecenv.sb3`: :func:`to_sb3`, the stable-baselines3 bridge.

>>> venv = VecEnv(Minimal(), n_envs=8, seed=0)
>>> obs = venv.reset()
>>> obs, rewards, dones, infos = venv.step(np.zeros(venv.num_envs, int))
"""
from .baselines import (VecEnv, VecEnvBase, VecEnvObservationWrapper, VecEnvWrapper, copy_obs_dict,
                        dict_to_obs, obs_space_info, obs_to_dict, tile_images)
from .sb3 import to_sb3
from .slots import Slots, gym_space, strip_image

__all__ = ["VecEnvBase", "VecEnv", "VecEnvWrapper", "VecEnvObservationWrapper", "tile_images",
           "obs_space_info", "obs_to_dict", "dict_to_obs", "copy_obs_dict", "gym_space",
           "to_sb3", "Slots", "strip_image"]
