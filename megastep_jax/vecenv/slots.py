"""The engine under the vectorised envs: ``n_envs`` copies of a functional env stepped in one
jitted, vmapped call, their agents flattened into slots, numpy in and out.

A megastep env holds ``A`` agents, each with its own observation, action and reward.
:class:`Slots` flattens envs and agents into ``num_envs = n_envs * A`` *slots*: slot ``i``
is agent ``i % A`` of env ``i // A``. Every slot is a single-agent env to the learner:
its spaces are the env's spaces with the agent axis removed (:func:`gym_space`).

A slot's episode ends where its agent's does: ``info["agent_terminated"]`` and
``info["agent_truncated"]`` (A,) where the env gives them (in Deathmatch an agent that
dies ends its own episode alone), else the env's ``terminated``/``truncated``, shared by
all its agents.
"""
from __future__ import annotations

import copy
import weakref
from typing import Any, Optional

import gymnasium.spaces as gs
import jax
import jax.numpy as jnp
import numpy as np

from .. import spaces as ms
from .. import validation, wrappers
from ..arrdict import arrdict

__all__ = ["Slots", "gym_space", "strip_image", "with_final_observation"]


def with_final_observation(env):
    """``env`` with a step that reports ``info["final_observation"]``.

    :class:`~megastep_jax.wrappers.FinalObservation` needs the env's raw ``step_env``, so
    it goes innermost: a wrapped env gets copies of its wrappers around
    ``FinalObservation(inner env)`` (wrappers that change observations, such as
    ``FrameStack`` and ``NormalizeObservation``, then transform the final one too).
    """
    if isinstance(env, wrappers.FinalObservation):
        return env
    if isinstance(env, wrappers.Wrapper):
        outer = copy.copy(env)
        outer.env = with_final_observation(env.env)
        return outer
    return wrappers.FinalObservation(env)


def gym_space(space, per_agent: bool = True, action: bool = False):
    """The gymnasium space of one slot (``per_agent``) or of one whole env.

    Per slot: ``MultiImage(A, C, H, W)`` -> ``Box(0, 1, (C, H, W), float32)``;
    ``MultiVector(A, d)`` -> ``Box(low, high, (d,), float32)``; ``MultiEmpty(A)`` ->
    ``Box(0, 0, (0,))``; ``MultiDiscrete(A, n)`` -> ``Discrete(n)`` (``MultiConstant`` ->
    ``Discrete(1)``); a dotdict of spaces -> a ``Dict`` for observations. Whole env
    (``per_agent=False``): the same with the leading agent axis kept, and
    ``MultiDiscrete([n] * A)`` for actions.

    Action dicts: a dotdict holding ONE discrete space is that space (so one-head envs
    such as ours take ``Discrete(7)`` actions); several heads become one
    ``MultiDiscrete([n_1, n_2, ...])`` (keys in order; ``(A, heads)`` for a whole env),
    since most learners do not take Dict actions.

    Args:
        space: a megastep_jax space or a dotdict of them.
        per_agent: drop the agent axis (one agent's view); else keep it as the leading axis.
        action: map a dotdict of discrete spaces to one space rather than a Dict.
    """
    if isinstance(space, dict):
        if action:
            heads = _discrete_heads(space)
            if len(heads) == 1:
                return gym_space(next(iter(space.values())), per_agent, action)
            nvec = [n for _, n in heads]
            return gs.MultiDiscrete(nvec if per_agent else [nvec] * _n_agents(space))
        return gs.Dict({k: gym_space(s, per_agent) for k, s in space.items()})
    if isinstance(space, (ms.MultiDiscrete, ms.MultiConstant)):
        return gs.Discrete(space.n_actions) if per_agent else gs.MultiDiscrete([space.n_actions] * space.n_agents)
    shape = space.shape[1:] if per_agent else space.shape
    if isinstance(space, (ms.MultiImage, ms.MultiEmpty)):
        return gs.Box(0.0, 1.0 if isinstance(space, ms.MultiImage) else 0.0, shape, np.float32)
    if isinstance(space, (ms.MultiVector, ms.Box)):
        return gs.Box(space.low, space.high, shape, np.float32)
    raise ValueError(f"space: expected a megastep_jax space or a dotdict of them, got {type(space).__name__}")


def _discrete_heads(space) -> list[tuple[Optional[str], int]]:
    """(key, n_actions) of each head of a discrete action space (key None for a bare one)."""
    items = space.items() if isinstance(space, dict) else [(None, space)]
    heads = []
    for k, s in items:
        if not isinstance(s, (ms.MultiDiscrete, ms.MultiConstant)):
            raise ValueError(f"space: dict action spaces must be made of MultiDiscrete spaces, got {space}")
        heads.append((k, s.n_actions))
    return heads


def _n_agents(space) -> int:
    if isinstance(space, dict):
        return _n_agents(next(iter(space.values())))
    return space.n_agents


def _is_discrete(space) -> bool:
    leaves = space.values() if isinstance(space, dict) else [space]
    return all(isinstance(s, (ms.MultiDiscrete, ms.MultiConstant)) for s in leaves)


_COMPILED = weakref.WeakKeyDictionary()


