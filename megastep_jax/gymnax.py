"""Our envs as gymnax environments, for code written against gymnax (purejaxrl and the like).

Importing this module imports gymnax (the ``gymnax`` extra); ``import megastep_jax`` does not.
One line changes in a gymnax training script::

    env, env_params = gymnax.make("CartPole-v1")               # before
    env, env_params = megastep_jax.gymnax.make("Explorer")     # after

The adapter is a ``gymnax.environments.environment.Environment``: ``reset(key, params)``,
``step(key, state, action, params)`` (gymnax 1.x's 6-tuple ``(obs, state, reward,
terminated, truncated, info)``, or the older 5-tuple ``(obs, state, reward, done, info)``
with ``legacy_step=True``), ``default_params``, ``observation_space(params)``,
``action_space(params)``, ``num_actions`` and ``name``. Everything is pure and jittable;
``vmap`` it over keys and states for a batch, as gymnax code does.

Observations
------------
One float32 vector per agent: the env's observation leaves, **in sorted key order**, each
with its agent axis dropped and flattened in C order, concatenated. For Explorer that is
``d`` (1*1*W depth), then ``imu`` (3), then ``rgb`` (3*1*W colours). ``observation_space``
is a gymnax ``Box`` of that shape with per-element bounds; :attr:`GymnaxAdapter.layout`
lists ``(key, shape, start, stop)`` for each leaf and :meth:`GymnaxAdapter.unflatten` turns
a vector back into the env's dict. Because the observation is already flat,
gymnax's ``FlattenObservationWrapper`` is not needed (it works, see below).

Actions, rewards, episode ends
------------------------------
For one agent: the action is a bare integer (int32 ``()``, as a gymnax ``Discrete(n)``
samples it), the reward a float32 scalar, ``terminated`` and ``truncated`` bool scalars.
``info`` holds the env's info plus ``terminated`` and ``truncated`` (as gymnax's own envs),
and no ``final_observation`` unless ``final_observation=True``: gymnax 1.x's
``FlattenObservationWrapper`` reads ``info["final_observation"]``, so pass that option if
you keep that wrapper. (A long purejaxrl run keeps the whole ``info`` as metrics; the
final observation would be most of it.)

Several agents
--------------
gymnax envs are single-agent, so an env with ``n_agents > 1`` (Deathmatch's default) is
refused unless ``multi_agent="agent_axis"``: then observations are (A, D), actions int32
(A,), rewards float32 (A,), and ``terminated``/``truncated`` bool (A,), each agent's own
episode end (``info["agent_terminated"]``/``info["agent_truncated"]`` where the env gives
them, else the env's ends broadcast). The spaces then describe one agent: vmap your policy
over the agent axis. Build the env with ``n_agents=1`` for a plain single-agent env.
"""
from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

try:
    import gymnax
    from gymnax.environments import environment as gymnax_environment
except ImportError as e:  # gymnax is optional: say which extra brings it
    raise ImportError(f"megastep_jax.gymnax needs gymnax 1.0.1: pip install 'megastep_jax[gymnax]' ({e})") from e

from . import envs, validation
from . import spaces as ms
from .arrdict import arrdict
from .vecenv.slots import with_final_observation

__all__ = ["make", "GymnaxAdapter", "Box", "ENV_NAMES"]

ENV_NAMES = ("Minimal", "Explorer", "Deathmatch")
_MULTI_AGENT = (None, "agent_axis")


class Box(gymnax.environments.spaces.Box):
    """gymnax's ``Box`` whose ``sample`` stays finite where a bound is infinite.

    Unbounded elements are drawn from [-1, 1] (within the other bound, if one is finite),
    as :mod:`megastep_jax.spaces` samples; gymnax's own would draw from (-inf, inf), NaN.
    ``low`` and ``high`` are float32 arrays of ``shape`` (or scalars).
    """

    def sample(self, key: jax.Array) -> jax.Array:
        low = jnp.broadcast_to(jnp.asarray(self.low, jnp.float32), self.shape)
        high = jnp.broadcast_to(jnp.asarray(self.high, jnp.float32), self.shape)
        lo = jnp.where(jnp.isfinite(low), low, jnp.where(jnp.isfinite(high), jnp.minimum(high - 1, -1.0), -1.0))
        hi = jnp.where(jnp.isfinite(high), high, jnp.maximum(lo + 1, 1.0))
        return jax.random.uniform(key, self.shape, jnp.float32, lo, hi).astype(self.dtype)

    def contains(self, x: jax.Array) -> jax.Array:
        """Whether ``x`` has this shape and lies within the bounds (a bool scalar)."""
        x = jnp.asarray(x)
        if tuple(x.shape) != tuple(self.shape):
            return jnp.asarray(False)
        return jnp.all((x >= self.low) & (x <= self.high))


