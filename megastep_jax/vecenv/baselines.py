"""A vectorised-env object over any megastep_jax env, for libraries that expect one.

:class:`VecEnv` follows the OpenAI-baselines interface of seed 004 (``reset``,
``step_async``/``step_wait``, ``step``, ``reset_single_env``, ``get_images``,
``render``, ``close``, ``num_envs``, gymnasium ``observation_space``/``action_space``).
Unlike baselines' ``SubprocVecEnv`` it needs no subprocesses: all envs step at once in
one jitted, vmapped call of the functional env's ``step`` (which auto-resets).

**Agent axis.** A megastep env holds ``A`` agents, each with its own observation,
action and reward. The VecEnv flattens envs and agents into ``num_envs = n_envs * A``
*slots*: slot ``i`` is agent ``i % A`` of env ``i // A``. Every slot is a single-agent
env to the learner: its spaces are the env's spaces with the agent axis removed
(:func:`gym_space`). The agents of one env share its episode: their ``dones`` agree, and
``reset_single_env(i)`` resets all agents of slot ``i``'s env.

Spaces map to gymnasium as follows (per slot): ``MultiImage(A, C, H, W)`` ->
``Box(0, 1, (C, H, W), float32)``; ``MultiVector(A, d)`` -> ``Box(low, high, (d,),
float32)``; ``MultiDiscrete(A, n)`` -> ``Discrete(n)``; a dotdict of spaces -> a
``Dict`` for observations. A dotdict of ``MultiDiscrete`` action spaces becomes one
``MultiDiscrete([n_1, n_2, ...])`` (keys in order), since most learners do not take
Dict actions.

Infos are one dict per slot. When a slot's episode ends it holds
``terminal_observation`` (the last observation, before the auto-reset),
``TimeLimit.truncated`` (truncated and not terminated) and ``episode``
(``{"r": return, "l": length}`` of the slot's finished episode), as stable-baselines3
expects. :func:`to_sb3` makes an actual stable-baselines3 ``VecEnv`` of it.
"""
from __future__ import annotations

import abc
import weakref
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import spaces as ms
from .arrdict import arrdict

__all__ = ["VecEnvBase", "VecEnv", "VecEnvWrapper", "VecEnvObservationWrapper", "tile_images",
           "obs_space_info", "obs_to_dict", "dict_to_obs", "copy_obs_dict", "gym_space",
           "to_sb3", "Slots"]


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
    import gymnasium

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


def gym_space(space, per_agent: bool = True, action: bool = False):
    """The gymnasium space of one slot (``per_agent``) or of one whole env.

    Args:
        space: a megastep_jax space or a dotdict of them.
        per_agent: drop the agent axis (one agent's view); else keep it as the leading axis.
        action: map a dotdict of MultiDiscrete spaces to one MultiDiscrete (keys in order)
            rather than a Dict.

    Returns:
        A ``gymnasium.spaces`` object, as documented in the module docstring.
    """
    import gymnasium.spaces as gs

    if isinstance(space, dict):
        if action:
            if not all(isinstance(s, ms.MultiDiscrete) for s in space.values()):
                raise ValueError(f"space: dict action spaces must be made of MultiDiscrete spaces, got {space}")
            n_agents = next(iter(space.values())).n_agents
            nvec = [s.n_actions for s in space.values()]
            return gs.MultiDiscrete(nvec if per_agent else [nvec] * n_agents)
        return gs.Dict({k: gym_space(s, per_agent) for k, s in space.items()})
    if isinstance(space, ms.MultiDiscrete):
        if per_agent:
            return gs.Discrete(space.n_actions)
        return gs.MultiDiscrete([space.n_actions] * space.n_agents)
    if isinstance(space, ms.MultiImage):
        shape = space.shape[1:] if per_agent else space.shape
        return gs.Box(0.0, 1.0, shape, np.float32)
    if isinstance(space, ms.MultiVector):
        shape = space.shape[1:] if per_agent else space.shape
        return gs.Box(space.low, space.high, shape, np.float32)
    raise ValueError(f"space: expected a megastep_jax space or a dotdict of them, got {type(space).__name__}")


def _n_agents(space) -> int:
    if isinstance(space, dict):
        return _n_agents(next(iter(space.values())))
    return space.n_agents


# --------------------------------------------------------------------------- the engine

_COMPILED = weakref.WeakKeyDictionary()


