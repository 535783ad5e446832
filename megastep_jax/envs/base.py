"""The functional environment interface, in the style of gymnax.

An environment object holds only shape-fixing settings (number of agents, resolution,
geometries, backend); every number lives in a ``params`` pytree so that ``jax.vmap`` over
params sweeps hyperparameters. All methods are pure and written for one environment;
``vmap`` them over keys (and states, actions) for a batch, or use :class:`Batched`.

Subclasses implement ``reset_env``, ``step_env``, ``default_params``,
``observation_space`` and ``action_space``. The base class adds auto-reset once, in
``step``.

Shapes, for an env with ``A`` agents:
    obs: an arrdict of arrays as in ``observation_space(params)``, each with leading (A,).
    action: an arrdict matching ``action_space(params)``, e.g. ``arrdict(movement=int32 (A,))``.
    reward: float32 (A,).
    terminated, truncated: bool ().
    info: a dict of arrays; ``step`` adds ``final_observation``.

Batching: one env, vmapped
--------------------------
The demo envs keep the scenery of all their G geometries on the env object, shared, and
only a geometry index in each env's state. Under ``vmap`` over thousands of envs the
scenery is therefore one unbatched operand: the compiled kernels broadcast it (they are
called with ``vmap_method="expand_dims"``) and the reference kernels gather from it, so
nothing proportional to the scenery is copied per env per step. To make that hold for the
texture arrays too, :class:`SceneryPool` flattens the G envs' texels into one texel array
(E=1) and offsets each geometry's ``texel_starts``; only the small per-line arrays (lines,
counts, lights, starts) are gathered per env. With a single geometry even that gather is
skipped. The alternative, a scenery of E = n_envs envs held in a batched state (megastep's
layout), would copy every env's textures into the state and, with the kernels' per-env
layout, into every call. So :class:`Batched` (the "state holds all envs" form) is a
``vmap`` of the one-env functions, plus an optional cheaper auto-reset.

Auto-reset
----------
``step`` runs ``step_env``; where the episode ended it replaces obs and state with a fresh
``reset_env``, chosen with ``lax.cond``: unbatched, the reset (a second render) runs only
on the steps that end an episode. Under ``vmap`` ``cond`` becomes ``select`` and both run
every step; :class:`Batched` with ``reset_ratio > 1`` renders only ``n_envs/reset_ratio``
fresh episodes per step and hands them to the envs that ended (as craftax's optimistic
resets do).
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from ..arrdict import arrdict, dotdict, numpyify
from ..state import Scenery

__all__ = ["Environment", "SceneryEnvironment", "Batched", "Stateful", "SceneryPool", "sweep"]


class Environment:
    """Base class: auto-reset on top of a subclass's raw ``step_env``/``reset_env``."""

    n_agents: int = 1

    @property
    def default_params(self) -> Any:
        raise NotImplementedError

    def reset_env(self, key: jax.Array, params: Any) -> tuple[arrdict, Any]:
        """Starts a fresh episode: returns (obs, state)."""
        raise NotImplementedError

    def step_env(self, key: jax.Array, state: Any, action: Any, params: Any):
        """The raw transition, no auto-reset: (obs, state, reward, terminated, truncated, info)."""
        raise NotImplementedError

    def observation_space(self, params: Any = None):
        raise NotImplementedError

    def action_space(self, params: Any = None):
        raise NotImplementedError

    def reset(self, key: jax.Array, params: Optional[Any] = None) -> tuple[arrdict, Any]:
        """Returns (obs, state) of a fresh episode drawn with ``key``."""
        params = self.default_params if params is None else params
        check_params(params)
        return self.reset_env(key, params)

    def step(self, key: jax.Array, state: Any, action: Any, params: Optional[Any] = None):
        """One transition with auto-reset.

        Where the episode ends (terminated or truncated), the returned obs and state are
        those of a fresh episode and ``info["final_observation"]`` holds the last
        observation of the ended one.

        Returns:
            (obs, state, reward, terminated, truncated, info).
        """
        params = self.default_params if params is None else params
        check_params(params)
        check_action(self.action_space(params), action)
        key_step, key_reset = jax.random.split(key)
        obs_step, state_step, reward, terminated, truncated, info = self.step_env(
            key_step, state, action, params)
        done = jnp.logical_or(terminated, truncated)
        obs, state = jax.lax.cond(
            done, lambda: self.reset_env(key_reset, params), lambda: (obs_step, state_step))
        info = dict(info)
        info["final_observation"] = obs_step
        return obs, state, reward, terminated, truncated, info

    # -- plotting hooks --------------------------------------------------------------
    def state(self, env_state: Any, params: Optional[Any] = None) -> dotdict:
        """One env's state as a numpy dotdict for :meth:`plot_state` (see megastep_jax.plotting)."""
        raise NotImplementedError

    @classmethod
    def plot_state(cls, state: dotdict, fig=None):
        """Draws a numpy state from :meth:`state`; returns a matplotlib figure.

        A classmethod, so it can be shipped to plotting worker processes without the env.
        """
        from .. import plotting

        return plotting.plot_state(state, fig=fig)

    def display(self, env_state: Any, params: Optional[Any] = None):
        """Plots one env's state: ``plot_state(state(env_state))``."""
        return self.plot_state(self.state(env_state, params))