def _compiled(env):
    """Jitted batched reset, batched step and single-env reset of ``env``, cached per env
    object so that several Slots over one env compile once. The step adds the ended
    episodes' observations (``info["final_observation"]``) for the baselines' terminal
    observations."""
    try:
        return _COMPILED[env]
    except (KeyError, TypeError):
        pass
    stepper = with_final_observation(env)  # for the baselines' terminal observations

    def reset_one(key, state, e, params):
        obs, fresh = env.reset(key, params)
        return obs, jax.tree_util.tree_map(lambda all_, one: all_.at[e].set(one), state, fresh)

    def reset_all(key, n_envs, params):
        return jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(key, n_envs), params)

    def step_all(key, state, actions, params):
        n_envs = jax.tree_util.tree_leaves(actions)[0].shape[0]
        return jax.vmap(stepper.step, in_axes=(0, 0, 0, None))(jax.random.split(key, n_envs), state, actions,
                                                               params)

    fns = (jax.jit(reset_all, static_argnums=1), jax.jit(step_all), jax.jit(reset_one))
    try:
        _COMPILED[env] = fns
    except TypeError:  # env objects without weak references are not cached
        pass
    return fns


class Slots:
    """Steps ``n_envs`` copies of a functional env at once; converts between envs and slots.

    The shared engine of :class:`~megastep_jax.vecenv.VecEnv` and the gymnasium adapters;
    it keeps the env states on the device and hands out numpy.

    Args:
        env: a :class:`megastep_jax.envs.base.Environment`.
        n_envs: number of envs, a positive int.
        params: env params (None for ``env.default_params``), shared by all envs.
        seed: an int; the PRNG key of every reset and step derives from it.
    """

    def __init__(self, env, n_envs: int, params=None, seed: int = 0):
        self.n_envs = validation.positive_int("n_envs", n_envs)
        self.env = env
        self.params = env.default_params if params is None else params
        self.ms_observation_space = env.observation_space(self.params)
        self.ms_action_space = env.action_space(self.params)
        self.n_agents = _n_agents(self.ms_observation_space)
        self.num_envs = n_envs * self.n_agents
        self.observation_space = gym_space(self.ms_observation_space)
        self.action_space = gym_space(self.ms_action_space, action=True)
        self._heads = _discrete_heads(self.ms_action_space) if _is_discrete(self.ms_action_space) else None
        self.seed(seed)
        self.state = None
        self.obs = None  # numpy, slot-major

        self._reset, self._step, self._reset_one = _compiled(env)

    def seed(self, seed: Optional[int]) -> None:
        """Re-seeds: the next reset and steps draw from ``PRNGKey(seed)``."""
        seed = validation.integer("seed", 0 if seed is None else seed)
        self._key = jax.random.PRNGKey(seed % 2**32)

    def _next_key(self):
        self._key, key = jax.random.split(self._key)
        return key

    # env-major arrays <-> slot-major numpy
    def to_slots(self, x) -> Any:
        """(E, A, ...) arrays (or a dict of them) -> numpy (E*A, ...), writable copies."""
        if isinstance(x, dict):
            return {k: self.to_slots(v) for k, v in x.items()}
        x = np.array(x)  # a writable copy: reset_env writes into it
        return x.reshape((self.num_envs,) + x.shape[2:])

    def from_slots(self, actions):
        """Numpy actions of the slots -> the env's (E, A) actions (an arrdict for dict spaces).

        Discrete actions are ``(num_envs,)`` for one head or ``(num_envs, heads)``; each
        column ``k`` must be an integer in ``[0, n_k)``.
        """
        a = np.asarray(actions)
        if self._heads is None:  # continuous actions: one array of the slot's shape
            s = self.ms_action_space
            validation.shape("actions", a, (self.num_envs,) + s.shape[1:])
            return jnp.asarray(a.reshape((self.n_envs,) + s.shape), jnp.float32)
        nvec = np.array([n for _, n in self._heads])
        if len(self._heads) == 1 and a.ndim == 1:
            a = a[:, None]
        validation.shape("actions", a, (self.num_envs, len(self._heads)))
        if a.dtype.kind not in "iu" and not (a.dtype.kind == "f" and np.all(a == np.round(a))):
            raise ValueError(f"actions: expected integers, got dtype {a.dtype}")
        if np.any(a < 0) or np.any(a >= nvec):
            raise ValueError(f"actions: expected each column k in [0, nvec[k]) with nvec {nvec.tolist()}, "
                             f"got values {a.min()}..{a.max()}")
        per_head = {k: jnp.asarray(a[:, i].reshape(self.n_envs, self.n_agents), jnp.int32)
                    for i, (k, _) in enumerate(self._heads)}
        return per_head[None] if None in per_head else arrdict(per_head)

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

        ``terminated``/``truncated`` are each slot's agent's (see the module docstring).
        ``final_obs`` is None when no slot's episode ended, else the slots' last
        observations before the auto-reset (meaningful only where an episode ended).
        """
        if self.state is None:
            raise ValueError("step: call reset() before stepping")
        actions = self.from_slots(actions)
        obs, self.state, reward, terminated, truncated, info = self._step(
            self._next_key(), self.state, actions, self.params)
        if "agent_terminated" in info:
            terminated = np.asarray(info["agent_terminated"]).reshape(self.num_envs)
            truncated = np.asarray(info["agent_truncated"]).reshape(self.num_envs)
        else:
            terminated = np.repeat(np.asarray(terminated), self.n_agents)
            truncated = np.repeat(np.asarray(truncated), self.n_agents)
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
    from ..plotting import gamma_encode  # deferred: plotting imports matplotlib

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