def _compiled(env):
    """Jitted batched reset, batched step and single-env reset of ``env``, cached per env
    object so that several VecEnvs over one env compile once."""
    try:
        return _COMPILED[env]
    except (KeyError, TypeError):
        pass

    def reset_one(key, state, e, params):
        obs, fresh = env.reset(key, params)
        return obs, jax.tree_util.tree_map(lambda all_, one: all_.at[e].set(one), state, fresh)

    def reset_all(key, n_envs, params):
        return jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(key, n_envs), params)

    def step_all(key, state, actions, params):
        keys = jax.random.split(key, actions.shape[0] if not isinstance(actions, dict)
                                else next(iter(actions.values())).shape[0])
        return jax.vmap(env.step, in_axes=(0, 0, 0, None))(keys, state, actions, params)

    fns = (jax.jit(reset_all, static_argnums=1), jax.jit(step_all), jax.jit(reset_one))
    try:
        _COMPILED[env] = fns
    except TypeError:  # env objects without weak references are not cached
        pass
    return fns


class Slots:
    """Steps ``n_envs`` copies of a functional env at once; converts between envs and slots.

    This is the shared engine of :class:`VecEnv` and the gymnasium adapters; it keeps the
    env states on the device and hands out numpy.

    Args:
        env: a :class:`megastep_jax.envs.base.Environment`.
        n_envs: number of envs, a positive int.
        params: env params (None for ``env.default_params``), shared by all envs.
        seed: an int; the PRNG key of every reset and step derives from it.
    """

    def __init__(self, env, n_envs: int, params=None, seed: int = 0):
        if isinstance(n_envs, bool) or not isinstance(n_envs, int) or n_envs <= 0:
            raise ValueError(f"n_envs: expected a positive int, got {n_envs!r}")
        self.env = env
        self.n_envs = n_envs
        self.params = env.default_params if params is None else params
        self.ms_observation_space = env.observation_space(self.params)
        self.ms_action_space = env.action_space(self.params)
        self.n_agents = _n_agents(self.ms_observation_space)
        self.num_envs = n_envs * self.n_agents
        self.observation_space = gym_space(self.ms_observation_space)
        self.action_space = gym_space(self.ms_action_space, action=True)
        self.seed(seed)
        self.state = None
        self.obs = None  # numpy, slot-major

        self._reset, self._step, self._reset_one = _compiled(env)

    def seed(self, seed: Optional[int]) -> None:
        """Re-seeds: the next reset and steps draw from ``PRNGKey(seed)``."""
        seed = 0 if seed is None else seed
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ValueError(f"seed: expected an int, got {seed!r}")
        self._key = jax.random.PRNGKey(int(seed) % 2**32)

    def _next_key(self):
        self._key, key = jax.random.split(self._key)
        return key

    # env-major arrays <-> slot-major numpy
    def to_slots(self, x) -> Any:
        """(E, A, ...) arrays (or a dict of them) -> numpy (E*A, ...)."""
        if isinstance(x, dict):
            return {k: self.to_slots(v) for k, v in x.items()}
        x = np.array(x)  # a writable copy: reset_env writes into it
        return x.reshape((self.num_envs,) + x.shape[2:])

    def from_slots(self, actions):
        """Numpy actions of the slots -> the env's (E, A) actions (an arrdict for dict spaces)."""
        space = self.action_space
        if isinstance(self.ms_action_space, dict):
            a = np.asarray(actions)
            if a.shape == (self.num_envs,) and len(self.ms_action_space) == 1:
                a = a[:, None]
            if a.shape != (self.num_envs, len(self.ms_action_space)):
                raise ValueError(f"actions: expected shape ({self.num_envs}, {len(self.ms_action_space)}), "
                                 f"got {a.shape}")
            if a.dtype.kind not in "iu" and not np.all(a == np.round(a)):
                raise ValueError(f"actions: expected integers, got dtype {a.dtype} with fractional values")
            if np.any(a < 0) or np.any(a >= space.nvec):
                raise ValueError(f"actions: expected each column k in [0, nvec[k]) with nvec {space.nvec}")
            return arrdict({k: jnp.asarray(a[:, i].reshape(self.n_envs, self.n_agents), jnp.int32)
                            for i, k in enumerate(self.ms_action_space)})
        s = self.ms_action_space
        a = np.asarray(actions)
        if isinstance(s, ms.MultiDiscrete):
            a = a.reshape(-1) if a.ndim == 2 and a.shape[1] == 1 else a
            if a.shape != (self.num_envs,):
                raise ValueError(f"actions: expected shape ({self.num_envs},), one per slot, got {a.shape}")
            if a.dtype.kind not in "iu" and not np.all(a == np.round(a)):
                raise ValueError(f"actions: expected integers, got dtype {a.dtype}")
            if np.any(a < 0) or np.any(a >= s.n_actions):
                raise ValueError(f"actions: expected values in [0, {s.n_actions}), got {a.min()}..{a.max()}")
            return jnp.asarray(a.reshape(self.n_envs, self.n_agents), jnp.int32)
        want = (self.num_envs,) + s.shape[1:]
        if a.shape != want:
            raise ValueError(f"actions: expected shape {want}, got {a.shape}")
        return jnp.asarray(a.reshape((self.n_envs,) + s.shape), jnp.float32)

    def reset(self):
        """Resets every env; returns the slots' observations (numpy)."""
        obs, self.state = self._reset(self._next_key(), self.n_envs, self.params)
        self.obs = self.to_slots(dict(obs) if isinstance(obs, dict) else obs)
        return self.obs

    def reset_env(self, e: int):
        """Resets env ``e`` alone; returns its new observation, (A, ...) per key."""
        if self.state is None:
            raise ValueError("reset: call reset() before resetting a single env")
        obs, self.state = self._reset_one(self._next_key(), self.state, e, self.params)
        obs = jax.device_get(dict(obs) if isinstance(obs, dict) else obs)
        lo, hi = e * self.n_agents, (e + 1) * self.n_agents
        if isinstance(self.obs, dict):
            for k in self.obs:
                self.obs[k][lo:hi] = obs[k]
        else:
            self.obs[lo:hi] = obs
        return obs

    def step(self, actions):
        """Steps every env; returns (obs, rewards, terminated, truncated, final_obs) per slot.

        ``final_obs`` is None when no env ended, else the slots' last observations before
        the auto-reset (meaningful only where an episode ended).
        """
        if self.state is None:
            raise ValueError("step: call reset() before stepping")
        actions = self.from_slots(actions)
        obs, self.state, reward, terminated, truncated, info = self._step(
            self._next_key(), self.state, actions, self.params)
        rep = lambda x: np.repeat(np.asarray(x), self.n_agents)
        terminated, truncated = rep(terminated), rep(truncated)
        final = None
        if np.any(terminated | truncated):
            fo = info["final_observation"]
            final = self.to_slots(dict(fo) if isinstance(fo, dict) else fo)
        self.obs = self.to_slots(dict(obs) if isinstance(obs, dict) else obs)
        rewards = np.array(reward, np.float32).reshape(self.num_envs)  # writable: learners edit it
        return self.obs, rewards, terminated, truncated, final

    def slot_obs(self, obs, i: int):
        """Slot ``i``'s observation out of a slot-major batch."""
        if isinstance(obs, dict):
            return {k: v[i] for k, v in obs.items()}
        return obs[i]

    def images(self) -> list[np.ndarray]:
        """(H, W, 3) uint8 images of each slot's current first-person view (see :func:`strip_image`)."""
        return [strip_image(self.slot_obs(self.obs, i)) for i in range(self.num_envs)]


