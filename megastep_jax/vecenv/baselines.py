"""The OpenAI-baselines vectorised-env interface, and :class:`VecEnv`, which implements it over
any megastep_jax env.

:class:`VecEnvBase` is the baselines interface (``reset``, ``step_async``/``step_wait``,
``step``, ``get_images``, ``render``, ``close``, ``num_envs``, gymnasium
``observation_space``/``action_space``); :class:`VecEnv` adds ``reset_single_env``.
Unlike baselines' ``SubprocVecEnv`` it needs no subprocesses: all envs step at once in
one jitted, vmapped call of the functional env's ``step`` (which auto-resets), through
:class:`~megastep_jax.vecenv.slots.Slots`.

**Agent axis.** The VecEnv flattens envs and agents into ``num_envs = n_envs * A``
*slots*: slot ``i`` is agent ``i % A`` of env ``i // A``. Every slot is a single-agent
env to the learner, with the env's spaces minus the agent axis
(:func:`~megastep_jax.vecenv.slots.gym_space`: e.g. ``Discrete(7)`` actions for our envs'
one movement head). A slot is done when its agent's episode ends (per agent where the env
reports it, as Deathmatch does for an agent that dies; else all agents of an env
together); ``reset_single_env(i)`` resets all agents of slot ``i``'s env.

Infos are one dict per slot. When a slot's episode ends it holds
``terminal_observation`` (the last observation, before the auto-reset),
``TimeLimit.truncated`` (truncated and not terminated) and ``episode``
(``{"r": return, "l": length}`` of the slot's finished episode), as stable-baselines3
expects. :func:`~megastep_jax.vecenv.to_sb3` makes an actual stable-baselines3 ``VecEnv``
of it.

Every array handed out is the caller's own copy: writing into it leaves the VecEnv's
state unchanged.
"""
from __future__ import annotations

import abc
from typing import Callable, Optional, Sequence

import gymnasium
import jax
import numpy as np

from .. import validation
from ..envs.base import Environment
from ..recording import to_array
from .slots import Slots, strip_image

__all__ = ["VecEnvBase", "VecEnv", "VecEnvWrapper", "VecEnvObservationWrapper", "tile_images",
           "obs_space_info", "obs_to_dict", "dict_to_obs", "copy_obs_dict"]


# --------------------------------------------------------------------------- helpers

def tile_images(img_nhwc: Sequence[np.ndarray]) -> np.ndarray:
    """Tiles N images into one P x Q grid, P and Q as close as possible (P = Q if N is square).

    Args:
        img_nhwc: a list or array of N images of one shape (H, W, C).

    Returns:
        (P*H, Q*W, C) array; cells past the N-th are zeros.
    """
    imgs = np.asarray(img_nhwc)
    if imgs.ndim != 4 or len(imgs) == 0:
        raise ValueError(f"img_nhwc: expected N >= 1 images of shape (H, W, C), got shape {imgs.shape}")
    n, h, w, c = imgs.shape
    rows = int(np.ceil(np.sqrt(n)))
    cols = int(np.ceil(n / rows))
    padded = np.concatenate([imgs, np.zeros((rows * cols - n, h, w, c), imgs.dtype)])
    return padded.reshape(rows, cols, h, w, c).transpose(0, 2, 1, 3, 4).reshape(rows * h, cols * w, c)


def obs_space_info(obs_space):
    """Dict-structured information about a gymnasium space.

    Returns:
        (keys, shapes, dtypes): the keys of a Dict space (indices of a Tuple space, or
        ``[None]`` for any other space), and dicts from those keys to shapes and dtypes.
    """
    if isinstance(obs_space, gymnasium.spaces.Dict):
        subspaces = dict(obs_space.spaces)
    elif isinstance(obs_space, gymnasium.spaces.Tuple):
        subspaces = {i: s for i, s in enumerate(obs_space.spaces)}
    else:
        subspaces = {None: obs_space}
    keys = list(subspaces)
    return keys, {k: s.shape for k, s in subspaces.items()}, {k: s.dtype for k, s in subspaces.items()}


def obs_to_dict(obs) -> dict:
    """An observation as a dict: itself if it is one, else ``{None: obs}``."""
    return obs if isinstance(obs, dict) else {None: obs}


