"""The functional environment protocol and its auto-reset, in the style of gymnax.

An environment object holds only shape-fixing settings (number of agents, resolution,
geometries, backend); every number lives in a ``params`` pytree, so ``jax.vmap`` over
params sweeps hyperparameters. Every method is pure and written for one environment;
``vmap`` it over keys (and states, actions) for a batch, or use
:class:`~megastep_jax.envs.batching.Batched`.

Shapes, for an env with ``A`` agents:
    obs: an arrdict of arrays as in ``observation_space(params)``, each with leading (A,).
    action: an arrdict matching ``action_space(params)``, e.g. ``arrdict(movement=int32
        (A,))``; with one action head also the bare int array (A,) (or a scalar if A == 1).
    reward: float32 (A,).
    terminated, truncated: bool (), the env's episode.
    info: a dict of arrays, always with ``agent_terminated`` and ``agent_truncated``, bool
        (A,): True where that agent's stream of experience ends at this step (by default
        the env-level flags broadcast; Deathmatch ends an agent's stream when it respawns).

Writing an env: the split protocol
----------------------------------
A step is a *transition* (movement, physics, bookkeeping: everything before the render)
followed by an *observation* (the render and what is computed from it). An env written
in this form implements

- ``init(key, params) -> state``: a fresh episode's state, not rendered;
- ``transition(key, state, action, params) -> (state, reward, terminated, truncated,
  info)``: decides the episode's end before rendering;
- ``observe(state, params) -> (obs, state, reward)``: renders ``state`` once; ``state``
  may be updated from the render (seen texels, health) and ``reward`` (A,) is the
  render-dependent part of the reward.

and the base class composes them: ``reset_env = observe(init)``, ``step_env = observe(
transition)`` (the raw step, no auto-reset), and ``step``, the auto-resetting step:

1. ``transition`` with the first half of ``key``;
2. ``init`` with the second half, a fresh state (no render);
3. per env, the fresh state where the episode ended, else the transitioned one
   (``jnp.where`` over the small state: nothing of the scenery is copied);
4. one ``observe`` of the selected state.

So an auto-reset costs no render, and under ``vmap`` the step has no ``lax.cond`` whose
batching would copy every operand (the scenery pool included) to every env. The result
is exactly that of the straightforward auto-reset (``step_env``, then
``reset_env`` where the episode ended), because the reward of an agent whose stream ends
at this step is the transition's reward alone: that agent's render-dependent reward is 0
on its last step (as in megastep's Explorer). ``tests/test_autoreset.py`` checks this.

Envs that implement only ``reset_env``/``step_env`` (the two-method form) still work:
``step`` then computes both and selects with ``jnp.where`` (a second render).

The ended episode's last observation is not computed by default; wrap the env in
:class:`megastep_jax.wrappers.FinalObservation` to get it in ``info["final_observation"]``.

Errors under jit
----------------
Eager calls validate params, actions and state and raise ``ValueError`` naming the
argument. Under ``jit`` values are traced; use :func:`checked_step` for the JAX way
(``checkify``): out-of-range actions or params and NaNs become errors you ``throw()``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from .. import spaces as ms
from .. import validation
from ..arrdict import arrdict, dotdict

__all__ = ["Environment", "check_params", "check_action", "checked_step", "agent_ends"]


class Environment:
    """Base class: auto-reset on top of the split protocol (or ``reset_env``/``step_env``).

    See the module docstring for the two ways to write an env.
    """

    n_agents: int = 1

    # -- what an env defines ---------------------------------------------------------
    @property
    def default_params(self) -> Any:
        raise NotImplementedError

    def observation_space(self, params: Any = None):
        raise NotImplementedError

    def action_space(self, params: Any = None):
        raise NotImplementedError

    def init(self, key: jax.Array, params: Any) -> Any:
        """A fresh episode's state, not rendered (split protocol)."""
        raise NotImplementedError

    def transition(self, key: jax.Array, state: Any, action: Any, params: Any):
        """Everything of a step before the render (split protocol).

        Returns:
            (state, reward (A,), terminated (), truncated (), info). ``info`` may hold
            ``agent_terminated``/``agent_truncated`` (A,); they default to the env-level
            flags.
        """
        raise NotImplementedError

    def observe(self, state: Any, params: Any):
        """Renders ``state`` (split protocol).

        Returns:
            (obs, state, reward): ``state`` updated from the render, ``reward`` (A,) the
            render-dependent part of the step's reward (ignored for agents whose stream
            ended this step, and after a reset).
        """
        raise NotImplementedError

    # -- composed forms --------------------------------------------------------------
    def reset_env(self, key: jax.Array, params: Any) -> tuple[arrdict, Any]:
        """Starts a fresh episode: (obs, state). ``observe(init(key))`` by default."""
        obs, state, _ = self.observe(self.init(key, params), params)
        return obs, state

    def step_env(self, key: jax.Array, state: Any, action: Any, params: Any):
        """The raw transition, no auto-reset: (obs, state, reward, terminated, truncated, info)."""
        action = self.as_action(action, params)
        state, reward, terminated, truncated, info = self.transition(key, state, action, params)
        info = agent_ends(info, terminated, truncated, self.n_agents)
        obs, state, seen_reward = self.observe(state, params)
        return obs, state, _total_reward(reward, seen_reward, info), terminated, truncated, info

    @property
    def is_split(self) -> bool:
        """Whether this env implements the split protocol (and not its own ``step_env``)."""
        cls = type(self)
        return (cls.transition is not Environment.transition
                and cls.observe is not Environment.observe and cls.init is not Environment.init
                and cls.step_env is Environment.step_env and cls.reset_env is Environment.reset_env)

    # -- the public interface --------------------------------------------------------
    def reset(self, key: jax.Array, params: Optional[Any] = None) -> tuple[arrdict, Any]:
        """Returns (obs, state) of a fresh episode drawn with ``key``."""
        params = self.check_params(params)
        return self.reset_env(key, params)

    def step(self, key: jax.Array, state: Any, action: Any, params: Optional[Any] = None):
        """One transition with auto-reset: where the episode ended (terminated or
        truncated) the returned obs and state are those of a fresh episode.

        Args:
            key: PRNG key.
            state: the state from :meth:`reset` or a previous :meth:`step`.
            action: an arrdict as ``action_space(params)``, or with one action head the
                bare int array (A,) (a scalar when A == 1).
            params: None for ``default_params``.

        Returns:
            (obs, state, reward, terminated, truncated, info).
        """
        key_step, key_reset, action, params = self.prepare_step(key, state, action, params)
        if not self.is_split:
            return _select_step(self, key_step, key_reset, state, action, params)
        state_t, reward, terminated, truncated, info = self.transition(key_step, state, action, params)
        info = agent_ends(info, terminated, truncated, self.n_agents)
        done = jnp.logical_or(terminated, truncated)
        fresh = self.init(key_reset, params)
        state = jax.tree_util.tree_map(lambda f, s: jnp.where(done, f, s), fresh, state_t)
        obs, state, seen_reward = self.observe(state, params)
        return obs, state, _total_reward(reward, seen_reward, info), terminated, truncated, info

    # -- validation --------------------------------------------------------------------
    def prepare_step(self, key: jax.Array, state: Any, action: Any, params: Optional[Any]):
        """A step's checks and keys, shared by ``step`` and the auto-reset wrappers.

        Returns:
            (key_step, key_reset, action as an arrdict, checked params).
        """
        params = self.check_params(params)
        if state is None:
            raise ValueError("state: expected the state returned by reset(...) or step(...), got None "
                             "(call reset first)")
        action = self.as_action(action, params)
        key_step, key_reset = jax.random.split(key)
        return key_step, key_reset, action, params

    def check_params(self, params: Any) -> Any:
        """``params`` (``default_params`` when None), checked; ValueError names the field."""
        default = self.default_params
        if params is None:
            return default
        if dataclasses.is_dataclass(default) and not isinstance(params, type(default)):
            raise ValueError(f"params: expected a {type(default).__name__} (e.g. env.default_params, "
                             f"or .replace(...) of it), got {type(params).__name__}")
        check_params(params)
        return params

    def as_action(self, action: Any, params: Any = None) -> Any:
        """The action as the action space's arrdict; bare ints are accepted for one head.

        Raises:
            ValueError: naming ``action`` where it does not fit the space (concrete values).
        """
        space = self.action_space(params)
        if isinstance(space, dict) and not isinstance(action, dict) and len(space) == 1:
            (name, head), = space.items()
            if isinstance(head, ms.MultiDiscrete):
                a = jnp.asarray(action)
                if a.ndim == 0 and head.n_agents == 1:
                    a = a[None]
                action = arrdict({name: a})
        check_action(space, action)
        return action

    # -- plotting --------------------------------------------------------------------
    def state(self, env_state: Any, params: Optional[Any] = None) -> dotdict:
        """One env's state as a numpy dotdict for :meth:`plot_state` (see megastep_jax.plotting)."""
        raise NotImplementedError

    @classmethod
    def plot_state(cls, state: dotdict, fig=None):
        """Draws a numpy state from :meth:`state`; returns a matplotlib figure.

        A classmethod, so it can be shipped to plotting worker processes without the env.
        """
        from .. import plotting  # deferred: matplotlib is only needed for plots

        return plotting.plot_state(state, fig=fig)

    def display(self, env_state: Any, params: Optional[Any] = None):
        """Plots one env's state: ``plot_state(state(env_state))``."""
        return self.plot_state(self.state(env_state, params))


