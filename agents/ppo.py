"""Proximal policy optimisation, compiled end to end.

Read top to bottom: the frozen config, the runner state, then the algorithm as small pure
functions (:func:`act`, :func:`rollout`, :func:`gae`, :func:`ppo_loss`,
:func:`minibatch_update`, :func:`epoch`, :func:`update`: one PPO iteration), the sharding
apart from it (:class:`EnvSharding`), and :func:`make_trainer`, which binds them to an env;
its ``train`` runs ``config.n_updates`` iterations inside one ``jax.jit``. Env params are
passed in, never stored::

    train = ppo.make_train(ppo.PPOConfig(n_envs=64), env)
    runner, metrics = train(jax.random.PRNGKey(0), env.default_params)

    # several seeds (or env-param settings) at once
    runners, metrics = jax.vmap(train, in_axes=(0, None))(jax.random.split(key, 4), params)

Streams: each (env, agent) pair is one stream of experience; agents of one env share the
network's parameters. A stream's episode ends where ``info["agent_terminated"] |
info["agent_truncated"]`` (a Deathmatch agent that dies ends its stream alone): GAE is
cut and the recurrent carry reset for that (env, agent) only. Envs are sharded over ``jax.devices()`` along their leading axis
(``jax.sharding``), so more devices, or hosts joined with ``jax.distributed``, add
throughput with no new code.

For a command line that shows progress and checkpoints, ``trainer.run(runner, params, n)``
does ``n`` updates per compiled call; the runner holds everything (parameters, optimiser,
env states, recurrent carries, PRNG key), so running 2 x 5 updates, with a save and load
between, gives bit for bit the result of 10 (see :func:`save` and :func:`load`).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from . import heads
from .initializers import one_at_a_time
from .networks import INTAKES, ActorCritic, add_previous, previous_space

__all__ = ["PPOConfig", "RewardStats", "Runner", "Transition", "stream_ends", "act", "rollout", "gae",
           "ent_coef_at", "ppo_loss", "minibatch_update", "epoch", "update", "EnvSharding", "Trainer",
           "make_trainer", "make_train", "print_progress", "to_host", "save", "load"]


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """Every setting of a PPO run. Frozen and hashable, so it can be a static argument.

    Attributes:
        n_envs: envs stepped in parallel (each with the env's A agents).
        n_steps: steps per env in each rollout.
        n_updates: PPO iterations that ``train`` runs (and over which ``anneal_lr`` decays).
        n_epochs: passes over each rollout.
        n_minibatches: minibatches per epoch; they split the n_envs * A streams.
        lr: Adam learning rate.
        anneal_lr: decay the learning rate linearly to 0 over ``n_updates``.
        adam_eps: Adam's epsilon.
        max_grad_norm: gradients are clipped to this global norm.
        gamma: discount.
        gae_lambda: GAE's lambda.
        clip_eps: PPO's ratio clip (also the value clip when ``clip_value``).
        clip_value: clip the value loss around the rollout's values, as PPO2 does.
        vf_coef: weight of the value loss.
        ent_coef: weight of the entropy bonus (at the start, where ``ent_coef_final`` is set).
        ent_coef_final: None for a constant entropy weight; else the weight moves linearly
            from ``ent_coef`` to this value as the learning rate is annealed: the weight is
            ``ent_coef_final + (ent_coef - ent_coef_final) * f`` where ``f`` is the lr's
            fraction of ``lr`` (the schedule's, with ``anneal_lr``, times the runner's
            ``lr_scale``, which the command line lowers over its time budget). With neither
            annealing, ``f`` is 1 and the weight stays ``ent_coef``. See :func:`ent_coef_at`.
        normalize_advantages: standardise advantages per minibatch.
        normalize_rewards: divide the rewards the learner sees by the running standard
            deviation of each stream's discounted return (:class:`RewardStats`, kept in
            the runner), so values and their clip stay near unit scale whatever the
            env's reward scale; episode statistics stay in the env's units.
        bootstrap_truncated: at a truncation, bootstrap from the value of
            ``info["final_observation"]`` (one more network call per step) instead of
            treating the truncation as the end of the return.
        width: features of the network's layers.
        core: ``"lstm"``, ``"gru"`` or ``"mlp"``.
        intake: ``"unfold"`` (image convolutions as matrix products, faster on CPU) or
            ``"conv"``; same parameters and function (see :mod:`agents.networks`); or
            ``"stacked"`` / ``"merged"`` (same-sized images as one strip; and the vectors
            as one vector).
        image_kwargs: (name, value) pairs for the image intakes, e.g. smaller convolutions.
        critic_keys: observation keys that only the critic sees (asymmetric actor-critic,
            :class:`agents.networks.ActorCritic`), e.g. ``("budget",)`` with
            ``Explorer(budget_obs=True)``.
        prev_action_reward: the network also sees each stream's previous action (one-hot)
            and reward (zeros at an episode's start) as two more observation keys
            (:func:`agents.networks.add_previous`): a cheap memory for the MLP core.
        stack: the core sees the intake's features of this many steps (the current one
            and those before it in the episode, :func:`agents.networks.stack_history`): a
            frame stack inside the agent, a cheap memory for the MLP core; 1 for none.
        obs_norm: (key, shift, scale) triples: the network reads a dict observation's key
            as ``(obs[key] - shift) / scale`` (:class:`agents.networks.ActorCritic`); keys
            may include ``prev_action`` / ``prev_reward`` with ``prev_action_reward``.
        shard: shard the envs over ``jax.devices()`` (needs n_envs divisible by their count).
        reset_ratio: auto-reset through :class:`megastep_jax.envs.base.Batched`: 1 is
            exactly ``vmap(env.step)`` (under vmap every env renders a fresh episode every
            step, used or not); k > 1 renders ``n_envs / k`` fresh episodes per step and
            hands them to the envs that ended (craftax's optimistic resets).
    """

    n_envs: int = 64
    n_steps: int = 32
    n_updates: int = 100
    n_epochs: int = 4
    n_minibatches: int = 4
    lr: float = 3e-4
    anneal_lr: bool = False
    adam_eps: float = 1e-5
    max_grad_norm: float = 0.5
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_eps: float = 0.2
    clip_value: bool = True
    vf_coef: float = 0.5
    ent_coef: float = 0.01
    ent_coef_final: float | None = None
    normalize_advantages: bool = True
    normalize_rewards: bool = False
    bootstrap_truncated: bool = False
    width: int = 128
    core: str = "lstm"
    intake: str = "unfold"
    image_kwargs: tuple = ()
    prev_action_reward: bool = False
    critic_keys: tuple = ()
    stack: int = 1
    obs_norm: tuple = ()
    shard: bool = True
    reset_ratio: int = 1

    def __post_init__(self):
        for name in ("n_envs", "n_steps", "n_updates", "n_epochs", "n_minibatches", "width",
                     "reset_ratio", "stack"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"{name}: expected a positive int, got {v!r}")
        for name in ("lr", "adam_eps", "max_grad_norm", "clip_eps"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and v > 0 and np.isfinite(v)):
                raise ValueError(f"{name}: expected a positive finite number, got {v!r}")
        for name in ("gamma", "gae_lambda"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0 <= v <= 1):
                raise ValueError(f"{name}: expected a number in [0, 1], got {v!r}")
        for name in ("vf_coef", "ent_coef"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and v >= 0):
                raise ValueError(f"{name}: expected a number >= 0, got {v!r}")
        if self.ent_coef_final is not None and not (
                isinstance(self.ent_coef_final, (int, float)) and not isinstance(self.ent_coef_final, bool)
                and 0 <= self.ent_coef_final < np.inf):
            raise ValueError(f"ent_coef_final: expected None or a finite number >= 0, "
                             f"got {self.ent_coef_final!r}")
        if self.intake not in INTAKES:
            raise ValueError(f"intake: expected one of {INTAKES}, got {self.intake!r}")
        if self.core not in ("lstm", "gru", "mlp"):
            raise ValueError(f"core: expected 'lstm', 'gru' or 'mlp', got {self.core!r}")
        if not (isinstance(self.critic_keys, tuple) and all(isinstance(k, str) for k in self.critic_keys)):
            raise ValueError(f"critic_keys: expected a tuple of observation keys, got {self.critic_keys!r}")
        if not isinstance(self.image_kwargs, tuple):
            raise ValueError(f"image_kwargs: expected a tuple of (name, value) pairs, "
                             f"got {type(self.image_kwargs).__name__}")

    @property
    def steps_per_update(self) -> int:
        """Env steps (of all agents together) per PPO iteration."""
        return self.n_envs * self.n_steps


@struct.dataclass
class RewardStats:
    """Running moments of the streams' discounted returns, for reward normalisation.

    The runner's ``discounted_return`` (E, A) accumulates each stream's rewards
    discounted by gamma since its episode started; ``count``, ``mean`` and ``var`` are the
    running moments of every value it took (the parallel-variance update, one batch per
    rollout). All leaves are scalars.
    """

    count: jax.Array        # () float32, values seen (starts at a small epsilon)
    mean: jax.Array         # () float32
    var: jax.Array          # () float32

    @classmethod
    def zeros(cls) -> "RewardStats":
        return cls(count=jnp.full((), 1e-4, jnp.float32), mean=jnp.zeros((), jnp.float32),
                   var=jnp.ones((), jnp.float32))

    def updated(self, values: jax.Array) -> "RewardStats":
        """With the moments of ``values`` (any shape) folded in."""
        n = jnp.asarray(values.size, jnp.float32)
        mean, var = jnp.mean(values), jnp.var(values)
        total = self.count + n
        delta = mean - self.mean
        m2 = self.var * self.count + var * n + jnp.square(delta) * self.count * n / total
        return self.replace(count=total, mean=self.mean + delta * n / total, var=m2 / total)

    def scale(self, reward: jax.Array) -> jax.Array:
        """Rewards divided by the returns' running standard deviation."""
        return reward / jnp.sqrt(self.var + 1e-8)


@struct.dataclass
class Runner:
    """Everything a training run carries between updates; E envs, A agents each."""

    params: Any                   # network parameters
    opt_state: Any                # optax state
    env_state: Any                # env states, leading axis E
    obs: Any                      # arrdict of (E, A, ...), the latest observations
    first: jax.Array              # (E, A) bool, obs starts that stream's episode
    carry: Any                    # core carry, (E, A, width) leaves or ()
    episode_return: jax.Array     # (E, A) float32, return so far of each stream's episode
    episode_length: jax.Array     # (E, A) int32, steps so far of each stream's episode
    discounted_return: jax.Array  # (E, A) float32, discounted reward so far of each stream's episode
    reward_stats: RewardStats     # running moments of discounted_return's values
    lr_scale: jax.Array           # () float32, multiplies the learning rate (1 unless a caller
                                  # anneals it, e.g. the command line over its time budget)
    key: jax.Array                # PRNG key
    update: jax.Array             # () int32, updates done


class Transition(NamedTuple):
    """One rollout step of every stream; leaves gain a leading T axis in the rollout."""

    obs: Any                # arrdict of (E, A, ...)
    first: jax.Array        # (E, A) bool, obs starts the stream's episode
    action: Any             # tree of (E, A) int32
    log_prob: jax.Array     # (E, A) float32, under the acting policy
    value: jax.Array        # (E, A) float32, of obs
    reward: jax.Array       # (E, A) float32
    done: jax.Array         # (E, A) bool, the stream's episode ended on this step
    next_value: jax.Array   # (E, A) float32, value to bootstrap from where done (0 or V(final obs))


# -- the algorithm, as small pure functions -------------------------------------------
# Each takes the frozen config and the pieces it needs (network, optimiser, env step) as
# arguments; make_trainer binds them. Read top to bottom: acting, the rollout, GAE, the
# loss, a minibatch update, the epochs, one whole update.

def stream_ends(info, terminated, truncated):
    """Where each (env, agent) stream ended: (agent_terminated, agent_truncated), (E, A).

    From ``info["agent_terminated"]`` / ``info["agent_truncated"]`` (per agent: a
    Deathmatch agent that respawns ends its stream alone); an env whose info lacks them
    has its env-level flags (E,) broadcast to every agent.
    """
    def per_agent(name, flag):
        own = info.get(name) if isinstance(info, dict) else None
        if own is not None:
            return jnp.asarray(own, bool)
        return jnp.asarray(flag, bool)[:, None]
    term = per_agent("agent_terminated", terminated)
    trunc = per_agent("agent_truncated", truncated)
    shape = jnp.broadcast_shapes(term.shape, trunc.shape)
    return jnp.broadcast_to(term, shape), jnp.broadcast_to(trunc, shape)


def act(network, params, carry, obs, first):
    """One step of every stream: obs (E, A, ...), first (E, A) -> (carry, logits, value (E, A))."""
    add_t = lambda x: x[None]
    carry, logits, value = network.apply(params, carry, jax.tree_util.tree_map(add_t, obs),
                                         first[None])
    return carry, jax.tree_util.tree_map(lambda x: x[0], logits), value[0]


def rollout(config: PPOConfig, network, env_step, constrain, runner: Runner, env_params):
    """``config.n_steps`` steps of every stream under the current policy.

    Returns:
        (runner after the steps, its reward statistics updated with the rollout's
        discounted returns; Transition with leaves (T, E, A, ...), rewards in the env's
        units; episode statistics summed over the rollout).
    """
    def step(carry_, _):
        r, stats = carry_
        key, k_act, k_env = jax.random.split(r.key, 3)
        carry, logits, value = act(network, r.params, r.carry, r.obs, r.first)
        action = heads.sample(k_act, logits)
        obs, env_state, reward, terminated, truncated, info = env_step(
            k_env, r.env_state, action, env_params)
        agent_terminated, agent_truncated = stream_ends(info, terminated, truncated)
        done = agent_terminated | agent_truncated
        if config.prev_action_reward:
            obs = add_previous(obs, action, reward, done, network.action_space)
        if config.bootstrap_truncated:
            # The value of the last observation of a truncated stream, seen with the carry
            # that observation would have met; a termination bootstraps from 0.
            final_obs = info["final_observation"]
            if config.prev_action_reward:
                final_obs = add_previous(final_obs, action, reward, jnp.zeros_like(done),
                                         network.action_space)
            _, _, final_value = act(network, r.params, carry, final_obs, jnp.zeros_like(done))
            next_value = jnp.where(agent_truncated & ~agent_terminated, final_value, 0.0)
        else:
            next_value = jnp.zeros_like(value)
        reward = reward.astype(jnp.float32)
        transition = Transition(obs=r.obs, first=r.first, action=action,
                                log_prob=heads.log_prob(logits, action), value=value,
                                reward=reward, done=done, next_value=next_value)

        episode_return = r.episode_return + reward
        episode_length = r.episode_length + 1
        discounted = jnp.where(r.first, 0.0, r.discounted_return) * config.gamma + reward
        stats = dict(
            episodes=stats["episodes"] + jnp.sum(done),
            return_sum=stats["return_sum"] + jnp.sum(jnp.where(done, episode_return, 0.0)),
            length_sum=stats["length_sum"] + jnp.sum(jnp.where(done, episode_length, 0)),
            info={k: stats["info"][k] + v for k, v in _info_means(info).items()})
        r = r.replace(env_state=env_state, obs=obs, first=done, carry=carry, key=key,
                      episode_return=jnp.where(done, 0.0, episode_return),
                      episode_length=jnp.where(done, 0, episode_length),
                      discounted_return=discounted)
        return (constrain(r), stats), (transition, discounted)

    info_shape = jax.eval_shape(lambda: _info_means(env_step(
        runner.key, runner.env_state,
        heads.mode(act(network, runner.params, runner.carry, runner.obs, runner.first)[1]),
        env_params)[-1]))
    stats0 = dict(episodes=jnp.zeros((), jnp.int32), return_sum=jnp.zeros((), jnp.float32),
                  length_sum=jnp.zeros((), jnp.int32),
                  info={k: jnp.zeros((), jnp.float32) for k in info_shape})
    (runner, stats), (traj, discounted) = jax.lax.scan(step, (runner, stats0), None, config.n_steps)
    runner = runner.replace(reward_stats=runner.reward_stats.updated(discounted))
    return runner, traj, stats


def gae(value, reward, done, next_value, last_value, gamma: float, lam: float):
    """Generalised advantage estimates over a rollout, cut per stream where it ended.

    Args:
        value: (T, ...) values of the observations acted on.
        reward: (T, ...) rewards received.
        done: (T, ...) bool, the stream's episode ended with step t.
        next_value: (T, ...) the value to bootstrap from where done (0 at a termination).
        last_value: (...) value of the observation after the last step.
        gamma, lam: discount and GAE lambda.

    Returns:
        (advantages (T, ...), returns (T, ...)) with returns = advantages + value.
    """
    following = jnp.concatenate([value[1:], last_value[None]], axis=0)
    bootstrap = jnp.where(done, next_value, following)
    delta = reward + gamma * bootstrap - value
    keep = gamma * lam * (1.0 - done.astype(jnp.float32))

    def backwards(acc, x):
        d, k = x
        acc = d + k * acc
        return acc, acc

    _, adv = jax.lax.scan(backwards, jnp.zeros_like(last_value), (delta, keep), reverse=True)
    return adv, adv + value


def ent_coef_at(config: PPOConfig, lr_fraction):
    """The entropy weight where the learning rate is ``lr_fraction`` of ``config.lr``.

    Args:
        config: the run's settings; ``ent_coef_final`` None means a constant weight.
        lr_fraction: () float, the lr's fraction of its initial value (1 at the start, 0
            at the end of an annealed run).

    Returns:
        () float32: ``ent_coef`` if ``ent_coef_final`` is None, else
        ``ent_coef_final + (ent_coef - ent_coef_final) * lr_fraction``.
    """
    if config.ent_coef_final is None:
        return jnp.float32(config.ent_coef)
    return jnp.float32(config.ent_coef_final) + jnp.float32(
        config.ent_coef - config.ent_coef_final) * jnp.asarray(lr_fraction, jnp.float32)


def ppo_loss(config: PPOConfig, network, params, carry0, batch: Transition, advantages, returns,
             ent_coef=None):
    """PPO's loss on a minibatch of whole sequences: leaves (T, B, ...), carry0 (B, ...);
    ``ent_coef`` (() float) the entropy weight, ``config.ent_coef`` if None.

    Returns:
        (loss, dict of its parts and diagnostics).
    """
    _, logits, value = network.apply(params, carry0, batch.obs, batch.first)
    log_prob = heads.log_prob(logits, batch.action)
    ratio = jnp.exp(log_prob - batch.log_prob)
    if config.normalize_advantages:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    clipped_ratio = jnp.clip(ratio, 1.0 - config.clip_eps, 1.0 + config.clip_eps)
    policy_loss = -jnp.mean(jnp.minimum(ratio * advantages, clipped_ratio * advantages))

    value_loss = jnp.square(value - returns)
    if config.clip_value:
        clipped = batch.value + jnp.clip(value - batch.value, -config.clip_eps, config.clip_eps)
        value_loss = jnp.maximum(value_loss, jnp.square(clipped - returns))
    value_loss = 0.5 * jnp.mean(value_loss)

    entropy = jnp.mean(heads.entropy(logits))
    ent_coef = config.ent_coef if ent_coef is None else ent_coef
    loss = policy_loss + config.vf_coef * value_loss - ent_coef * entropy
    aux = dict(policy_loss=policy_loss, value_loss=value_loss, entropy=entropy,
               approx_kl=jnp.mean((ratio - 1.0) - jnp.log(ratio)),
               clip_frac=jnp.mean((jnp.abs(ratio - 1.0) > config.clip_eps).astype(jnp.float32)))
    return loss, aux


def minibatch_update(config: PPOConfig, network, optimizer, lr_scale, state, minibatch,
                     ent_coef=None):
    """One gradient step: state (params, opt_state), minibatch ((batch, adv, ret), carry0);
    the optimiser's step is multiplied by ``lr_scale`` (the runner's); ``ent_coef`` as in
    :func:`ppo_loss`."""
    params, opt_state = state
    (batch, adv, ret), carry0 = minibatch
    grads, aux = jax.grad(functools.partial(ppo_loss, config, network, ent_coef=ent_coef),
                          has_aux=True)(params, carry0, batch, adv, ret)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    updates = jax.tree_util.tree_map(lambda u: u * lr_scale, updates)
    # One norm of the concatenated gradients (the flattened optimiser forms the same
    # concatenation, which XLA then computes once) rather than one reduction per array.
    aux["grad_norm"] = jnp.linalg.norm(jnp.concatenate(
        [jnp.reshape(g, -1) for g in jax.tree_util.tree_leaves(grads)]))
    return (optax.apply_updates(params, updates), opt_state), aux


def epoch(config: PPOConfig, network, optimizer, data, carry0, lr_scale, state, key,
          ent_coef=None):
    """One pass over the rollout's streams in ``config.n_minibatches`` shuffled minibatches
    (``ent_coef`` as in :func:`ppo_loss`).

    ``data`` leaves are (T, S, ...) over S streams, ``carry0`` leaves (S, ...); the
    minibatches split the streams, each keeping its whole sequence.
    """
    n_streams = data[1].shape[1]  # the advantages' (T, S)
    order = jax.random.permutation(key, n_streams)
    split = lambda x, axis: jnp.moveaxis(
        jnp.take(x, order, axis=axis).reshape(
            (*x.shape[:axis], config.n_minibatches, -1, *x.shape[axis + 1:])), axis, 0)
    mb_data = jax.tree_util.tree_map(lambda x: split(x, 1), data)
    mb_carry = jax.tree_util.tree_map(lambda x: split(x, 0), carry0)
    return jax.lax.scan(functools.partial(minibatch_update, config, network, optimizer, lr_scale,
                                          ent_coef=ent_coef),
                        state, (mb_data, mb_carry))


def update(config: PPOConfig, network, optimizer, env_step, constrain, lr, runner: Runner,
           env_params):
    """One PPO iteration: rollout, GAE, ``config.n_epochs`` epochs; -> (runner, metrics)."""
    carry0 = runner.carry
    runner, traj, stats = rollout(config, network, env_step, constrain, runner, env_params)
    _, _, last_value = act(network, runner.params, runner.carry, runner.obs, runner.first)
    raw_reward = jnp.mean(traj.reward)
    if config.normalize_rewards:
        traj = traj._replace(reward=runner.reward_stats.scale(traj.reward))
    advantages, returns = gae(traj.value, traj.reward, traj.done, traj.next_value,
                              last_value, config.gamma, config.gae_lambda)

    # Streams: (T, E, A, ...) -> (T, E*A, ...); carries (E, A, ...) -> (E*A, ...).
    flat_t = lambda x: x.reshape((x.shape[0], -1, *x.shape[3:]))
    flat = lambda x: x.reshape((-1, *x.shape[2:]))
    data = jax.tree_util.tree_map(flat_t, (traj, advantages, returns))
    carry0 = jax.tree_util.tree_map(flat, carry0)

    # The lr of this update's first gradient step, as a fraction of config.lr: the entropy
    # weight follows it (ent_coef_final).
    lr_now = lr(runner.update * config.n_epochs * config.n_minibatches) * runner.lr_scale
    ent_coef = ent_coef_at(config, lr_now / config.lr)
    key, k_epochs = jax.random.split(runner.key)
    (params, opt_state), aux = jax.lax.scan(
        functools.partial(epoch, config, network, optimizer, data, carry0, runner.lr_scale,
                          ent_coef=ent_coef),
        (runner.params, runner.opt_state), jax.random.split(k_epochs, config.n_epochs))
    runner = runner.replace(params=params, opt_state=opt_state, key=key,
                            update=runner.update + 1)

    episodes = stats["episodes"]
    residual = jnp.var(returns - traj.value)
    metrics = dict(
        update=runner.update,
        episodes=episodes,
        # per stream (env, agent) episode; NaN when none ended during this rollout
        episode_return=stats["return_sum"] / episodes,
        episode_length=stats["length_sum"] / episodes,
        reward=raw_reward,
        reward_scale=1.0 / jnp.sqrt(runner.reward_stats.var + 1e-8),
        lr=lr_now,
        ent_coef=ent_coef,
        explained_variance=1.0 - residual / (jnp.var(returns) + 1e-8),
        **jax.tree_util.tree_map(jnp.mean, aux),
        **{k: v / config.n_steps for k, v in stats["info"].items()})
    return runner, metrics


# -- sharding, apart from the algorithm ----------------------------------------------
# Every leaf with a leading env axis is split over the 'envs' axis of a mesh of all
# devices (all processes' devices under jax.distributed); everything else (parameters,
# optimiser, key) is replicated. The algorithm only calls ``constrain`` on its runner.

ENV_LEAVES = ("env_state", "obs", "first", "carry", "episode_return", "episode_length",
              "discounted_return")


class EnvSharding(NamedTuple):
    """``constrain(runner)`` inside jit and ``place(runner)`` outside it; no-ops on one device."""

    mesh: Mesh | None

    @classmethod
    def of(cls, config: PPOConfig) -> "EnvSharding":
        devices = jax.devices()
        if not config.shard or len(devices) == 1:
            return cls(None)
        if config.n_envs % len(devices):
            raise ValueError(f"n_envs: expected a multiple of the {len(devices)} devices to shard "
                             f"over, got {config.n_envs} (or set shard=False)")
        return cls(Mesh(np.array(devices), ("envs",)))

    def _envs(self, x):
        return NamedSharding(self.mesh, PartitionSpec("envs", *([None] * (np.ndim(x) - 1))))

    def constrain(self, runner: Runner) -> Runner:
        if self.mesh is None:
            return runner
        return runner.replace(**{f: jax.tree_util.tree_map(
            lambda x: jax.lax.with_sharding_constraint(x, self._envs(x)), getattr(runner, f))
            for f in ENV_LEAVES})

    def place(self, runner: Runner) -> Runner:
        """Commits a runner to the devices: env-axis leaves sharded, the rest replicated.

        Under ``jax.distributed`` a host value (a loaded checkpoint, the same in every
        process) becomes a global array of which each process holds its devices' part.
        """
        if self.mesh is None:
            return jax.device_put(runner, jax.devices()[0])
        replicated = NamedSharding(self.mesh, PartitionSpec())
        shardings = runner.replace(**{
            f.name: jax.tree_util.tree_map(self._envs if f.name in ENV_LEAVES else (lambda x: replicated),
                                           getattr(runner, f.name))
            for f in dataclasses.fields(runner)})
        if jax.process_count() == 1:
            return jax.device_put(runner, shardings)
        return jax.tree_util.tree_map(_global_array, runner, shardings)


def _global_array(x, sharding):
    """A host value (equal in every process) as a global array with ``sharding``."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return x  # already global: the output of a jitted call
    if _is_key(x):
        data = _global_array(np.asarray(jax.random.key_data(x)), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def to_host(tree):
    """Every leaf as a numpy array in every process, gathered from all processes' devices
    under ``jax.distributed`` (a collective: every process must call it)."""
    return jax.tree_util.tree_map(_host, tree)


def _host(x):
    """A (possibly global, sharded over processes) array as a numpy array in every process."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils  # deferred: only for jax.distributed
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


# -- assembling a trainer ------------------------------------------------------------

class Trainer(NamedTuple):
    """The pieces of a PPO run, all pure functions of their arguments.

    Attributes:
        config: the :class:`PPOConfig`.
        env: the environment (wrapped in ``FinalObservation`` if ``bootstrap_truncated``).
        network: the :class:`~agents.networks.ActorCritic`.
        optimizer: the optax transformation.
        init: ``(key, env_params) -> Runner``, fresh parameters and envs (jitted).
        update: ``(runner, env_params) -> (runner, metrics)``, one PPO iteration (not jitted).
        rollout: ``(runner, env_params) -> (runner, trajectory, stats)``, the acting part of
            an update alone (not jitted; for timing the env against the learner).
        run: ``(runner, env_params, n) -> (runner, metrics)``: ``n`` iterations in one
            jitted call; metrics leaves gain a leading (n,) axis.
        train: ``(key, env_params) -> (runner, metrics)``: init and ``config.n_updates``
            iterations, in one jitted call.
        place: puts a runner (e.g. a loaded one) on the devices as ``run`` expects it.
    """

    config: PPOConfig
    env: Any
    network: ActorCritic
    optimizer: optax.GradientTransformation
    init: Callable
    update: Callable
    rollout: Callable
    run: Callable
    train: Callable
    place: Callable


def _info_means(info) -> dict:
    """Mean over envs of every numeric leaf of an env's info, keyed 'info/<path>'."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(info)[0]:
        name = "/".join(str(getattr(p, "key", getattr(p, "idx", p))) for p in path)
        if name.startswith("final_observation"):
            continue
        leaf = jnp.asarray(leaf)
        if jnp.issubdtype(leaf.dtype, jnp.number) or leaf.dtype == jnp.bool_:
            out["info/" + name] = jnp.mean(leaf.astype(jnp.float32))
    return out


def print_progress(metrics) -> None:
    """An ``on_update`` for :func:`make_trainer`: one line per update (per member under vmap)."""
    ret = float(metrics["episode_return"])
    print(f"update {int(metrics['update'])}: reward/step {float(metrics['reward']):.4f}, "
          f"episode return {'-' if np.isnan(ret) else f'{ret:.3f}'}, "
          f"entropy {float(metrics['entropy']):.3f}", flush=True)


def _with_final_observation(env):
    """``env`` wrapped so that its info holds ``final_observation`` (interface 1)."""
    from megastep_jax.wrappers import FinalObservation  # deferred: wrappers import envs
    return env if isinstance(env, FinalObservation) else FinalObservation(env)


def make_trainer(config: PPOConfig, env, on_update: Callable | None = None) -> Trainer:
    """Builds the PPO functions for ``env`` (a gymnax-style env with dict spaces).

    Args:
        config: the run's settings.
        env: the environment (its ``default_params`` fix the spaces).
        on_update: if given, ``on_update(metrics)`` is called on the host after every
            update of ``run`` and ``train`` (``jax.debug.callback``; under ``vmap`` once
            per member), e.g. :func:`print_progress`, to watch a long jitted call.

    Raises:
        ValueError: for a config that cannot split the env's streams into minibatches, or
            n_envs not divisible by the devices to shard over.
    """
    if not isinstance(config, PPOConfig):
        raise ValueError(f"config: expected a PPOConfig, got {type(config).__name__}")
    params0 = env.default_params
    obs_space, action_space = env.observation_space(params0), env.action_space(params0)
    n_agents = env.n_agents
    n_streams = config.n_envs * n_agents
    if n_streams % config.n_minibatches:
        raise ValueError(f"n_minibatches: expected a divisor of the {n_streams} streams "
                         f"(n_envs x {n_agents} agents), got {config.n_minibatches}")
    sharding = EnvSharding.of(config)
    if config.bootstrap_truncated:
        env = _with_final_observation(env)

    if config.prev_action_reward:
        obs_space = previous_space(obs_space, action_space)
    network = ActorCritic.from_spaces(obs_space, action_space, width=config.width,
                                      core=config.core, image_kwargs=config.image_kwargs,
                                      intake=config.intake, critic_keys=config.critic_keys,
                                      stack=config.stack, obs_norm=config.obs_norm)
    grad_steps = config.n_updates * config.n_epochs * config.n_minibatches
    lr = (optax.linear_schedule(config.lr, 0.0, grad_steps) if config.anneal_lr
          else optax.constant_schedule(config.lr))
    # Flattened: the optimiser's state is vectors over all parameters, and each step is a
    # dozen operations on them rather than that many per parameter array (the network has
    # ~25): 1.3 ms of a 13 ms learner on the demo's settings. Checkpoints from before keep
    # loading (see `load`).
    optimizer = optax.flatten(optax.chain(optax.clip_by_global_norm(config.max_grad_norm),
                                          optax.adam(lr, eps=config.adam_eps)))

    from megastep_jax.envs.base import Batched  # deferred: envs import the kernels
    batched = Batched(env, config.n_envs, config.reset_ratio)
    env_step, env_reset = batched.step, batched.reset  # one key for all envs

    def init_params(key, obs_shapes):
        # Parameters depend on feature shapes only: init on zeros shaped like one step of
        # one env. Under vmap (several seeds) each member is initialised on its own, in a
        # lax.map: batched LAPACK QR (orthogonal initialisers) deadlocks on small CPUs.
        @one_at_a_time
        def f(key):
            one = jax.tree_util.tree_map(lambda s: jnp.zeros((1, 1, *s.shape), s.dtype), obs_shapes)
            return network.init(key, network.initial_carry((1, n_agents)), one,
                                jnp.ones((1, 1, n_agents), bool))
        return f(key)

    def init(key, env_params) -> Runner:
        key, k_net, k_env = jax.random.split(key, 3)
        obs, env_state = env_reset(k_env, env_params)
        streams = (config.n_envs, n_agents)
        if config.prev_action_reward:
            obs = add_previous(obs, None, jnp.zeros(streams), jnp.ones(streams, bool), action_space)
        params = init_params(k_net, jax.tree_util.tree_map(
            lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), obs))
        return sharding.constrain(Runner(
            params=params, opt_state=optimizer.init(params), env_state=env_state, obs=obs,
            first=jnp.ones(streams, bool), carry=network.initial_carry(streams),
            episode_return=jnp.zeros(streams, jnp.float32),
            episode_length=jnp.zeros(streams, jnp.int32),
            discounted_return=jnp.zeros(streams, jnp.float32),
            reward_stats=RewardStats.zeros(), lr_scale=jnp.ones((), jnp.float32), key=key,
            update=jnp.zeros((), jnp.int32)))

    rollout_ = functools.partial(rollout, config, network, env_step, sharding.constrain)
    update_ = functools.partial(update, config, network, optimizer, env_step,
                                sharding.constrain, lr)

    def update_and_report(runner, env_params):
        runner, metrics = update_(runner, env_params)
        if on_update is not None:
            jax.debug.callback(on_update, metrics)
        return runner, metrics

    @functools.partial(jax.jit, static_argnums=2)
    def run_jit(runner, env_params, n: int):
        return jax.lax.scan(lambda r, _: update_and_report(r, env_params),
                            sharding.constrain(runner), None, n)

    def run(runner: Runner, env_params, n: int):
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise ValueError(f"n: expected a positive int, got {n!r}")
        return run_jit(sharding.place(runner), env_params, n)

    @jax.jit
    def train(key, env_params):
        return jax.lax.scan(lambda r, _: update_and_report(r, env_params), init(key, env_params),
                            None, config.n_updates)

    return Trainer(config=config, env=env, network=network, optimizer=optimizer,
                   init=jax.jit(init), update=update_, rollout=rollout_, run=run, train=train,
                   place=sharding.place)


def make_train(config: PPOConfig, env, on_update: Callable | None = None) -> Callable:
    """``train(key, env_params) -> (runner, metrics)``: a whole PPO run as one jitted call.

    ``metrics`` is a dict of (n_updates,) arrays (see :func:`make_trainer`, which also
    explains ``on_update``). ``vmap`` it over keys or env params to train several runs at once.
    """
    return make_trainer(config, env, on_update).train


# Checkpoints: the whole runner, PRNG keys included, as flax msgpack bytes. The leaves are
# stored in tree order (env states and arrdicts are arbitrary pytrees that msgpack cannot
# name), and a template of the same structure puts them back.

def _is_key(x) -> bool:
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def save(path, runner: Runner) -> None:
    """Writes a runner to ``path`` (atomically: a partial write never replaces a checkpoint).

    Under ``jax.distributed`` every process must call it (the runner's env-sharded parts
    are gathered from all of them); process 0 writes.
    """
    import os
    leaves = [_host(jax.random.key_data(x) if _is_key(x) else x)
              for x in jax.tree_util.tree_leaves(runner)]
    if jax.process_index() != 0:
        return
    data = flax.serialization.msgpack_serialize({"leaves": {str(i): x for i, x in enumerate(leaves)}})
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def load(path, template: Runner) -> Runner:
    """Reads a runner saved by :func:`save`.

    Checkpoints written before the optimiser was flattened (its state then held one array
    per parameter array where it now holds one vector) load too: their state is
    concatenated in the flattened order, which continues the run exactly.

    Args:
        path: the checkpoint file.
        template: a runner of the same run's structure, e.g. ``trainer.init(key, params)``.

    Raises:
        ValueError: if the checkpoint's leaves do not match the template's in number,
            shapes or dtypes (a checkpoint of another config or env).
    """
    with open(path, "rb") as f:
        stored = flax.serialization.msgpack_restore(f.read())["leaves"]
    n_template = len(jax.tree_util.tree_leaves(template))
    if len(stored) != n_template:
        unflat = template.replace(opt_state=_opt_state_per_array(template.opt_state, template.params))
        if len(stored) == len(jax.tree_util.tree_leaves(unflat)):
            runner = _restore(stored, unflat)
            return runner.replace(opt_state=_opt_state_flat(runner.opt_state, runner.params))
        raise ValueError(f"path: checkpoint has {len(stored)} arrays, the template {n_template}: "
                         "was it saved by another config or env?")
    return _restore(stored, template)


def _restore(stored: dict, template: Runner) -> Runner:
    leaves, treedef = jax.tree_util.tree_flatten(template)
    out = []
    for i, t in enumerate(leaves):
        x = stored[str(i)]
        want = jax.random.key_data(t) if _is_key(t) else t
        if x.shape != want.shape or x.dtype != want.dtype:
            raise ValueError(f"path: checkpoint array {i} is {x.dtype}{x.shape}, the template's "
                             f"{want.dtype}{want.shape}: was it saved by another config or env?")
        out.append(jax.random.wrap_key_data(x, impl=jax.random.key_impl(t)) if _is_key(t) else x)
    return jax.tree_util.tree_unflatten(treedef, out)


def _opt_state_per_array(opt_state, params):
    """A flattened optimiser state's structure as the unflattened optimiser had it: every
    vector over all parameters becomes a tree shaped like ``params``."""
    size = sum(np.size(x) for x in jax.tree_util.tree_leaves(params))
    return jax.tree_util.tree_map(
        lambda x: params if np.ndim(x) == 1 and np.shape(x)[0] == size else x, opt_state)


def _opt_state_flat(opt_state, params):
    """The inverse of :func:`_opt_state_per_array`: every tree shaped like ``params``
    concatenated into one vector, in ``optax.flatten``'s order (the leaves')."""
    structure = jax.tree_util.tree_structure(params)
    like_params = lambda t: jax.tree_util.tree_structure(t) == structure
    return jax.tree_util.tree_map(
        lambda t: jnp.concatenate([jnp.reshape(x, -1) for x in jax.tree_util.tree_leaves(t)])
        if like_params(t) else t, opt_state, is_leaf=like_params)