def dict_to_obs(obs_dict: dict):
    """Inverse of :func:`obs_to_dict`: the raw array if the only key is None."""
    if set(obs_dict) == {None}:
        return obs_dict[None]
    return obs_dict


def copy_obs_dict(obs: dict) -> dict:
    """A copy of an observation dict with every array copied."""
    return {k: np.copy(v) for k, v in obs.items()}


# --------------------------------------------------------------------------- the baselines interface

class VecEnvBase(abc.ABC):
    """The abstract vectorised env of OpenAI baselines (its ``VecEnv``).

    Observations are an array, or a dict of arrays, with a leading ``num_envs`` axis.
    """

    closed = False
    viewer = None
    metadata = {"render.modes": ["rgb_array"], "render_modes": ["rgb_array"]}
    render_mode = "rgb_array"

    def __init__(self, num_envs: int, observation_space, action_space):
        self.num_envs = num_envs
        self.observation_space = observation_space
        self.action_space = action_space

    @abc.abstractmethod
    def reset(self):
        """Resets all envs; returns their observations. Cancels a pending ``step_async``."""

    @abc.abstractmethod
    def step_async(self, actions) -> None:
        """Starts a step of all envs with ``actions``; collect it with :meth:`step_wait`."""

    @abc.abstractmethod
    def step_wait(self):
        """Finishes the step: returns (obs, rewards, dones, infos)."""

    def step(self, actions):
        """Steps synchronously: ``step_async`` then ``step_wait``."""
        self.step_async(actions)
        return self.step_wait()

    def close_extras(self) -> None:
        """Frees resources beyond this base class's; runs once, from :meth:`close`."""

    def close(self) -> None:
        if self.closed:
            return
        self.close_extras()
        self.closed = True

    def get_images(self) -> list[np.ndarray]:
        """An RGB (H, W, 3) uint8 image of each env."""
        raise NotImplementedError

    def render(self, mode: str = "rgb_array"):
        """Tiles every env's image into one (see :func:`tile_images`); only ``rgb_array``."""
        if mode != "rgb_array":
            raise ValueError(f"mode: expected 'rgb_array' (no window is opened), got {mode!r}")
        return tile_images(self.get_images())

    @property
    def unwrapped(self):
        return self