def agent_ends(info: dict, terminated, truncated, n_agents: int) -> dict:
    """``info`` with ``agent_terminated``/``agent_truncated`` (A,), defaulting to the env's flags.

    An env's own per-agent flags are kept, or-ed with the env-level ones (an episode's
    end ends every agent's stream).
    """
    info = dict(info)
    for name, flag in (("agent_terminated", terminated), ("agent_truncated", truncated)):
        own = info.get(name)
        flag = jnp.broadcast_to(jnp.asarray(flag, bool), (n_agents,))
        info[name] = flag if own is None else jnp.logical_or(own, flag)
    return info


def _total_reward(reward, seen_reward, info):
    """The transition's reward plus the render's, except for agents whose stream ended."""
    ended = info["agent_terminated"] | info["agent_truncated"]
    return (reward + jnp.where(ended, 0.0, seen_reward)).astype(jnp.float32)


def _select_step(env, key_step, key_reset, state, action, params):
    """Auto-reset of a two-method env: both branches, chosen per env with ``jnp.where``."""
    obs_step, state_step, reward, terminated, truncated, info = env.step_env(
        key_step, state, action, params)
    info = agent_ends(info, terminated, truncated, env.n_agents)
    obs_fresh, state_fresh = env.reset_env(key_reset, params)
    done = jnp.logical_or(terminated, truncated)
    pick = lambda f, s: jnp.where(done, f, s)
    obs = jax.tree_util.tree_map(pick, obs_fresh, obs_step)
    state = jax.tree_util.tree_map(pick, state_fresh, state_step)
    return obs, state, reward, terminated, truncated, info


