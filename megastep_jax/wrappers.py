"""Functional wrappers: each wraps an env and is itself an env with the same interface.

Wrappers transform the auto-resetting ``reset(key, params)`` and ``step(key, state,
action, params)``; their state wraps the inner env's state (``state.env_state``). They
compose in any order, e.g.::

    env = EpisodeStatistics(FrameStack(NormalizeObservation(Explorer()), 4))

and :class:`LegacyStep`, which changes the return convention, goes outermost;
:class:`FinalObservation`, which needs the env's raw ``step_env``, goes innermost.
Attributes a wrapper does not define (``n_agents``, ``default_params``, ``state``...) are
the inner env's.

Episode ends are per agent: every wrapper honours ``info["agent_terminated"]`` and
``info["agent_truncated"]`` (A,) (see :mod:`megastep_jax.envs.protocol`), so in
Deathmatch an agent that respawns ends its own episode statistics and frame stack.

All are written for one env; ``jax.vmap`` them (or wrap them in
:class:`~megastep_jax.envs.base.Batched`) for many.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
from flax import struct

from . import spaces
from .arrdict import arrdict, dotdict
from . import validation
from .envs.protocol import Environment, _select_step, agent_ends

__all__ = ["Wrapper", "FinalObservation", "NextStepAutoReset", "EpisodeStatistics", "NormalizeObservation", "FrameStack",
           "LegacyStep"]


class Wrapper(Environment):
    """Forwards everything to ``env``; subclasses override what they change."""

    def __init__(self, env: Environment):
        self.env = env

    def __getattr__(self, name):
        if name == "env":  # not yet set: avoid infinite recursion during unpickling
            raise AttributeError(name)
        return getattr(self.env, name)

    @property
    def n_agents(self) -> int:
        return self.env.n_agents

    @property
    def default_params(self):
        return self.env.default_params

    @property
    def unwrapped(self) -> Environment:
        env = self.env
        while isinstance(env, Wrapper):
            env = env.env
        return env

    def observation_space(self, params=None):
        return self.env.observation_space(params)

    def action_space(self, params=None):
        return self.env.action_space(params)

    def reset(self, key, params=None):
        return self.env.reset(key, params)

    def step(self, key, state, action, params=None):
        return self.env.step(key, state, action, params)

    def reset_env(self, key, params):
        raise NotImplementedError(
            f"{type(self).__name__} transforms reset/step; call reset_env on the inner env "
            "(wrapper.unwrapped)")

    def step_env(self, key, state, action, params):
        raise NotImplementedError(
            f"{type(self).__name__} transforms reset/step; call step_env on the inner env "
            "(wrapper.unwrapped)")

    def state(self, env_state, params=None):
        """The inner env's numpy plot state (``plot_state`` is the base classmethod)."""
        return self.env.state(env_state.env_state, params)


def agent_done(info, terminated, truncated, n_agents: int) -> jax.Array:
    """bool (A,): where each agent's stream of experience ended this step."""
    info = agent_ends(info, terminated, truncated, n_agents)
    return info["agent_terminated"] | info["agent_truncated"]


class FinalObservation(Wrapper):
    """Adds ``info["final_observation"]``: the ended episode's last observation where the
    episode ended, else the step's observation.

    It costs a second render on every step under ``vmap`` (the ended episode's last state
    and the fresh one are both rendered), which is why the envs do not compute it by
    default. Wrap the env itself (innermost): it needs the env's raw ``step_env``. Its
    ``step`` is otherwise exactly the env's.
    """

    def reset_env(self, key, params):
        return self.env.reset_env(key, params)

    def step_env(self, key, state, action, params):
        obs, state, reward, terminated, truncated, info = self.env.step_env(key, state, action, params)
        return obs, state, reward, terminated, truncated, dict(info, final_observation=obs)

    def state(self, env_state, params=None):
        return self.env.state(env_state, params)  # the state is the inner env's, unwrapped

    def step(self, key, state, action, params=None):
        env = self.env
        key_step, key_reset, action, params = env.prepare_step(key, state, action, params)
        return _select_step(self, key_step, key_reset, state, action, params)


