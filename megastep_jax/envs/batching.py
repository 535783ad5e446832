"""Many envs as one: :class:`Batched` (the state holds E envs), :class:`Stateful`
(megastep's ``world = env.step(decision)`` loop) and :func:`sweep` (params with a leading
axis for ``vmap`` sweeps).

The demo envs keep their scenery on the env object and only a geometry index in each
env's state (see :mod:`megastep_jax.envs.runtime`), so :class:`Batched` is a ``vmap`` of
the one-env functions: nothing of the scenery is copied per env. The alternative, a
scenery of E envs held in a batched state (megastep's layout), would copy every env's
textures into the state and into every kernel call.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import jax
import jax.numpy as jnp

from .. import validation
from ..arrdict import arrdict, dotdict
from .protocol import Environment, _total_reward, agent_ends

__all__ = ["Batched", "Stateful", "sweep"]


def sweep(params: Any, **values) -> Any:
    """Params with a leading axis, for ``jax.vmap(..., in_axes=(0, ...))`` sweeps.

    Every field named in ``values`` takes the given values, every other field is repeated.

    >>> p = sweep(env.default_params, fov=[60., 90., 120.])   # 3 members
    >>> jax.vmap(env.reset)(jax.random.split(key, 3), p)

    Args:
        params: a params dataclass (e.g. ``env.default_params``).
        **values: field name -> sequence of values, all of one length n.
    """
    lengths = {k: len(v) for k, v in values.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"values: expected sequences of one length, got lengths {lengths}")
    n = next(iter(lengths.values()))
    fields = set(params.__dataclass_fields__)
    for k in values:
        if k not in fields:
            raise ValueError(f"values: {k!r} is not a params field; fields are {sorted(fields)}")
    out = jax.tree_util.tree_map(lambda x: jnp.repeat(jnp.asarray(x)[None], n, 0), params)
    return out.replace(**{k: jnp.asarray(v, jnp.asarray(getattr(params, k)).dtype)
                          for k, v in values.items()})


class Batched:
    """``n_envs`` copies of an env as one: the state holds all of them (megastep's n_envs).

    Every array gains a leading axis E = n_envs: obs (E, A, ...), reward (E, A),
    terminated/truncated (E,), ``info["agent_terminated"]`` (E, A). Params are shared by
    all envs. ``key`` is one key.

    Args:
        env: a one-env :class:`~megastep_jax.envs.protocol.Environment` (or wrapper).
        n_envs: E.
        reset_ratio: 1 gives exactly ``jax.vmap(env.step)``: every env that ended starts
            its own fresh episode, and (for split-protocol envs) the step still renders
            once. ``k > 1`` draws only ``ceil(E/k)`` fresh episodes per step and gives
            them to the envs that ended, in order; if more than that many end in one step,
            some share a fresh episode (craftax's optimistic reset). With split-protocol
            envs this saves only the fresh states' spawns, not renders.
        autoreset: ``"same_step"`` (the default: the step that ends an episode returns
            the fresh episode's first observation) or ``"next_step"`` (gymnasium 1.x's: the
            step after the end returns it and ignores its action; see
            :class:`megastep_jax.wrappers.NextStepAutoReset`, which wraps the env).
    """

    def __init__(self, env: Environment, n_envs: int, reset_ratio: int = 1,
                 autoreset: str = "same_step"):
        validation.one_of("autoreset", autoreset, ("same_step", "next_step"))
        if autoreset == "next_step":
            if reset_ratio != 1:
                raise ValueError(f"reset_ratio: next-step auto-reset resets every env itself; "
                                 f"expected 1, got {reset_ratio!r}")
            from ..wrappers import NextStepAutoReset  # deferred: wrappers import envs

            env = NextStepAutoReset(env)
        self.env, self.autoreset = env, autoreset
        self.n_envs = validation.positive_int("n_envs", n_envs)
        self.reset_ratio = validation.positive_int("reset_ratio", reset_ratio)
        self.n_agents = env.n_agents
        self.n_resets = math.ceil(n_envs / reset_ratio)

    def __getattr__(self, name):
        if name == "env":  # not yet set: avoid infinite recursion during unpickling
            raise AttributeError(name)
        return getattr(self.env, name)

    @property
    def default_params(self):
        return self.env.default_params

    def reset(self, key: jax.Array, params: Optional[Any] = None):
        """(obs, state) of E fresh episodes, from ``jax.random.split(key, E)``."""
        params = self.env.check_params(params)
        return jax.vmap(self.env.reset, in_axes=(0, None))(jax.random.split(key, self.n_envs), params)

    def step(self, key: jax.Array, state: Any, action: Any, params: Optional[Any] = None):
        """One auto-resetting step of every env: (obs, state, reward, terminated, truncated, info)."""
        params = self.env.check_params(params)
        if state is None:
            raise ValueError("state: expected the state returned by reset(...) or step(...), got None "
                             "(call reset first)")
        keys = jax.random.split(key, self.n_envs)
        if self.reset_ratio == 1:
            return jax.vmap(self.env.step, in_axes=(0, 0, 0, None))(keys, state, action, params)
        env = self.env
        action = jax.vmap(lambda a: env.as_action(a, params))(action)
        split = jax.vmap(lambda k: jax.random.split(k))(keys)
        fresh_keys = jax.random.split(jax.random.fold_in(key, 1), self.n_resets)
        if env.is_split:
            state_t, reward, terminated, truncated, info = jax.vmap(
                env.transition, in_axes=(0, 0, 0, None))(split[:, 0], state, action, params)
            info = jax.vmap(lambda i, t, u: agent_ends(i, t, u, env.n_agents))(info, terminated, truncated)
            fresh = jax.vmap(env.init, in_axes=(0, None))(fresh_keys, params)
            state = self._pick(fresh, state_t, terminated | truncated)
            obs, state, seen_reward = jax.vmap(env.observe, in_axes=(0, None))(state, params)
            reward = _total_reward(reward, seen_reward, info)
            return obs, state, reward, terminated, truncated, info
        obs_step, state_step, reward, terminated, truncated, info = jax.vmap(
            env.step_env, in_axes=(0, 0, 0, None))(split[:, 0], state, action, params)
        info = jax.vmap(lambda i, t, u: agent_ends(i, t, u, env.n_agents))(info, terminated, truncated)
        obs_fresh, state_fresh = jax.vmap(env.reset_env, in_axes=(0, None))(fresh_keys, params)
        done = terminated | truncated
        return (self._pick(obs_fresh, obs_step, done), self._pick(state_fresh, state_step, done),
                reward, terminated, truncated, info)

    def _pick(self, fresh, old, done):
        """Per env, fresh episode ``slot`` where ``done``, else ``old``."""
        slot = (jnp.cumsum(done) - 1) % self.n_resets

        def pick(f, o):
            return jnp.where(done.reshape(-1, *([1] * (o.ndim - 1))), f[slot], o)

        return jax.tree_util.tree_map(pick, fresh, old)

    def observation_space(self, params: Any = None):
        """The one-env space; arrays here carry an extra leading E axis."""
        return self.env.observation_space(params)

    def action_space(self, params: Any = None):
        return self.env.action_space(params)

    def state(self, env_state: Any, params: Optional[Any] = None, e: int = 0) -> dotdict:
        """Env ``e``'s numpy plot state."""
        return self.env.state(jax.tree_util.tree_map(lambda x: x[e], env_state), params)


class Stateful:
    """megastep's loop as thin sugar: ``world = env.reset()``, ``world = env.step(decision)``.

    Holds the batched state and a key, and jits the steps. ``decision`` is an arrdict with
    an ``actions`` key matching the action space (leading (E,)); ``world`` is an arrdict
    with ``obs``, ``reward`` (E, A), ``reset`` (E, A) (the obs starts a fresh stream of
    that agent, megastep's per-agent ``reset``), ``terminated``, ``truncated`` (E,).

    >>> env = Stateful(Minimal(), n_envs=8)
    >>> world = env.reset()
    >>> for _ in range(64):
    ...     decision = arrdict(actions=spaces.sample(env.action_space, key, (8,)))
    ...     world = env.step(decision)
    """

    def __init__(self, env: Environment, n_envs: int = 1, params: Optional[Any] = None,
                 seed: int = 0, reset_ratio: int = 1):
        self.batched = Batched(env, n_envs, reset_ratio)
        self.env, self.n_envs = env, n_envs
        self.params = env.check_params(params)
        self.observation_space = env.observation_space(self.params)
        self.action_space = env.action_space(self.params)
        self._key = jax.random.PRNGKey(validation.integer("seed", seed))
        self._reset = jax.jit(self.batched.reset)
        self._step = jax.jit(self.batched.step)
        self.env_state = None

    def _next_key(self):
        self._key, key = jax.random.split(self._key)
        return key

    def reset(self) -> arrdict:
        obs, self.env_state = self._reset(self._next_key(), self.params)
        E, A = self.n_envs, self.env.n_agents
        false = jnp.zeros((E,), bool)
        return arrdict(obs=obs, reward=jnp.zeros((E, A), jnp.float32), reset=jnp.ones((E, A), bool),
                       terminated=false, truncated=false)

    def step(self, decision: arrdict) -> arrdict:
        if self.env_state is None:
            raise ValueError("decision: call reset() before step()")
        obs, self.env_state, reward, terminated, truncated, info = self._step(
            self._next_key(), self.env_state, decision["actions"], self.params)
        return arrdict(obs=obs, reward=reward, reset=info["agent_terminated"] | info["agent_truncated"],
                       terminated=terminated, truncated=truncated)

    def state(self, e: int = 0) -> dotdict:
        """Env ``e``'s numpy plot state."""
        return self.batched.state(self.env_state, self.params, e)

    def display(self, e: int = 0):
        return self.env.plot_state(self.state(e))