# Ranges of the params fields the demo envs share; other fields need only be finite.
_PARAM_RANGES = {
    "fov": (0.0, 180.0, "in (0, 180) degrees"),
    "fps": (0.0, float("inf"), "positive"),
    "max_steps": (0.0, float("inf"), "a positive number of steps"),
    "max_depth": (0.0, float("inf"), "positive"),
}


def check_params(params: Any) -> None:
    """Raises ValueError naming a params field that is non-finite or out of its range.

    Runs only on concrete values: under ``jit`` or ``vmap`` params are traced and only
    their structure is known.
    """
    fields = getattr(params, "__dataclass_fields__", None)
    if fields is None:
        return
    for name in fields:
        value = getattr(params, name)
        if isinstance(value, jax.core.Tracer) or not isinstance(value, (int, float, np.ndarray, jax.Array)):
            continue
        v = np.asarray(value)
        if v.dtype.kind not in "fiub":
            continue
        if not np.all(np.isfinite(v)):
            raise ValueError(f"params.{name}: expected finite values, got {value!r}")
        if name in _PARAM_RANGES:
            lo, hi, what = _PARAM_RANGES[name]
            if np.any(v <= lo) or np.any(v >= hi):
                raise ValueError(f"params.{name}: expected {what}, got {value!r}")