# Ranges of the params fields the demo envs share; other fields need only be finite.
_PARAM_RANGES = {
    "fov": (0.0, 180.0),
    "fps": (0.0, float("inf")),
    "max_steps": (0.0, float("inf")),
    "max_depth": (0.0, float("inf")),
}


def check_params(params: Any) -> None:
    """Raises ValueError naming a params field that is non-finite or out of its range.

    Runs only on concrete values: under ``jit`` or ``vmap`` params are traced and only
    their structure is known (see :func:`checked_step`).
    """
    if isinstance(params, dict):
        raise ValueError(f"params: expected a params dataclass (e.g. env.default_params), got a dict "
                         f"with keys {sorted(params)}")
    fields = getattr(params, "__dataclass_fields__", None)
    if fields is None:
        return
    for name in fields:
        value = getattr(params, name)
        if not validation.is_concrete(value) or not isinstance(value, (int, float, np.ndarray, jax.Array)):
            continue
        v = np.asarray(value)
        if v.dtype.kind not in "fiub":
            continue
        validation.finite(f"params.{name}", v)
        if name in _PARAM_RANGES:
            lo, hi = _PARAM_RANGES[name]
            if np.any(v <= lo) or np.any(v >= hi):
                raise ValueError(f"params.{name}: expected a value in ({lo:g}, {hi:g}), got {value!r}")