def strip_image(obs, band_height: Optional[int] = None) -> np.ndarray:
    """One slot's image observations as an (H, W, 3) uint8 picture.

    Every (C, h, W) image entry with C in (1, 3) becomes a band ``band_height`` pixels tall
    (default W // 4), 3-channel ones gamma-encoded, stacked in key order. Without image
    entries, a black 1 x 1 picture.
    """
    from .plotting import gamma_encode

    items = obs.items() if isinstance(obs, dict) else [("obs", obs)]
    bands = []
    for _, v in items:
        v = np.asarray(v)
        if v.ndim != 3 or v.shape[0] not in (1, 3):
            continue
        band = gamma_encode(v) if v.shape[0] == 3 else np.clip(v, 0, 1)
        band = np.repeat(band, 3 // band.shape[0], 0).transpose(1, 2, 0)
        height = band_height or max(v.shape[-1] // 4, 1)
        reps = int(np.ceil(height / band.shape[0]))
        bands.append(np.repeat(band, reps, 0)[:max(height, band.shape[0])])
    if not bands:
        return np.zeros((1, 1, 3), np.uint8)
    width = max(b.shape[1] for b in bands)
    bands = [np.pad(b, ((0, 0), (0, width - b.shape[1]), (0, 0))) for b in bands]
    return np.round(np.concatenate(bands) * 255).astype(np.uint8)


# --------------------------------------------------------------------------- seed 004's interface

class VecEnvBase(abc.ABC):
    """The abstract vectorised env of seed 004 (OpenAI baselines' ``VecEnv``).

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
    """Many copies of a megastep_jax env behind seed 004's vectorised-env interface.

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
            from .envs.base import Environment

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
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < self.num_envs:
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
        from .recording import to_array

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


# --------------------------------------------------------------------------- stable-baselines3

_SB3_CLASS = None


def _sb3_class():
    global _SB3_CLASS
    if _SB3_CLASS is not None:
        return _SB3_CLASS
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

    _SB3_CLASS = SB3Adapter
    return SB3Adapter


def to_sb3(venv: VecEnv):
    """A stable-baselines3 ``VecEnv`` over ``venv`` (requires stable-baselines3).

    SB3's ``seed(s)`` takes effect at the next ``reset``, as in SB3; attribute and method
    calls (``get_attr``, ``env_method``) go to ``venv`` once per slot.
    """
    if not isinstance(venv, VecEnv):
        raise ValueError(f"venv: expected a megastep_jax.vecenv.VecEnv, got {type(venv).__name__}")
    return _sb3_class()(venv)