def check_action(space: Any, action: Any) -> None:
    """Raises ValueError where a concrete action lies outside the action space.

    Out-of-range movement indices would otherwise be clipped silently by indexing.
    """
    from .. import spaces as ms

    if isinstance(space, dict):
        if not isinstance(action, dict) or set(action) != set(space):
            raise ValueError(f"action: expected a dict with keys {sorted(space)}, got "
                             f"{sorted(action) if isinstance(action, dict) else type(action).__name__}")
        for k, s in space.items():
            check_action(s, action[k])
        return
    if isinstance(action, jax.core.Tracer) or not isinstance(space, ms.MultiDiscrete):
        return
    a = np.asarray(action)
    if a.dtype.kind not in "iu":
        raise ValueError(f"action: expected integer actions, got dtype {a.dtype}")
    if a.shape[-1:] != (space.n_agents,):
        raise ValueError(f"action: expected shape (..., {space.n_agents}), got {a.shape}")
    if np.any(a < 0) or np.any(a >= space.n_actions):
        raise ValueError(f"action: expected values in [0, {space.n_actions}), got {a.min()}..{a.max()}")


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
    terminated/truncated (E,). Params are shared by all envs. ``key`` is one key.

    Args:
        env: a one-env :class:`Environment`.
        n_envs: E.
        reset_ratio: 1 gives exactly ``jax.vmap(env.step)`` (every env draws its own fresh
            episode, rendered every step). ``k > 1`` renders only ``ceil(E/k)`` fresh episodes
            per step and gives them to the envs that ended, in order; if more than that many
            end in one step, some share a fresh episode (craftax's optimistic reset).
    """

    def __init__(self, env: Environment, n_envs: int, reset_ratio: int = 1):
        if isinstance(n_envs, bool) or not isinstance(n_envs, int) or n_envs <= 0:
            raise ValueError(f"n_envs: expected a positive int, got {n_envs!r}")
        if isinstance(reset_ratio, bool) or not isinstance(reset_ratio, int) or reset_ratio <= 0:
            raise ValueError(f"reset_ratio: expected a positive int, got {reset_ratio!r}")
        self.env, self.n_envs, self.reset_ratio = env, n_envs, reset_ratio
        self.n_agents = env.n_agents
        self.n_resets = math.ceil(n_envs / reset_ratio)

    def __getattr__(self, name):
        return getattr(self.env, name)

    @property
    def default_params(self):
        return self.env.default_params

    def reset(self, key: jax.Array, params: Optional[Any] = None):
        """(obs, state) of E fresh episodes, from ``jax.random.split(key, E)``."""
        params = self.env.default_params if params is None else params
        return jax.vmap(self.env.reset_env, in_axes=(0, None))(jax.random.split(key, self.n_envs), params)

    def step(self, key: jax.Array, state: Any, action: Any, params: Optional[Any] = None):
        """One auto-resetting step of every env: (obs, state, reward, terminated, truncated, info)."""
        params = self.env.default_params if params is None else params
        keys = jax.random.split(key, self.n_envs)
        if self.reset_ratio == 1:
            return jax.vmap(self.env.step, in_axes=(0, 0, 0, None))(keys, state, action, params)
        key_reset = jax.random.fold_in(key, 1)
        obs_step, state_step, reward, terminated, truncated, info = jax.vmap(
            self.env.step_env, in_axes=(0, 0, 0, None))(keys, state, action, params)
        obs_fresh, state_fresh = jax.vmap(self.env.reset_env, in_axes=(0, None))(
            jax.random.split(key_reset, self.n_resets), params)
        done = terminated | truncated
        slot = (jnp.cumsum(done) - 1) % self.n_resets

        def pick(fresh, old):
            new = fresh[slot]
            return jnp.where(done.reshape(-1, *([1] * (old.ndim - 1))), new, old)

        obs = jax.tree_util.tree_map(pick, obs_fresh, obs_step)
        state = jax.tree_util.tree_map(pick, state_fresh, state_step)
        info = dict(info)
        info["final_observation"] = obs_step
        return obs, state, reward, terminated, truncated, info

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
    with ``obs``, ``reward`` (E, A), ``reset`` (E,) (the obs starts a fresh episode),
    ``terminated``, ``truncated`` (E,).

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
        self.params = env.default_params if params is None else params
        self.observation_space = env.observation_space(self.params)
        self.action_space = env.action_space(self.params)
        self._key = jax.random.PRNGKey(seed)
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
        return arrdict(obs=obs, reward=jnp.zeros((E, A), jnp.float32), reset=~false,
                       terminated=false, truncated=false)

    def step(self, decision: arrdict) -> arrdict:
        if self.env_state is None:
            raise ValueError("decision: call reset() before step()")
        obs, self.env_state, reward, terminated, truncated, _ = self._step(
            self._next_key(), self.env_state, decision["actions"], self.params)
        return arrdict(obs=obs, reward=reward, reset=terminated | truncated,
                       terminated=terminated, truncated=truncated)

    def state(self, e: int = 0) -> dotdict:
        """Env ``e``'s numpy plot state."""
        return self.batched.state(self.env_state, self.params, e)

    def display(self, e: int = 0):
        return self.env.plot_state(self.state(e))


@struct.dataclass
class SceneryPool:
    """The scenery of G geometries, laid out to be shared by many one-env states.

    ``view(g)`` gives geometry g's Scenery with E=1 for the kernels. Its texels point into
    a single flattened texel array (all G geometries), so the big arrays are never indexed
    per env; see the module docstring. ``scenery`` keeps the plain G-env Scenery for
    plotting.
    """

    scenery: Scenery          # G envs, as scene.scenery built it
    textures: jax.Array       # (1, G*T, 3) float32, every geometry's texels
    baked: jax.Array          # (1, G*T) float32
    offsets: jax.Array        # (G,) int32, g*T: where geometry g's texels start

    @classmethod
    def create(cls, scenery: Scenery) -> "SceneryPool":
        G, T = scenery.textures.shape[:2]
        return cls(scenery=scenery, textures=scenery.textures.reshape(1, G * T, 3),
                   baked=scenery.baked.reshape(1, G * T),
                   offsets=jnp.arange(G, dtype=jnp.int32) * T)

    @property
    def n_geometries(self) -> int:
        return self.scenery.lines.shape[0]

    @property
    def n_texels(self) -> int:
        """T, texels per geometry (padded)."""
        return self.scenery.textures.shape[1]

    def view(self, g) -> Scenery:
        """Geometry ``g``'s scenery as an E=1 Scenery (g an int32 scalar, may be traced)."""
        s = self.scenery
        if self.n_geometries == 1:  # static index: stays unbatched under vmap
            return s
        take = lambda x: jax.lax.dynamic_index_in_dim(x, g, 0, keepdims=True)
        return Scenery(lines=take(s.lines), n_lines=take(s.n_lines), lights=take(s.lights),
                       n_lights=take(s.n_lights), textures=self.textures,
                       texel_starts=take(s.texel_starts) + take(self.offsets)[:, None],
                       texel_widths=take(s.texel_widths), baked=self.baked, model=s.model,
                       n_agents=s.n_agents)

    def local(self, g) -> tuple[jax.Array, jax.Array]:
        """Geometry g's (texel_starts (L,), texel_widths (L,)) within its own T texels."""
        if self.n_geometries == 1:
            return self.scenery.texel_starts[0], self.scenery.texel_widths[0]
        take = lambda x: jax.lax.dynamic_index_in_dim(x, g, 0, keepdims=False)
        return take(self.scenery.texel_starts), take(self.scenery.texel_widths)


def plan_bounds(geometries: Sequence) -> np.ndarray:
    """(G, 2) float32: each plan's (width, height) in metres, from its mask."""
    return np.stack([np.array(g["masks"].shape[::-1], np.float32) * g["res"]
                     for g in geometries]).astype(np.float32)


def to_numpy(x):
    """``jax.device_get`` then :func:`numpyify`, for state extraction."""
    return numpyify(jax.device_get(x))


def _positive_int(name: str, x) -> int:
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)) or x <= 0:
        raise ValueError(f"{name}: expected a positive int, got {x!r}")
    return int(x)


