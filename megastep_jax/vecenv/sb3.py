"""The bridge to stable-baselines3: :func:`to_sb3` wraps a :class:`VecEnv` as an SB3 ``VecEnv``.

stable-baselines3 (the ``sb3`` extra) is imported at the first call, not with this module.
"""
from __future__ import annotations

import functools

from .baselines import VecEnv

__all__ = ["to_sb3"]


@functools.cache
def _sb3_class():
    """The adapter class, defined once stable-baselines3 is imported."""
    # deferred: stable-baselines3 (and torch under it) is an optional, heavy dependency
    from stable_baselines3.common.vec_env import VecEnv as SB3VecEnv

    class SB3Adapter(SB3VecEnv):
        """A stable-baselines3 ``VecEnv`` view of a :class:`VecEnv`."""

        def __init__(self, venv: VecEnv):
            self.venv = venv
            super().__init__(venv.num_envs, venv.observation_space, venv.action_space)

        def reset(self):
            if self._seeds[0] is not None:
                self.venv.seed(self._seeds[0])
            self._reset_seeds()
            self._reset_options()
            return self.venv.reset()

        def step_async(self, actions):
            self.venv.step_async(actions)

        def step_wait(self):
            return self.venv.step_wait()

        def close(self):
            self.venv.close()

        def get_images(self):
            return self.venv.get_images()

        def get_attr(self, attr_name, indices=None):
            return [getattr(self.venv, attr_name) for _ in self._get_indices(indices)]

        def set_attr(self, attr_name, value, indices=None):
            setattr(self.venv, attr_name, value)

        def env_method(self, method_name, *method_args, indices=None, **method_kwargs):
            return [getattr(self.venv, method_name)(*method_args, **method_kwargs)
                    for _ in self._get_indices(indices)]

        def env_is_wrapped(self, wrapper_class, indices=None):
            return [False for _ in self._get_indices(indices)]

    return SB3Adapter


def to_sb3(venv: VecEnv):
    """A stable-baselines3 ``VecEnv`` over ``venv`` (requires stable-baselines3).

    SB3's ``seed(s)`` takes effect at the next ``reset``, as in SB3; attribute and method
    calls (``get_attr``, ``env_method``) go to ``venv`` once per slot.
    """
    if not isinstance(venv, VecEnv):
        raise ValueError(f"venv: expected a megastep_jax.vecenv.VecEnv, got {type(venv).__name__}")
    return _sb3_class()(venv)