@struct.dataclass
class NextStepAutoResetState:
    env_state: Any
    ended: jax.Array   # () bool, the last step ended the episode: this step resets


class NextStepAutoReset(Wrapper):
    """gymnasium 1.x's next-step auto-reset: the step that ends an episode returns that
    episode's own last observation; the step after it returns a fresh episode's first
    observation, with reward 0 and no episode end, and ignores its action.

    Still one render per step (so the ended episode's last observation comes free, unlike
    :class:`FinalObservation`). Needs an env written in the split protocol
    (``init``/``transition``/``observe``). Per-agent ends inside an episode (Deathmatch's
    respawns) stay same-step: the respawned agent's observation is its new life's.
    ``Batched(env, n, autoreset="next_step")`` wraps the env in it.
    """

    def __init__(self, env):
        super().__init__(env)
        if not getattr(env, "is_split", False):
            raise ValueError(f"env: next-step auto-reset needs an env with init/transition/observe; "
                             f"{type(env).__name__} has none")

    def reset(self, key, params=None):
        obs, env_state = self.env.reset(key, params)
        return obs, NextStepAutoResetState(env_state, jnp.zeros((), bool))

    def step(self, key, state, action, params=None):
        env = self.env
        key_step, key_reset, action, params = env.prepare_step(key, state, action, params)
        state_t, reward, terminated, truncated, info = env.transition(key_step, state.env_state, action, params)
        info = agent_ends(info, terminated, truncated, self.n_agents)
        fresh = env.init(key_reset, params)
        ended = state.ended
        env_state = jax.tree_util.tree_map(lambda f, s: jnp.where(ended, f, s), fresh, state_t)
        obs, env_state, seen_reward = env.observe(env_state, params)
        episode_end = terminated | truncated
        # an agent whose stream ended inside the episode (a respawn) gets no render reward
        inside = (info["agent_terminated"] | info["agent_truncated"]) & ~episode_end
        reward = jnp.where(ended, 0.0, reward + jnp.where(inside, 0.0, seen_reward)).astype(jnp.float32)
        no = lambda x: jnp.where(ended, False, x)
        terminated, truncated = no(terminated), no(truncated)
        info = dict(info, agent_terminated=no(info["agent_terminated"]),
                    agent_truncated=no(info["agent_truncated"]))
        return obs, NextStepAutoResetState(env_state, terminated | truncated), reward, terminated, truncated, info

    def state(self, env_state, params=None):
        return self.env.state(env_state.env_state, params)


@struct.dataclass
class EpisodeStatisticsState:
    env_state: Any
    episode_returns: jax.Array   # (A,) float32, running return of each agent's current episode
    episode_lengths: jax.Array   # (A,) int32
    returned_episode_returns: jax.Array  # (A,) float32, return of each agent's last finished episode
    returned_episode_lengths: jax.Array  # (A,) int32


class EpisodeStatistics(Wrapper):
    """Tracks episode returns and lengths, per agent.

    ``info`` gains ``returned_episode`` (bool (A,), true on the step that ends that agent's
    episode: ``agent_terminated | agent_truncated``), ``returned_episode_returns`` (A,)
    and ``returned_episode_lengths`` (A,) (those of each agent's last finished episode, as
    purejaxrl's LogWrapper), and ``episode_returns``/``episode_lengths`` (A,) of the
    episode in progress (before the auto-reset). In single-stream envs every agent's
    episode is the env's.
    """

    def reset(self, key, params=None):
        obs, env_state = self.env.reset(key, params)
        A = self.n_agents
        zf, zi = jnp.zeros((A,), jnp.float32), jnp.zeros((A,), jnp.int32)
        return obs, EpisodeStatisticsState(env_state, zf, zi, zf, zi)

    def step(self, key, state, action, params=None):
        obs, env_state, reward, terminated, truncated, info = self.env.step(
            key, state.env_state, action, params)
        done = agent_done(info, terminated, truncated, self.n_agents)
        returns = state.episode_returns + reward.astype(jnp.float32)
        lengths = state.episode_lengths + 1
        new = EpisodeStatisticsState(
            env_state=env_state,
            episode_returns=jnp.where(done, 0.0, returns),
            episode_lengths=jnp.where(done, 0, lengths),
            returned_episode_returns=jnp.where(done, returns, state.returned_episode_returns),
            returned_episode_lengths=jnp.where(done, lengths, state.returned_episode_lengths))
        info = dict(info, returned_episode=done, episode_returns=returns, episode_lengths=lengths,
                    returned_episode_returns=new.returned_episode_returns,
                    returned_episode_lengths=new.returned_episode_lengths)
        return obs, new, reward, terminated, truncated, info