class VecEnv(VecEnvBase):
    """Many copies of a megastep_jax env behind the baselines vectorised-env interface.

    >>> venv = VecEnv(Minimal(), n_envs=8, seed=0)
    >>> obs = venv.reset()
    >>> obs, rewards, dones, infos = venv.step(np.zeros(venv.num_envs, int))

    See the module docstring for how agents become slots and how spaces and infos look.

    Args:
        env: a functional env (:class:`megastep_jax.envs.base.Environment`).
        n_envs: number of envs stepped together.
        params: env params shared by all of them; None for the defaults.
        seed: an int from which every PRNG key derives.
        image_fn: ``image_fn(slot_obs) -> (H, W, 3) uint8`` for :meth:`get_images`;
            by default :func:`strip_image`, the slot's first-person strips. ``"plot"``
            draws each env's ``plot_state`` figure instead (slow: matplotlib), the same
            picture for all agents of an env.
    """

    def __init__(self, env, n_envs: int, params=None, seed: int = 0, image_fn: Optional[Callable] = None):
        self.slots = Slots(env, n_envs, params, seed)
        super().__init__(self.slots.num_envs, self.slots.observation_space, self.slots.action_space)
        self.env = env
        self.n_envs = n_envs
        self.n_agents = self.slots.n_agents
        if image_fn == "plot":
            if getattr(type(env), "state", Environment.state) is Environment.state:
                raise ValueError(f"image_fn: 'plot' needs a state(env_state, params) method, which "
                                 f"{type(env).__name__} lacks")
        elif isinstance(image_fn, str) or (image_fn is not None and not callable(image_fn)):
            raise ValueError(f"image_fn: expected None, 'plot' or a callable, got {image_fn!r}")
        self.image_fn = image_fn or strip_image
        self._actions = None
        self._returns = np.zeros(self.num_envs, np.float64)
        self._lengths = np.zeros(self.num_envs, np.int64)

    def seed(self, seed: Optional[int] = None) -> list:
        """Re-seeds; takes effect from the next reset or step. Returns the seed per slot."""
        self.slots.seed(seed)
        return [seed] * self.num_envs

    def reset(self):
        self._actions = None
        self._returns[:] = 0
        self._lengths[:] = 0
        return self._copy(self.slots.reset())

    def reset_single_env(self, i: int):
        """Resets the env of slot ``i`` (all its agents); returns slot ``i``'s new observation."""
        if not 0 <= validation.nonnegative_int("i", i) < self.num_envs:
            raise ValueError(f"i: expected a slot index in [0, {self.num_envs}), got {i!r}")
        e = int(i) // self.n_agents
        self.slots.reset_env(e)
        lo, hi = e * self.n_agents, (e + 1) * self.n_agents
        self._returns[lo:hi] = 0
        self._lengths[lo:hi] = 0
        return self._copy(self.slots.slot_obs(self.slots.obs, int(i)))

    def step_async(self, actions) -> None:
        if self._actions is not None:
            raise ValueError("step_async: a step is already pending; call step_wait() first")
        # validate now, so that a bad action fails where it was given
        self.slots.from_slots(actions)
        self._actions = np.array(actions, copy=True)

    def step_wait(self):
        if self._actions is None:
            raise ValueError("step_wait: no step pending; call step_async(actions) first")
        actions, self._actions = self._actions, None
        obs, rewards, terminated, truncated, final = self.slots.step(actions)
        self._returns += rewards
        self._lengths += 1
        dones = terminated | truncated
        infos = [{} for _ in range(self.num_envs)]
        for i in np.flatnonzero(dones):
            infos[i]["terminal_observation"] = self.slots.slot_obs(final, i)
            infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
            infos[i]["episode"] = {"r": float(self._returns[i]), "l": int(self._lengths[i])}
        self._returns[dones] = 0
        self._lengths[dones] = 0
        return self._copy(obs), rewards, dones, infos

    def get_images(self) -> list[np.ndarray]:
        """Each slot's image, ``image_fn`` of its current observation."""
        if self.slots.obs is None:
            raise ValueError("get_images: call reset() first")
        if isinstance(self.image_fn, str):
            return self._plots()
        return [self.image_fn(self.slots.slot_obs(self.slots.obs, i)) for i in range(self.num_envs)]

    def _plots(self) -> list[np.ndarray]:
        states = jax.device_get(self.slots.state)
        pictures = []
        for e in range(self.n_envs):
            s = self.env.state(jax.tree_util.tree_map(lambda x: x[e], states), self.slots.params)
            lo = e * self.n_agents
            s["obs"] = {k: v[lo:lo + self.n_agents] for k, v in obs_to_dict(self.slots.obs).items()}
            pictures.append(to_array(type(self.env).plot_state(s)))
        return [pictures[i // self.n_agents] for i in range(self.num_envs)]

    @staticmethod
    def _copy(obs):
        return copy_obs_dict(obs) if isinstance(obs, dict) else np.copy(obs)

    def __repr__(self):
        return f"VecEnv({type(self.env).__name__}, n_envs={self.n_envs}, n_agents={self.n_agents})"


class VecEnvWrapper(VecEnvBase):
    """A vectorised env that wraps another; everything not overridden goes to ``venv``."""

    def __init__(self, venv: VecEnvBase, observation_space=None, action_space=None):
        self.venv = venv
        super().__init__(venv.num_envs, observation_space or venv.observation_space,
                         action_space or venv.action_space)

    def step_async(self, actions) -> None:
        self.venv.step_async(actions)

    @abc.abstractmethod
    def reset(self):
        ...

    @abc.abstractmethod
    def step_wait(self):
        ...

    def close(self) -> None:
        return self.venv.close()

    def render(self, mode: str = "rgb_array"):
        return self.venv.render(mode=mode)

    def get_images(self):
        return self.venv.get_images()

    def __getattr__(self, name: str):
        if name.startswith("_") or name == "venv":
            raise AttributeError(name)
        return getattr(self.venv, name)

    @property
    def unwrapped(self):
        return self.venv.unwrapped


class VecEnvObservationWrapper(VecEnvWrapper):
    """A wrapper that transforms observations with :meth:`process`."""

    @abc.abstractmethod
    def process(self, obs):
        """Returns the transformed batch of observations."""

    def reset(self):
        return self.process(self.venv.reset())

    def step_wait(self):
        obs, rews, dones, infos = self.venv.step_wait()
        return self.process(obs), rews, dones, infos
