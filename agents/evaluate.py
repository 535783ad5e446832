"""Evaluation and videos of a trained (or random) policy.

:func:`make_evaluate` runs ``n_envs`` fresh episodes side by side in one jitted loop
and scores each env's FIRST episode, so long and short episodes count once each
(averaging every completed episode would favour short ones). The loop stops as soon as
every first episode has ended, or after ``n_steps`` steps; envs whose first episode is
still running then count with their partial return, a lower bound, and are reported in
``unfinished``.

:func:`record_video` keeps every state of one env under the policy (LSTM carry and all)
and draws them with the env's ``state``/``plot_state`` into an mp4 or gif.
"""
from __future__ import annotations

import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from megastep_jax import spaces

from . import heads
from .networks import ActorCritic, add_previous, uses_previous

__all__ = ["POLICIES", "make_evaluate", "record_video"]

POLICIES = ("sample", "greedy", "random")


def _check(policy: str, n_envs: int, n_steps: int) -> None:
    if policy not in POLICIES:
        raise ValueError(f"policy: expected one of {POLICIES}, got {policy!r}")
    for name, v in (("n_envs", n_envs), ("n_steps", n_steps)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{name}: expected a positive int, got {v!r}")


def _actor(network: ActorCritic, env, policy: str):
    """``act(key, params, carry, obs (B, A, ...), first (B, A)) -> (carry, action)``."""
    action_space = env.action_space(env.default_params)

    def act(key, params, carry, obs, first):
        if policy == "random":
            B = first.shape[0]
            return carry, jax.vmap(lambda k: spaces.sample(action_space, k))(jax.random.split(key, B))
        add_t = lambda x: x[None]
        carry, logits, _ = network.apply(params, carry, jax.tree_util.tree_map(add_t, obs), first[None])
        logits = jax.tree_util.tree_map(lambda x: x[0], logits)
        return carry, heads.mode(logits) if policy == "greedy" else heads.sample(key, logits)

    return act


def _previous(network: ActorCritic, env):
    """``previous(obs, action, reward, first)``: the network's observations from the env's
    (:func:`agents.networks.add_previous` where the network takes them, else ``obs``)."""
    if not uses_previous(network):
        return lambda obs, action, reward, first: obs
    space = env.action_space(env.default_params)
    return lambda obs, action, reward, first: add_previous(obs, action, reward, first, space)


def make_evaluate(network: ActorCritic, env, n_envs: int = 32, n_steps: int = 1000,
                  policy: str = "sample", reset_ratio: int = 1) -> Callable:
    """Builds ``evaluate(key, params, env_params) -> metrics``, jitted.

    Args:
        network: the trained network (``trainer.network``); unused for ``"random"``.
        env: the env to evaluate on, e.g. one built on held-out plans.
        n_envs: episodes scored (one per env).
        n_steps: the most steps each env runs; the loop stops earlier, as soon as every
            env's first episode has ended. Make it longer than the longest episode.
        policy: ``"sample"`` (the stochastic policy as trained), ``"greedy"`` (most
            likely action) or ``"random"`` (uniform over the action space).
        reset_ratio: as in :class:`~agents.ppo.PPOConfig`; resets after the first
            episode do not affect the scores, so a large ratio only saves time.

    Returns:
        A jitted function; its ``params`` are network parameters (any value for
        ``"random"``). ``metrics``: ``episode_return`` (mean over envs and agents of the
        first episode's return), ``episode_length``, ``unfinished`` (fraction of envs
        still in their first episode at the end), ``steps`` (steps run), ``reward`` (mean
        reward per step over the steps run), and ``info/<key>`` means of the env's
        numeric info over the steps run. Step ``t`` uses the ``t``-th of
        ``jax.random.split(key_after_reset, n_steps)``, as the fixed-length scan this
        loop replaced did; with JAX's default (partitionable) threefry that key does not
        depend on ``n_steps``, so caps that both outlast every first episode give the
        same scores.
    """
    _check(policy, n_envs, n_steps)
    A = env.n_agents
    act = _actor(network, env, policy)
    previous = _previous(network, env)
    from megastep_jax.envs.base import Batched

    from .ppo import _info_means
    batched = Batched(env, n_envs, reset_ratio)

    @jax.jit
    def evaluate(key, params, env_params):
        key, k_reset = jax.random.split(key)
        obs, state = batched.reset(k_reset, env_params)
        keys = jax.random.split(key, n_steps)
        carry = network.initial_carry((n_envs, A))
        first = jnp.ones((n_envs, A), bool)
        obs = previous(obs, None, jnp.zeros((n_envs, A)), first)
        ret = jnp.zeros((n_envs, A), jnp.float32)
        length = jnp.zeros((n_envs,), jnp.int32)
        running = jnp.ones((n_envs,), bool)  # still in the first episode

        def advance(c):
            t, obs, state, carry, first, ret, length, running = c
            k_act, k_env = jax.random.split(keys[t])
            carry, action = act(k_act, params, carry, obs, first)
            obs, state, reward, terminated, truncated, info = batched.step(
                k_env, state, action, env_params)
            done = terminated | truncated
            ret = ret + jnp.where(running[:, None], reward, 0.0)
            length = length + running
            running = running & ~done
            first = jnp.broadcast_to(done[:, None], (n_envs, A))
            obs = previous(obs, action, reward, first)
            return (t + 1, obs, state, carry, first, ret, length, running), \
                dict(reward=jnp.mean(reward), **_info_means(info))

        def step(c):
            c, sums = c
            c, out = advance(c)
            return c, jax.tree_util.tree_map(jnp.add, sums, out)

        c = (jnp.zeros((), jnp.int32), obs, state, carry, first, ret, length, running)
        sums = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), jax.eval_shape(advance, c)[1])
        # until every first episode has ended: later steps cannot change the scores
        (t, _, _, _, _, ret, length, running), sums = jax.lax.while_loop(
            lambda c: (c[0][0] < n_steps) & jnp.any(c[0][7]), step, (c, sums))
        steps = t.astype(jnp.float32)  # >= 1: every env starts in its first episode
        return dict(episode_return=jnp.mean(ret), episode_length=jnp.mean(length.astype(jnp.float32)),
                    unfinished=jnp.mean(running.astype(jnp.float32)), steps=t,
                    **jax.tree_util.tree_map(lambda x: x / steps, sums))

    return evaluate