@struct.dataclass
class RunningMoments:
    """Welford statistics of every observation leaf, over all its axes but the last ones."""

    count: jax.Array  # () float32
    mean: Any         # arrdict like obs, each leaf of the obs leaf's shape
    var: Any          # arrdict like obs


@struct.dataclass
class NormalizeObservationState:
    env_state: Any
    moments: RunningMoments


class NormalizeObservation(Wrapper):
    """Normalises observations by running mean and variance: ``(x - mean)/sqrt(var + eps)``.

    Statistics are per element of each observation (per agent, channel and pixel) and
    updated with every observation the wrapper returns, starting at the reset. Under
    ``vmap`` each env keeps its own; pass ``axis_name`` (and ``vmap(..., axis_name=...)``)
    to pool them over the batch instead, as a vectorised normaliser does.

    Normalised values are clipped to ``[-clip, clip]``, and ``observation_space`` reports
    those bounds for the normalised keys (same shapes, float32).

    Args:
        env: the env.
        keys: which observation keys to normalise (default: all).
        clip: clip the normalised values to this magnitude.
        eps: variance floor.
        axis_name: a vmap axis to pool statistics over.
    """

    def __init__(self, env, keys: Optional[Sequence[str]] = None, clip: float = 10.0,
                 eps: float = 1e-8, axis_name: Optional[str] = None):
        super().__init__(env)
        self.keys = None if keys is None else tuple(keys)
        self.clip, self.eps, self.axis_name = float(clip), float(eps), axis_name

    def _selected(self, obs):
        return [k for k in obs if self.keys is None or k in self.keys]

    def _update(self, moments: RunningMoments, obs):
        keys = self._selected(obs)
        x = {k: obs[k].astype(jnp.float32) for k in keys}
        n = jnp.float32(1.0)
        if self.axis_name is not None:
            n = jax.lax.psum(n, self.axis_name)
            batch_mean = {k: jax.lax.pmean(v, self.axis_name) for k, v in x.items()}
            batch_var = {k: jax.lax.pmean((v - batch_mean[k]) ** 2, self.axis_name) for k, v in x.items()}
        else:
            batch_mean, batch_var = x, {k: jnp.zeros_like(v) for k, v in x.items()}
        total = moments.count + n
        mean, var = dict(moments.mean), dict(moments.var)
        for k in keys:
            delta = batch_mean[k] - mean[k]
            mean[k] = mean[k] + delta * n / total
            m2 = var[k] * moments.count + batch_var[k] * n + delta ** 2 * moments.count * n / total
            var[k] = m2 / total
        return RunningMoments(count=total, mean=arrdict(mean), var=arrdict(var))

    def _normalise(self, moments, obs):
        out = arrdict(obs)
        for k in self._selected(obs):
            z = (obs[k] - moments.mean[k]) / jnp.sqrt(moments.var[k] + self.eps)
            out[k] = jnp.clip(z, -self.clip, self.clip).astype(jnp.float32)
        return out

    def observation_space(self, params=None):
        space = self.env.observation_space(params)
        out = dotdict(space)
        for k in self._selected(space):
            s = space[k]
            out[k] = spaces.Box(s.shape, -self.clip, self.clip)
        return out

    def reset(self, key, params=None):
        obs, env_state = self.env.reset(key, params)
        keys = self._selected(obs)
        zeros = arrdict({k: jnp.zeros(obs[k].shape, jnp.float32) for k in keys})
        moments = self._update(RunningMoments(jnp.float32(0.0), zeros, zeros), obs)
        return self._normalise(moments, obs), NormalizeObservationState(env_state, moments)

    def step(self, key, state, action, params=None):
        obs, env_state, reward, terminated, truncated, info = self.env.step(
            key, state.env_state, action, params)
        moments = self._update(state.moments, obs)
        info = dict(info)
        if "final_observation" in info:
            info["final_observation"] = self._normalise(moments, info["final_observation"])
        return (self._normalise(moments, obs), NormalizeObservationState(env_state, moments),
                reward, terminated, truncated, info)