class SceneryEnvironment(Environment):
    """Shared plumbing of envs set in geometries: scenery pool, spawns, render, physics.

    Args:
        geometries: a non-empty list of geometry dotdicts.
        n_agents: A, agents per env.
        res: render resolution R.
        subsample: pixels averaged per observation pixel; W = R // subsample.
        backend: "kernel" or "reference".
        seed: seeds the textures, lights and spawn points (the scenery is fixed per env
            object; episodes draw their randomness from the keys passed to reset/step).
        n_spawns: precomputed spawn points per geometry and agent.
    """

    def __init__(self, geometries: Sequence, n_agents: int, res: int, subsample: int,
                 backend: str, seed: int, n_spawns: int = 100):
        from .. import core, modules, scene

        if isinstance(geometries, dict) or not isinstance(geometries, Sequence) or not geometries:
            raise ValueError("geometries: expected a non-empty list of geometries")
        self.n_agents = _positive_int("n_agents", n_agents)
        self.res = _positive_int("res", res)
        self.subsample = _positive_int("subsample", subsample)
        if res % subsample:
            raise ValueError(f"subsample: expected a divisor of res={res}, got {subsample}")
        if backend not in core.BACKENDS:
            raise ValueError(f"backend: expected one of {core.BACKENDS}, got {backend!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ValueError(f"seed: expected an int, got {seed!r}")
        self.backend = backend
        self.geometries = list(geometries)
        key = jax.random.PRNGKey(int(seed))
        k_scene, k_spawn = jax.random.split(key)
        self.pool = SceneryPool.create(scene.scenery(self.geometries, self.n_agents, k_scene, backend=backend))
        self.spawns = modules.RandomSpawns.create(self.geometries, self.n_agents, k_spawn, n_spawns)
        self.bounds = jnp.asarray(plan_bounds(self.geometries))  # (G, 2)
        self.width = res // subsample

    def _first_person_modules(self) -> None:
        """megastep's Explorer and Deathmatch senses: RGB, depth, IMU, momentum movement."""
        from .. import modules

        A = self.n_agents
        self.rgb = modules.RGB(A, self.res, self.subsample)
        self.depth = modules.Depth(A, self.res, self.subsample)
        self.imu = modules.IMU(A)
        self.movement = modules.MomentumMovement(A)

    @property
    def n_geometries(self) -> int:
        return len(self.geometries)

    def _pick_geometry(self, key):
        if self.n_geometries == 1:
            return jnp.zeros((), jnp.int32)
        return jax.random.randint(key, (), 0, self.n_geometries, jnp.int32)

    def _spawn(self, key, geometry):
        """Fresh Agents (E=1) at random spawn points of ``geometry``."""
        from ..state import init_agents

        return self.spawns(key, init_agents(1, self.n_agents), True, geometry)

    def _render(self, geometry, agents, fov):
        """Renders agents (E=1) in ``geometry``; returns the unpacked render with E squeezed."""
        from .. import modules

        r = modules.render(self.pool.view(geometry), agents, self.res, fov, self.backend)
        return r[0]

    def _movement(self, action):
        """The int32 (A,) movement actions out of an action arrdict (or a bare array)."""
        if isinstance(action, dict):
            if "movement" not in action:
                raise ValueError(f"action: expected an arrdict with a 'movement' key, got keys "
                                 f"{sorted(action)}")
            return action["movement"]
        return action

    def _physics(self, geometry, agents, fps):
        """One physics step of agents (E=1) in ``geometry``: (agents, progress (1, A))."""
        from .. import core

        return core.physics(self.pool.view(geometry), agents, fps=fps, backend=self.backend)

    def _plot_state(self, env_state, params, **extra) -> dotdict:
        """The plotting module's core state of one env (its agents, scenery, fov) plus extras."""
        from .. import plotting

        params = self.default_params if params is None else params
        env_state = jax.device_get(env_state)
        g = int(np.asarray(env_state.geometry))
        one = self.pool.scenery.replace(**{
            f: np.asarray(getattr(self.pool.scenery, f))[g:g + 1]
            for f in ("lines", "n_lines", "lights", "n_lights", "textures", "texel_starts",
                      "texel_widths", "baked")})
        return plotting.core_state(one, env_state.agents, e=0, fov=float(np.asarray(params.fov)),
                                   **extra)