def _leaf_bounds(space) -> tuple[float, float]:
    if isinstance(space, ms.MultiEmpty):
        return 0.0, 0.0
    if isinstance(space, (ms.MultiImage, ms.MultiVector, ms.Box)):
        return space.low, space.high
    raise ValueError(f"env: observation space {space!r} cannot be flattened into a gymnax Box")


class GymnaxAdapter(gymnax_environment.Environment):
    """A megastep_jax env as a gymnax ``Environment`` (see the module docstring).

    Args:
        env: a functional env (``reset``/``step``/``observation_space``/``action_space``),
            possibly wrapped.
        legacy_step: return gymnax's older 5-tuple ``(obs, state, reward, done, info)``
            from ``step`` (what purejaxrl's ``ppo.py`` unpacks).
        final_observation: add ``info["final_observation"]``, the flat observation of the
            ended episode where one ended (else the step's), as gymnax's own envs do.
        multi_agent: None (refuse ``n_agents > 1``) or ``"agent_axis"`` (keep a leading
            agent axis on observations, actions, rewards and episode ends).
    """

    def __init__(self, env, legacy_step: bool = False, final_observation: bool = False,
                 multi_agent: Optional[str] = None):
        validation.one_of("multi_agent", multi_agent, _MULTI_AGENT)
        for name, flag in (("legacy_step", legacy_step), ("final_observation", final_observation)):
            if not isinstance(flag, bool):
                raise ValueError(f"{name}: expected a bool, got {flag!r}")
        params = env.default_params
        obs_space, act_space = env.observation_space(params), env.action_space(params)
        self.n_agents = int(env.n_agents)
        if self.n_agents > 1 and multi_agent is None:
            raise ValueError(
                f"multi_agent: {type(env).__name__} has {self.n_agents} agents and gymnax envs are "
                "single-agent; pass multi_agent='agent_axis' for a leading agent axis on "
                "observations, actions, rewards and episode ends, or build the env with n_agents=1")
        if isinstance(act_space, dict):
            if len(act_space) != 1:
                raise ValueError(f"env: a gymnax Discrete action needs one action head, "
                                 f"{type(env).__name__} has {sorted(act_space)}")
            (self._action_key, act_leaf), = act_space.items()
        else:
            self._action_key, act_leaf = None, act_space
        if not isinstance(act_leaf, ms.MultiDiscrete):
            raise ValueError(f"env: expected a MultiDiscrete action space, got {act_leaf!r}")
        self._n_actions = act_leaf.n_actions

        leaves = dict(obs_space) if isinstance(obs_space, dict) else {"obs": obs_space}
        self._obs_is_dict = isinstance(obs_space, dict)
        layout, lows, highs, start = [], [], [], 0
        for k in sorted(leaves):
            s = leaves[k]
            shape = tuple(s.shape[1:])
            size = int(np.prod(shape))
            lo, hi = _leaf_bounds(s)
            layout.append((k, shape, start, start + size))
            lows.append(np.full(size, lo, np.float32))
            highs.append(np.full(size, hi, np.float32))
            start += size
        self.layout: tuple = tuple(layout)
        self.obs_size = start
        self._low, self._high = np.concatenate(lows), np.concatenate(highs)

        self.env = env
        self.legacy_step = legacy_step
        self.final_observation = final_observation
        self.multi_agent = multi_agent
        self._inner = with_final_observation(env) if final_observation else env

    # -- gymnax's descriptive interface ----------------------------------------------
    @property
    def name(self) -> str:
        return type(getattr(self.env, "unwrapped", self.env)).__name__

    @property
    def num_actions(self) -> int:
        return self._n_actions

    @property
    def default_params(self):
        return self.env.default_params

    def observation_space(self, params=None):
        """A gymnax ``Box`` of one agent's flat observation, float32 (D,), per-element bounds."""
        return Box(self._low, self._high, (self.obs_size,), jnp.float32)

    def action_space(self, params=None):
        """gymnax ``Discrete(num_actions)``: one agent's action."""
        return gymnax.environments.spaces.Discrete(self._n_actions)

    # -- observations and actions ------------------------------------------------------
    def flatten(self, obs) -> jax.Array:
        """The env's observation (dict of (A, ...) leaves) -> float32 (A, D)."""
        leaves = obs if self._obs_is_dict else {"obs": obs}
        return jnp.concatenate(
            [jnp.reshape(leaves[k], (self.n_agents, -1)).astype(jnp.float32) for k, *_ in self.layout], -1)

    def unflatten(self, flat: jax.Array) -> Any:
        """Inverse of the flattening: (..., D) -> the env's observation leaves, (..., *shape) each."""
        batch = flat.shape[:-1]
        out = arrdict({k: jnp.reshape(flat[..., a:b], (*batch, *shape)) for k, shape, a, b in self.layout})
        return out if self._obs_is_dict else out["obs"]

    def _out(self, flat):
        return flat[0] if self.multi_agent is None else flat

    def _env_action(self, action):
        a = jnp.asarray(action)
        if not jnp.issubdtype(a.dtype, jnp.integer):
            raise ValueError(f"action: expected integer actions, got dtype {a.dtype}")
        want = () if self.multi_agent is None else (self.n_agents,)
        if a.shape != want:
            raise ValueError(f"action: expected shape {want}, got {a.shape}")
        if validation.is_concrete(a) and (np.any(np.asarray(a) < 0) or np.any(np.asarray(a) >= self._n_actions)):
            raise ValueError(f"action: expected values in [0, {self._n_actions}), got {np.asarray(a)}")
        a = jnp.reshape(a.astype(jnp.int32), (self.n_agents,))
        return a if self._action_key is None else arrdict({self._action_key: a})

    # -- the transition ------------------------------------------------------------------
    def reset_env(self, key, params):
        obs, state = self._inner.reset(key, params)
        return self._out(self.flatten(obs)), state

    def reset(self, key: jax.Array, params=None):
        """(obs float32 (D,) or (A, D), state) of a fresh episode."""
        return self.reset_env(key, self.default_params if params is None else params)

    def step_env(self, key, state, action, params):
        """Not provided: gymnax's ``step_env`` is the raw 5-value transition that its base
        ``step`` auto-resets and truncates; our envs do both themselves, so call ``step``."""
        raise NotImplementedError("GymnaxAdapter.step_env: the env auto-resets and truncates in step(); call step")

    def _step6(self, key, state, action, params):
        """The auto-resetting step as gymnax 1.x's 6-tuple, whatever ``legacy_step`` says."""
        obs, state, reward, terminated, truncated, info = self._inner.step(
            key, state, self._env_action(action), params)
        info = dict(info)
        final = info.pop("final_observation", None)
        if self.multi_agent is None:
            reward = reward[0]
        else:
            terminated = info.get("agent_terminated", jnp.broadcast_to(terminated, (self.n_agents,)))
            truncated = info.get("agent_truncated", jnp.broadcast_to(truncated, (self.n_agents,)))
        info["terminated"], info["truncated"] = terminated, truncated
        if self.final_observation:
            info["final_observation"] = self._out(self.flatten(final if final is not None else obs))
        return self._out(self.flatten(obs)), state, reward.astype(jnp.float32), terminated, truncated, info

    def step(self, key: jax.Array, state: Any, action: Any, params=None):
        """One auto-resetting transition: the 6-tuple, or the 5-tuple where ``legacy_step``."""
        params = self.default_params if params is None else params
        obs, state, reward, terminated, truncated, info = self._step6(key, state, action, params)
        if self.legacy_step:
            return obs, state, reward, jnp.logical_or(terminated, truncated), info
        return obs, state, reward, terminated, truncated, info

    # -- plotting passes through ------------------------------------------------------
    def state(self, env_state, params=None):
        """The env's numpy plot state (see ``plot_state``)."""
        return self.env.state(env_state, params)

    def plot_state(self, state, fig=None):
        return self.env.plot_state(state, fig=fig)

    def __repr__(self):
        return (f"GymnaxAdapter({type(self.env).__name__}, obs_size={self.obs_size}, "
                f"num_actions={self._n_actions}, legacy_step={self.legacy_step})")


def make(name: str, legacy_step: bool = False, final_observation: bool = False,
         multi_agent: Optional[str] = None, **env_kwargs):
    """``gymnax.make``'s counterpart: ``(env, env_params)`` for one of our envs.

    Args:
        name: "Minimal", "Explorer" or "Deathmatch".
        legacy_step: the 5-tuple step of gymnax < 1.0 / purejaxrl.
        final_observation: add ``info["final_observation"]`` (see :class:`GymnaxAdapter`).
        multi_agent: None or ``"agent_axis"`` (see the module docstring). Deathmatch has 4
            agents by default: pass ``n_agents=1`` or ``multi_agent="agent_axis"``.
        **env_kwargs: passed to the env's constructor (``res``, ``subsample``,
            ``n_geometries``, ``seed``...).

    Returns:
        (a :class:`GymnaxAdapter`, the env's default params).
    """
    validation.one_of("name", name, ENV_NAMES)
    adapter = GymnaxAdapter(getattr(envs, name)(**env_kwargs), legacy_step=legacy_step,
                            final_observation=final_observation, multi_agent=multi_agent)
    return adapter, adapter.default_params
