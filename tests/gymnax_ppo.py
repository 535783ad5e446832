"""A small PPO written the way gymnax users write theirs (one jitted ``train(key)`` of nested
``lax.scan``s over a vmapped env), to show our gymnax adapter runs inside such code.

Nothing here knows about megastep_jax: it takes any gymnax env with a ``Discrete`` action
space and a flat ``Box`` observation space.
"""
from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training.train_state import TrainState


def _init(scale):
    # scaled normal rather than orthogonal: jaxlib 0.10.2's batched QR can hang under vmap on
    # CPU (see the project's notes on vmapping training over seeds), and a test vmaps this
    return nn.initializers.variance_scaling(scale, "fan_in", "truncated_normal")


class ActorCritic(nn.Module):
    n_actions: int
    hidden: int = 64

    @nn.compact
    def __call__(self, x):
        a = nn.tanh(nn.Dense(self.hidden, kernel_init=_init(2.0))(x))
        a = nn.tanh(nn.Dense(self.hidden, kernel_init=_init(2.0))(a))
        logits = nn.Dense(self.n_actions, kernel_init=_init(1e-4))(a)
        v = nn.tanh(nn.Dense(self.hidden, kernel_init=_init(2.0))(x))
        v = nn.tanh(nn.Dense(self.hidden, kernel_init=_init(2.0))(v))
        return logits, nn.Dense(1, kernel_init=_init(1.0))(v)[..., 0]


class Transition(NamedTuple):
    obs: jax.Array
    action: jax.Array
    log_prob: jax.Array
    value: jax.Array
    reward: jax.Array
    done: jax.Array
    info: dict


def make_train(env, env_params, *, n_envs=8, n_steps=16, n_updates=2, n_epochs=2, n_minibatches=2,
               lr=3e-4, gamma=0.99, lam=0.95, clip=0.2, ent_coef=0.01, vf_coef=0.5, hidden=64,
               legacy=False, random_policy=False):
    """``train(key) -> (train_state, metrics)``; metrics are the rollouts' infos and rewards,
    each (n_updates, n_steps, n_envs). ``legacy``: the env's step is the 5-tuple one.
    ``random_policy``: act uniformly at random and skip the updates (the baseline)."""
    n_actions = env.action_space(env_params).n
    obs_size = int(np.prod(env.observation_space(env_params).shape))
    network = ActorCritic(n_actions, hidden)
    batch = n_envs * n_steps

    def env_step(key, state, action):
        keys = jax.random.split(key, n_envs)
        out = jax.vmap(env.step, in_axes=(0, 0, 0, None))(keys, state, action, env_params)
        if legacy:
            obs, state, reward, done, info = out
        else:
            obs, state, reward, terminated, truncated, info = out
            done = terminated | truncated
        return obs, state, reward, done, info

    def train(key):
        key, k_init, k_reset = jax.random.split(key, 3)
        params = network.init(k_init, jnp.zeros((obs_size,)))
        tx = optax.chain(optax.clip_by_global_norm(0.5), optax.adam(lr, eps=1e-5))
        ts = TrainState.create(apply_fn=network.apply, params=params, tx=tx)
        obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(k_reset, n_envs), env_params)

        def update(runner, _):
            ts, env_state, obs, key = runner

            def rollout_step(carry, _):
                ts, env_state, obs, key = carry
                key, k_act, k_step = jax.random.split(key, 3)
                logits, value = network.apply(ts.params, obs)
                if random_policy:
                    logits = jnp.zeros_like(logits)
                action = jax.random.categorical(k_act, logits)
                log_prob = jnp.take_along_axis(jax.nn.log_softmax(logits), action[:, None], -1)[:, 0]
                next_obs, env_state, reward, done, info = env_step(k_step, env_state, action)
                return (ts, env_state, next_obs, key), Transition(obs, action, log_prob, value, reward, done, info)

            (ts, env_state, obs, key), traj = jax.lax.scan(rollout_step, (ts, env_state, obs, key), None, n_steps)
            _, last_value = network.apply(ts.params, obs)

            def gae_step(carry, t):
                gae, next_value = carry
                delta = t.reward + gamma * next_value * (1 - t.done) - t.value
                gae = delta + gamma * lam * (1 - t.done) * gae
                return (gae, t.value), gae

            _, advantages = jax.lax.scan(gae_step, (jnp.zeros_like(last_value), last_value), traj, reverse=True)
            targets = advantages + traj.value

            def loss_fn(params, t, adv, target):
                logits, value = network.apply(params, t.obs)
                logp_all = jax.nn.log_softmax(logits)
                logp = jnp.take_along_axis(logp_all, t.action[:, None], -1)[:, 0]
                ratio = jnp.exp(logp - t.log_prob)
                adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                pg = -jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - clip, 1 + clip) * adv).mean()
                v_clipped = t.value + jnp.clip(value - t.value, -clip, clip)
                vf = 0.5 * jnp.maximum((value - target) ** 2, (v_clipped - target) ** 2).mean()
                entropy = -(jnp.exp(logp_all) * logp_all).sum(-1).mean()
                return pg + vf_coef * vf - ent_coef * entropy

            def epoch(carry, _):
                ts, key = carry
                key, k_perm = jax.random.split(key)
                perm = jax.random.permutation(k_perm, batch)
                flat = jax.tree_util.tree_map(lambda x: x.reshape((batch,) + x.shape[2:]),
                                              (traj._replace(info={}), advantages, targets))
                shuffled = jax.tree_util.tree_map(
                    lambda x: x[perm].reshape((n_minibatches, -1) + x.shape[1:]), flat)

                def minibatch(ts, mb):
                    grads = jax.grad(loss_fn)(ts.params, *mb)
                    return ts.apply_gradients(grads=grads), None

                ts, _ = jax.lax.scan(minibatch, ts, shuffled)
                return (ts, key), None

            if not random_policy:
                (ts, key), _ = jax.lax.scan(epoch, (ts, key), None, n_epochs)
            metrics = dict(traj.info, reward=traj.reward, done=traj.done)
            return (ts, env_state, obs, key), metrics

        (ts, *_), metrics = jax.lax.scan(update, (ts, env_state, obs, key), None, n_updates)
        return ts, metrics

    return train


def make_evaluate(env, env_params, *, n_envs=32, n_steps=200, hidden=64):
    """``evaluate(params, key) -> reward per step`` over ``n_steps`` from fresh resets of
    ``n_envs`` envs, sampling the policy's actions; ``params=None`` acts uniformly at random."""
    network = ActorCritic(env.action_space(env_params).n, hidden)

    def evaluate(params, key):
        key, k_reset = jax.random.split(key)
        obs, state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(k_reset, n_envs), env_params)

        def step(carry, _):
            obs, state, key = carry
            key, k_act, k_step = jax.random.split(key, 3)
            logits = (jnp.zeros((n_envs, network.n_actions)) if params is None
                      else network.apply(params, obs)[0])
            action = jax.random.categorical(k_act, logits)
            out = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
                jax.random.split(k_step, n_envs), state, action, env_params)
            return (out[0], out[1], key), out[2]

        _, rewards = jax.lax.scan(step, (obs, state, key), None, n_steps)
        return rewards.mean()

    return evaluate