def record_video(network: ActorCritic, params, env, env_params, key, length: int, path: str,
                 policy: str = "sample", fps: float = 10) -> str:
    """Writes a video of one env (plan view and first-person strips) under a policy.

    Uses the env's ``state(env_state, params)`` and ``plot_state`` (see
    :mod:`megastep_jax.plotting`) and :class:`megastep_jax.recording.Encoder`.

    Args:
        network, params: the policy (params unused for ``"random"``).
        env, env_params: one env.
        key: PRNG key.
        length: steps; the video has ``length + 1`` frames.
        path: ``.mp4`` or ``.gif`` file to write.
        policy: as in :func:`make_evaluate`.
        fps: frames per second of the video.

    Returns:
        ``path``.
    """
    from megastep_jax import recording
    from megastep_jax.arrdict import numpyify

    _check(policy, 1, length)
    fmt = os.path.splitext(path)[1].lstrip(".")
    if fmt not in recording.FORMATS:
        raise ValueError(f"path: expected a .mp4 or .gif file name, got {path!r}")
    act = _actor(network, env, policy)
    previous = _previous(network, env)
    A = env.n_agents
    batch = lambda tree: jax.tree_util.tree_map(lambda x: x[None], tree)
    unbatch = lambda tree: jax.tree_util.tree_map(lambda x: x[0], tree)

    @jax.jit
    def run(key):
        key, k_reset = jax.random.split(key)
        obs, state = env.reset(k_reset, env_params)

        def body(c, key):
            obs, state, carry, first, net_obs = c
            k_act, k_env = jax.random.split(key)
            carry, action = act(k_act, params, carry, net_obs, first)
            obs, state, reward, terminated, truncated, _ = env.step(
                k_env, state, unbatch(action), env_params)
            first = jnp.broadcast_to(terminated | truncated, (1, A))
            net_obs = previous(batch(obs), action, reward[None], first)
            return (obs, state, carry, first, net_obs), (obs, state, reward)

        first = jnp.ones((1, A), bool)
        c0 = (obs, state, network.initial_carry((1, A)), first,
              previous(batch(obs), None, jnp.zeros((1, A)), first))
        _, (obss, states, rewards) = jax.lax.scan(body, c0, jax.random.split(key, length))
        cat = lambda a, b: jnp.concatenate([a[None], b])
        return (jax.tree_util.tree_map(cat, obs, obss), jax.tree_util.tree_map(cat, state, states),
                jnp.concatenate([jnp.zeros((1, A)), rewards]))

    obss, states, rewards = jax.device_get(run(key))
    take = lambda tree, t: jax.tree_util.tree_map(lambda x: x[t], tree)
    total = np.cumsum(np.asarray(rewards).mean(-1))
    with recording.Encoder(fps=fps, format=fmt) as encoder:
        for t in range(length + 1):
            s = env.state(take(states, t), env_params)
            if "obs" not in s:
                s["obs"] = numpyify(take(obss, t))
            fig = type(env).plot_state(s)
            fig.suptitle(f"step {t}   return {total[t]:.2f}")
            encoder(fig)
    return encoder.save(path)