def check_action(space: Any, action: Any) -> None:
    """Raises ValueError where an action does not fit the action space.

    Keys, dtypes and shapes are checked always; values only where concrete (out-of-range
    movement indices would otherwise be clipped silently by indexing).
    """
    if isinstance(space, dict):
        if not isinstance(action, dict) or set(action) != set(space):
            raise ValueError(f"action: expected a dict with keys {sorted(space)} (or, with one action "
                             f"head, a bare int array), got "
                             f"{sorted(action) if isinstance(action, dict) else type(action).__name__}")
        for k, s in space.items():
            check_action(s, action[k])
        return
    if not isinstance(space, ms.MultiDiscrete):
        return
    if not hasattr(action, "dtype"):
        action = np.asarray(action)
    if not jnp.issubdtype(action.dtype, jnp.integer):
        raise ValueError(f"action: expected integer actions, got dtype {action.dtype}")
    if tuple(action.shape[-1:]) != (space.n_agents,):
        raise ValueError(f"action: expected shape (..., {space.n_agents}), got {tuple(action.shape)}")
    if validation.is_concrete(action):
        a = np.asarray(action)
        if np.any(a < 0) or np.any(a >= space.n_actions):
            raise ValueError(f"action: expected values in [0, {space.n_actions}), got {a.min()}..{a.max()}")


def _traced_checks(env, action, params) -> None:
    """``checkify.check`` of what :func:`check_params`/:func:`check_action` check eagerly."""
    from jax.experimental import checkify  # deferred: only the checked step needs it

    space = env.action_space(params)
    for k, s in (space.items() if isinstance(space, dict) else [("", space)]):
        if isinstance(s, ms.MultiDiscrete):
            a = action[k] if k else action
            checkify.check(jnp.all((a >= 0) & (a < s.n_actions)),
                           f"action: expected values in [0, {s.n_actions}), got {{lo}}..{{hi}}",
                           lo=jnp.min(a), hi=jnp.max(a))
    for name in getattr(params, "__dataclass_fields__", {}):
        v = jnp.asarray(getattr(params, name))
        if not jnp.issubdtype(v.dtype, jnp.number):
            continue
        checkify.check(jnp.all(jnp.isfinite(v)), f"params.{name}: expected finite values, got {{v}}", v=v)
        if name in _PARAM_RANGES:
            lo, hi = _PARAM_RANGES[name]
            checkify.check(jnp.all((v > lo) & (v < hi)),
                           f"params.{name}: expected a value in ({lo:g}, {hi:g}), got {{v}}", v=v)


def checked_step(env, errors=None) -> Callable:
    """The JAX way to get errors under ``jit``: a jitted, ``checkify``-ed auto-resetting step.

    >>> step = checked_step(env)
    >>> err, (obs, state, reward, terminated, truncated, info) = step(key, state, action, params)
    >>> err.throw()   # raises JaxRuntimeError naming e.g. params.fov or action

    Checks out-of-range actions and params (as the eager ``ValueError`` s do) and, with
    the default ``errors``, NaNs produced anywhere in the step.

    Args:
        env: an env (or wrapper) with ``step``.
        errors: ``checkify`` error set; default ``user_checks | nan_checks``.

    Returns:
        ``step(key, state, action, params) -> (error, outputs)``, jitted.
    """
    from jax.experimental import checkify  # deferred: only the checked step needs it

    errors = (checkify.user_checks | checkify.nan_checks) if errors is None else errors

    def step(key, state, action, params):
        unwrapped = getattr(env, "unwrapped", env)
        action = unwrapped.as_action(action, params)
        _traced_checks(unwrapped, action, params)
        return env.step(key, state, action, params)

    return jax.jit(checkify.checkify(step, errors=errors))