@struct.dataclass
class FrameStackState:
    env_state: Any
    frames: Any   # arrdict like obs, each leaf with the channel axis n_frames times longer


class FrameStack(Wrapper):
    """Stacks the last ``n_frames`` observations along the channel axis (newest last).

    Images (A, C, H, W) become (A, n*C, H, W); vectors (A, D) become (A, n*D). At a reset,
    and for each agent whose stream ended (``agent_terminated | agent_truncated``), the
    stack is filled with copies of the first observation. Where the inner env gives
    ``info["final_observation"]`` (see :class:`FinalObservation`), it becomes the stack
    ending in the final observation.
    """

    def __init__(self, env, n_frames: int = 4):
        super().__init__(env)
        self.n_frames = validation.positive_int("n_frames", n_frames)

    def observation_space(self, params=None):
        space = self.env.observation_space(params)
        n = self.n_frames
        out = dotdict()
        for k, s in space.items():
            if isinstance(s, spaces.MultiImage):
                out[k] = spaces.MultiImage(s.n_agents, n * s.channels, s.height, s.width)
            elif isinstance(s, spaces.MultiVector):
                out[k] = spaces.MultiVector(s.n_agents, n * s.dim, s.low, s.high)
            elif isinstance(s, spaces.Box) and len(s.shape) >= 2:
                out[k] = spaces.Box((s.shape[0], n * s.shape[1], *s.shape[2:]), s.low, s.high)
            else:
                raise ValueError(f"env: cannot stack observation {k!r} of space {s!r}")
        return out

    def _fill(self, obs):
        return arrdict({k: jnp.concatenate([v] * self.n_frames, axis=1) for k, v in obs.items()})

    def _push(self, frames, obs):
        return arrdict({k: jnp.concatenate([frames[k][:, v.shape[1]:], v], axis=1)
                        for k, v in obs.items()})

    def reset(self, key, params=None):
        obs, env_state = self.env.reset(key, params)
        frames = self._fill(obs)
        return frames, FrameStackState(env_state, frames)

    def step(self, key, state, action, params=None):
        obs, env_state, reward, terminated, truncated, info = self.env.step(
            key, state.env_state, action, params)
        done = agent_done(info, terminated, truncated, self.n_agents)
        info = dict(info)
        if "final_observation" in info:
            info["final_observation"] = self._push(state.frames, info["final_observation"])

        def pick(f, c):
            return jnp.where(done.reshape(-1, *([1] * (c.ndim - 1))), f, c)

        frames = jax.tree_util.tree_map(pick, self._fill(obs), self._push(state.frames, obs))
        return frames, FrameStackState(env_state, frames), reward, terminated, truncated, info


class LegacyStep(Wrapper):
    """gymnax's original convention, for craftax/purejaxrl code: a 5-tuple step.

    ``step`` returns ``(obs, state, reward, done, info)`` with ``done = terminated |
    truncated``; ``info`` keeps ``terminated`` and ``truncated`` (and
    ``final_observation`` where :class:`FinalObservation` added it).
    ``reset`` is unchanged. Wrap it outermost; its state is the inner env's state.
    """

    def state(self, env_state, params=None):
        return self.env.state(env_state, params)

    def step(self, key, state, action, params=None):
        obs, state, reward, terminated, truncated, info = self.env.step(key, state, action, params)
        info = dict(info, terminated=terminated, truncated=truncated)
        return obs, state, reward, terminated | truncated, info
