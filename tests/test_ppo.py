"""PPO: GAE, determinism, bit-identical resume, learning, vmap over seeds and params, and
a 2-device sharded run.

The env here is a tiny pure-jnp contextual bandit with the demo envs' interface (dict
observations with an image strip and a vector, dict MultiDiscrete actions, several agents),
so the tests need no renderer.
"""
import dataclasses
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

from agents import ppo
from megastep_jax import spaces
from megastep_jax.arrdict import arrdict, dotdict
from megastep_jax.envs.base import Environment, sweep


@struct.dataclass
class CueParams:
    max_steps: jax.Array = struct.field(default_factory=lambda: jnp.int32(8))


@struct.dataclass
class CueState:
    cue: jax.Array    # (A,) int32, the lit pixel
    sign: jax.Array   # (A,) float32, +-1
    t: jax.Array      # () int32, steps since reset


class CueEnv(Environment):
    """Each step every agent sees a strip with one lit pixel and a vector whose first entry
    is +-1; ``movement`` should be 1 for a pixel in the left half, 2 in the right half, and
    ``fire`` 1 for a positive sign. Reward 0.5 per right choice: a random policy earns 5/12
    per step, the best one 1. Episodes are truncated after ``max_steps``."""

    def __init__(self, n_agents: int = 2, width: int = 8):
        self.n_agents, self.width = n_agents, width

    @property
    def default_params(self):
        return CueParams()

    def observation_space(self, params=None):
        return dotdict(strip=spaces.MultiImage(self.n_agents, 1, 1, self.width),
                       vec=spaces.MultiVector(self.n_agents, 2))

    def action_space(self, params=None):
        return dotdict(movement=spaces.MultiDiscrete(self.n_agents, 3),
                       fire=spaces.MultiDiscrete(self.n_agents, 2))

    def _draw(self, key, t):
        k1, k2 = jax.random.split(key)
        cue = jax.random.randint(k1, (self.n_agents,), 0, self.width)
        sign = jnp.where(jax.random.bernoulli(k2, 0.5, (self.n_agents,)), 1.0, -1.0)
        return CueState(cue=cue, sign=sign, t=t)

    def _obs(self, s, params):
        strip = jax.nn.one_hot(s.cue, self.width)[:, None, None, :]
        vec = jnp.stack([s.sign, jnp.broadcast_to(s.t / params.max_steps, s.sign.shape)], -1)
        return arrdict(strip=strip.astype(jnp.float32), vec=vec.astype(jnp.float32))

    def reset_env(self, key, params):
        s = self._draw(key, jnp.int32(0))
        return self._obs(s, params), s

    def step_env(self, key, s, action, params):
        good_move = action["movement"] == (s.cue >= self.width // 2).astype(jnp.int32) + 1
        good_fire = action["fire"] == (s.sign > 0).astype(jnp.int32)
        reward = (0.5 * good_move + 0.5 * good_fire).astype(jnp.float32)
        s = self._draw(key, s.t + 1)
        return (self._obs(s, params), s, reward, jnp.asarray(False), s.t >= params.max_steps,
                {"correct": jnp.mean(good_move)})


TINY_CONVS = (("conv_features", (4,)), ("conv_kernels", (3,)), ("conv_strides", (1,)))
# normalize_rewards: its running statistics ride through the bit-identical resume and the
# sharded run below.
TINY = ppo.PPOConfig(n_envs=4, n_steps=8, n_updates=4, n_epochs=2, n_minibatches=2, width=8,
                     core="lstm", image_kwargs=TINY_CONVS, normalize_rewards=True)


@pytest.fixture(scope="module")
def tiny():
    env = CueEnv()
    return ppo.make_trainer(TINY, env), env.default_params


def gae_reference(value, reward, done, next_value, last_value, gamma, lam):
    T = len(value)
    adv = np.zeros(T)
    acc = 0.0
    for t in reversed(range(T)):
        following = last_value if t == T - 1 else value[t + 1]
        boot = next_value[t] if done[t] else following
        delta = reward[t] + gamma * boot - value[t]
        acc = delta + (0.0 if done[t] else gamma * lam * acc)
        adv[t] = acc
    return adv, adv + value


def test_gae_matches_a_loop():
    rng = np.random.default_rng(0)
    T = 9
    value, reward, next_value = rng.normal(size=(3, T))
    done = np.array([0, 0, 1, 0, 0, 0, 1, 0, 0], bool)
    adv, ret = ppo.gae(jnp.asarray(value), jnp.asarray(reward), jnp.asarray(done),
                       jnp.asarray(next_value), jnp.asarray(0.7), 0.9, 0.8)
    ref_adv, ref_ret = gae_reference(value, reward, done, next_value, 0.7, 0.9, 0.8)
    np.testing.assert_allclose(adv, ref_adv, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ret, ref_ret, rtol=1e-5, atol=1e-6)
    # gamma = lambda = 1 without ends: advantages are reward-to-go plus the bootstrap, minus value
    adv, _ = ppo.gae(jnp.zeros(3), jnp.array([1.0, 2.0, 3.0]), jnp.zeros(3, bool), jnp.zeros(3),
                     jnp.asarray(10.0), 1.0, 1.0)
    np.testing.assert_allclose(adv, [16.0, 15.0, 13.0])


def _equal_trees(a, b) -> bool:
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y), equal_nan=True)
                                      for x, y in zip(la, lb))


@pytest.mark.slow
def test_same_key_same_metrics_and_resume_is_bit_identical(tiny, tmp_path):
    trainer, params = tiny
    key = jax.random.PRNGKey(3)
    runner_a, metrics_a = trainer.train(key, params)
    runner_b, metrics_b = trainer.train(key, params)
    assert _equal_trees(metrics_a, metrics_b)
    assert _equal_trees(runner_a, runner_b)
    assert metrics_a["update"].tolist() == [1, 2, 3, 4]

    # the command line's path, `run` in chunks (one compiled chunk of 2): 2 + 2 updates, and
    # 2, a checkpoint, a load into a runner of another key and 2 more, bit for bit
    runner, first = trainer.run(trainer.init(key, params), params, 2)
    whole, second_whole = trainer.run(runner, params, 2)
    metrics_whole = jax.tree_util.tree_map(lambda x, y: np.concatenate([x, y]), first, second_whole)
    ppo.save(tmp_path / "ckpt", runner)
    del runner
    loaded = ppo.load(tmp_path / "ckpt", trainer.init(jax.random.PRNGKey(99), params))
    loaded, second = trainer.run(loaded, params, 2)
    assert _equal_trees(loaded, whole)
    assert _equal_trees(second, second_whole)
    # `train` is another program (init and updates in one): the same run to float rounding
    for a, b in zip(jax.tree_util.tree_leaves(runner_a.params), jax.tree_util.tree_leaves(whole.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    for k, v in metrics_a.items():  # (explained_variance is 1 - a ratio: 1.0's rounding)
        np.testing.assert_allclose(v, metrics_whole[k], rtol=1e-5, atol=1e-6, err_msg=k)

    other, _ = trainer.train(jax.random.PRNGKey(4), params)
    assert not _equal_trees(other.params, runner_a.params)


def test_a_checkpoint_of_the_per_array_optimiser_state_loads_and_continues(tiny, tmp_path):
    """Checkpoints written before the optimiser was flattened hold Adam's moments as one
    array per parameter array; they load into today's runner and continue bit for bit."""
    import optax
    from jax.flatten_util import ravel_pytree
    trainer, params = tiny
    runner, _ = trainer.run(trainer.init(jax.random.PRNGKey(5), params), params, 2)
    size = ravel_pytree(runner.params)[0].size
    unravel = ravel_pytree(runner.params)[1]
    per_array = jax.tree_util.tree_map(
        lambda x: unravel(x) if x.ndim == 1 and x.shape[0] == size else x, runner.opt_state)
    # the layout the unflattened optimiser had
    before = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(optax.linear_schedule(1e-3, 0.0, 10)))
    assert jax.tree_util.tree_structure(per_array) == jax.tree_util.tree_structure(before.init(runner.params))
    ppo.save(tmp_path / "old", runner.replace(opt_state=per_array))
    loaded = ppo.load(tmp_path / "old", trainer.init(jax.random.PRNGKey(99), params))
    assert _equal_trees(loaded, runner)
    assert _equal_trees(trainer.run(loaded, params, 1), trainer.run(runner, params, 1))


def test_a_gradient_step_equals_the_per_array_optimiser_and_reports_the_global_norm(tiny):
    """The flattened optimiser takes the per-array optimiser's step, and grad_norm is the
    gradients' global norm."""
    import functools
    import optax
    trainer, params = tiny
    config, network = trainer.config, trainer.network
    runner = trainer.init(jax.random.PRNGKey(6), params)
    _, traj, _ = jax.jit(trainer.rollout)(runner, params)
    flat = lambda x: x.reshape((x.shape[0], -1, *x.shape[3:]))
    adv = jax.random.normal(jax.random.PRNGKey(7), traj.reward.shape)
    batch = jax.tree_util.tree_map(flat, (traj, adv, adv + traj.value))
    carry0 = jax.tree_util.tree_map(lambda x: x.reshape((-1, *x.shape[2:])), runner.carry)
    (new_params, _), aux = ppo.minibatch_update(config, network, trainer.optimizer, 1.0,
                                                (runner.params, runner.opt_state), (batch, carry0))
    grads = jax.grad(lambda p: ppo.ppo_loss(config, network, p, carry0, *batch)[0])(runner.params)
    np.testing.assert_allclose(aux["grad_norm"], optax.tree.norm(grads), rtol=1e-5)
    lr = optax.constant_schedule(config.lr)  # (an annealed lr's first step is config.lr too)
    per_array = optax.chain(optax.clip_by_global_norm(config.max_grad_norm),
                            optax.adam(lr, eps=config.adam_eps))
    updates, _ = per_array.update(grads, per_array.init(runner.params), runner.params)
    expected = optax.apply_updates(runner.params, updates)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                           new_params, expected)
    assert not _equal_trees(new_params, runner.params)


def test_load_rejects_a_checkpoint_of_another_config(tiny, tmp_path):
    trainer, params = tiny
    ppo.save(tmp_path / "ckpt", trainer.init(jax.random.PRNGKey(0), params))
    env = CueEnv()
    bigger = ppo.make_trainer(ppo.PPOConfig(n_envs=4, width=16, core="lstm", n_minibatches=2,
                                            image_kwargs=TINY_CONVS), env)
    with pytest.raises(ValueError, match="another config"):
        ppo.load(tmp_path / "ckpt", bigger.init(jax.random.PRNGKey(0), params))


def test_ppo_learns_the_cue_env():
    env = CueEnv()
    config = ppo.PPOConfig(n_envs=8, n_steps=16, n_updates=24, n_minibatches=4, width=16,
                           core="mlp", lr=3e-3, image_kwargs=TINY_CONVS)
    _, metrics = ppo.make_train(config, env)(jax.random.PRNGKey(0), env.default_params)
    reward = np.asarray(metrics["reward"])
    # random play earns 5/12 per step; the best policy 1
    assert abs(reward[:2].mean() - 5 / 12) < 0.08
    assert reward[-4:].mean() > 0.85
    assert np.asarray(metrics["entropy"])[-1] < np.asarray(metrics["entropy"])[0] - 0.5
    assert np.asarray(metrics["value_loss"])[-4:].mean() < np.asarray(metrics["value_loss"])[:2].mean()
    # 8 steps per episode, 2 agents: returns are per agent
    np.testing.assert_allclose(np.asarray(metrics["episode_length"]), 8)
    assert np.asarray(metrics["episode_return"])[-4:].mean() > 6.8


def test_vmap_over_seeds_and_env_params(tiny):
    trainer, params = tiny
    swept = sweep(params, max_steps=[4, 8])
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    runners, metrics = jax.jit(jax.vmap(trainer.train))(keys, swept)
    assert metrics["reward"].shape == (2, TINY.n_updates)
    np.testing.assert_allclose(metrics["episode_length"][0], 4)
    np.testing.assert_allclose(metrics["episode_length"][1], 8)
    # member 1 is exactly the unbatched run with its key and params (up to batched maths)
    _, single = trainer.train(keys[1], params)
    np.testing.assert_allclose(metrics["reward"][1], single["reward"], rtol=1e-4)


def test_reward_stats_are_the_moments_of_every_discounted_return():
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, size=(8, 5)), rng.normal(-1.0, 0.5, size=(3, 5)),
               rng.normal(0.0, 1.0, size=(40,))]
    stats = ppo.RewardStats.zeros()
    for b in batches:
        stats = stats.updated(jnp.asarray(b, jnp.float32))
    every = np.concatenate([b.ravel() for b in batches])
    np.testing.assert_allclose(float(stats.count), every.size, rtol=1e-5)
    np.testing.assert_allclose(float(stats.mean), every.mean(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(float(stats.var), every.var(), rtol=1e-4)
    np.testing.assert_allclose(stats.scale(jnp.float32(2.0)), 2.0 / np.sqrt(every.var()), rtol=1e-4)


def test_rollout_tracks_discounted_returns_and_the_learner_sees_scaled_rewards():
    env = CueEnv()
    params = CueParams(max_steps=jnp.int32(3))  # episodes end inside the rollout
    trainer = ppo.make_trainer(TINY, env)
    runner = trainer.init(jax.random.PRNGKey(0), params)
    after, traj, _ = jax.jit(trainer.rollout)(runner, params)
    reward, first = np.asarray(traj.reward), np.asarray(traj.first)   # (T, E, A), env units
    assert set(np.unique(reward)) <= {0.0, 0.5, 1.0}
    acc = np.zeros(reward.shape[1:])
    values = []
    for t in range(len(reward)):
        acc = np.where(first[t], 0.0, acc) * TINY.gamma + reward[t]
        values.append(acc)
    np.testing.assert_allclose(after.discounted_return, acc, rtol=1e-5)
    values = np.stack(values)
    np.testing.assert_allclose(float(after.reward_stats.mean), values.mean(), rtol=1e-4)
    np.testing.assert_allclose(float(after.reward_stats.var), values.var(), rtol=1e-3)

    # the update reports rewards in env units and the scale it applied to them
    updated, metrics = jax.jit(trainer.update)(runner, params)
    np.testing.assert_allclose(metrics["reward"], reward.mean(), rtol=1e-5)
    np.testing.assert_allclose(metrics["reward_scale"], 1 / np.sqrt(values.var()), rtol=1e-3)
    # the statistics are part of the runner, so checkpoints carry them
    assert any(x is updated.reward_stats.var for x in jax.tree_util.tree_leaves(updated))


def test_lr_scale_of_the_runner_scales_every_step():
    import dataclasses
    env = CueEnv()
    params = env.default_params
    # one gradient step per update, so that the steps of two scales start from one state
    trainer = ppo.make_trainer(dataclasses.replace(TINY, n_epochs=1, n_minibatches=1), env)
    runner = trainer.init(jax.random.PRNGKey(0), params)
    update = jax.jit(trainer.update)
    moved = {}
    for scale in (0.0, 0.5, 1.0):
        after, metrics = update(runner.replace(lr_scale=jnp.float32(scale)), params)
        moved[scale] = jax.tree_util.tree_map(lambda a, b: np.asarray(a) - np.asarray(b),
                                              after.params, runner.params)
        np.testing.assert_allclose(metrics["lr"], scale * TINY.lr, rtol=1e-6)
    assert all(np.all(x == 0) for x in jax.tree_util.tree_leaves(moved[0.0]))
    assert any(np.any(x != 0) for x in jax.tree_util.tree_leaves(moved[1.0]))
    # Adam's step from the same state: the same direction, half as long
    for half, full in zip(jax.tree_util.tree_leaves(moved[0.5]), jax.tree_util.tree_leaves(moved[1.0])):
        np.testing.assert_allclose(half, 0.5 * full, rtol=1e-3, atol=1e-6)


def test_entropy_weight_follows_the_annealed_lr():
    import dataclasses
    sched = ppo.PPOConfig(ent_coef=0.03, ent_coef_final=0.01)
    for fraction, want in ((1.0, 0.03), (0.5, 0.02), (0.25, 0.015), (0.0, 0.01)):
        np.testing.assert_allclose(ppo.ent_coef_at(sched, fraction), want, rtol=1e-6)
    np.testing.assert_allclose(ppo.ent_coef_at(ppo.PPOConfig(ent_coef=0.03), 0.0), 0.03, rtol=1e-6)

    env = CueEnv()
    params = env.default_params
    base = dataclasses.replace(TINY, n_epochs=1, n_minibatches=1, n_updates=4, core="mlp")
    # the runner's lr_scale (the command line's time annealing) at 0.5: a schedule from
    # 0.05 to 0.01 trains with 0.03, exactly as a constant 0.03 does; at lr_scale 1 the same
    # compiled run (lr_scale is the runner's) uses 0.05
    sched = ppo.make_trainer(dataclasses.replace(base, ent_coef=0.05, ent_coef_final=0.01), env)
    same = ppo.make_trainer(dataclasses.replace(base, ent_coef=0.03), env)

    def run(trainer, scale):
        runner = trainer.init(jax.random.PRNGKey(0), params).replace(lr_scale=jnp.float32(scale))
        return trainer.run(runner, params, 3)

    (r_sched, m_sched), (r_same, m_same), (_, m_full) = run(sched, 0.5), run(same, 0.5), run(sched, 1.0)
    for metrics, want in ((m_sched, 0.03), (m_same, 0.03), (m_full, 0.05)):
        np.testing.assert_allclose(metrics["ent_coef"], want, rtol=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(r_sched.params), jax.tree_util.tree_leaves(r_same.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)

    # annealed over the updates (anneal_lr): the weight of update u is that of lr fraction 1 - u/n
    trainer = ppo.make_trainer(dataclasses.replace(base, anneal_lr=True, ent_coef=0.05,
                                                   ent_coef_final=0.01), env)
    _, metrics = trainer.run(trainer.init(jax.random.PRNGKey(0), params), params, 4)  # n_updates
    np.testing.assert_allclose(metrics["ent_coef"], [0.05, 0.04, 0.03, 0.02], rtol=1e-5)


def test_config_and_trainer_validate():
    with pytest.raises(ValueError, match="n_envs"):
        ppo.PPOConfig(n_envs=0)
    with pytest.raises(ValueError, match="gamma"):
        ppo.PPOConfig(gamma=1.5)
    with pytest.raises(ValueError, match="core"):
        ppo.PPOConfig(core="rnn")
    for bad in (-0.01, float("inf"), "0.01", True):
        with pytest.raises(ValueError, match="ent_coef_final"):
            ppo.PPOConfig(ent_coef_final=bad)
    with pytest.raises(ValueError, match="n_minibatches: expected a divisor of the 6 streams"):
        ppo.make_trainer(ppo.PPOConfig(n_envs=3, n_minibatches=4), CueEnv(n_agents=2))
    with pytest.raises(ValueError, match="n: expected a positive int"):
        trainer = ppo.make_trainer(TINY, CueEnv())
        trainer.run(None, None, 0)


class AgentEndsEnv(CueEnv):
    """The cue env where agent 0's stream ends every third step, alone (as a Deathmatch
    agent's death does): ``info["agent_terminated"]`` is True for it, and the env-level
    episode runs on."""

    def step_env(self, key, s, action, params):
        obs, s, reward, terminated, truncated, info = super().step_env(key, s, action, params)
        ended = (jnp.arange(self.n_agents) == 0) & (s.t % 3 == 0)
        return obs, s, reward, terminated, truncated, dict(info, agent_terminated=ended)


def test_one_agents_stream_end_cuts_its_gae_and_resets_its_carry_alone():
    env = AgentEndsEnv()
    params = CueParams(max_steps=jnp.int32(100))  # no env-level end within the rollout
    trainer = ppo.make_trainer(TINY, env)
    runner = trainer.init(jax.random.PRNGKey(0), params)
    carry0 = runner.carry
    _, traj, stats = jax.jit(trainer.rollout)(runner, params)
    done, first = np.asarray(traj.done), np.asarray(traj.first)     # (T, E, A)
    ends = np.zeros(TINY.n_steps, bool)
    ends[[2, 5]] = True                                               # t = 3 and 6 after reset
    np.testing.assert_array_equal(done[:, :, 0], np.broadcast_to(ends[:, None], done.shape[:2]))
    assert not done[:, :, 1].any()
    assert first[3, :, 0].all() and not first[3, :, 1].any()
    assert int(stats["episodes"]) == 2 * TINY.n_envs

    # GAE: agent 0's advantages up to its end ignore what follows; agent 1's do not
    args = [jnp.asarray(x) for x in (traj.value, traj.reward, traj.done, traj.next_value)]
    last = jnp.zeros(traj.value.shape[1:])
    adv, _ = ppo.gae(*args, last, TINY.gamma, TINY.gae_lambda)
    later = args[1].at[3:].add(1.0)
    adv2, _ = ppo.gae(args[0], later, *args[2:], last, TINY.gamma, TINY.gae_lambda)
    np.testing.assert_allclose(adv2[:3, :, 0], adv[:3, :, 0], rtol=1e-6)
    assert np.all(np.abs(np.asarray(adv2[:3, :, 1] - adv[:3, :, 1])) > 1e-3)
    for e in range(TINY.n_envs):
        for a in range(env.n_agents):
            ref, _ = gae_reference(*(np.asarray(x)[:, e, a] for x in args), 0.0,
                                   TINY.gamma, TINY.gae_lambda)
            np.testing.assert_allclose(adv[:, e, a], ref, rtol=1e-4, atol=1e-5)

    # LSTM: at step 3 agent 0 acted from a fresh carry, agent 1 from its running one
    _assert_agent_0_restarted_at_step_3_and_replay_agrees(trainer.network, runner.params, carry0, traj)


def _assert_agent_0_restarted_at_step_3_and_replay_agrees(net, params, carry0, traj):
    """At step 3 agent 0 acted from a fresh carry and agent 1 from its running one, and
    the learner, replaying the sequences from the rollout's first carry, agrees."""
    first = np.asarray(traj.first)
    zero = net.initial_carry(first.shape[1:])
    obs3 = jax.tree_util.tree_map(lambda x: x[3][None], traj.obs)
    _, _, fresh = net.apply(params, zero, obs3, jnp.ones((1, *first.shape[1:]), bool))
    np.testing.assert_allclose(traj.value[3, :, 0], fresh[0, :, 0], rtol=1e-5, atol=1e-6)
    assert np.all(np.abs(np.asarray(traj.value[3, :, 1] - fresh[0, :, 1])) > 1e-6)
    _, _, replay = net.apply(params, carry0, traj.obs, traj.first)
    np.testing.assert_allclose(replay, traj.value, rtol=1e-4, atol=1e-5)


def test_bootstrap_on_truncation_uses_the_final_observation():
    """With bootstrap_truncated the env is wrapped in FinalObservation; truncated streams
    bootstrap from the value of their episode's last observation."""
    import dataclasses
    env = CueEnv()
    params = CueParams(max_steps=jnp.int32(4))
    trainer = ppo.make_trainer(dataclasses.replace(TINY, bootstrap_truncated=True), env)
    from megastep_jax.wrappers import FinalObservation
    assert isinstance(trainer.env, FinalObservation)
    runner = trainer.init(jax.random.PRNGKey(0), params)
    _, traj, _ = jax.jit(trainer.rollout)(runner, params)
    done, next_value = np.asarray(traj.done), np.asarray(traj.next_value)
    assert done[3].all() and done[7].all() and done.sum() == 2 * done[0].size
    assert np.all(next_value[done] != 0) and np.all(next_value[~done] == 0)


TWO_DEVICES = """
import json, sys, jax, numpy as np
sys.path.insert(0, {tests!r})
from test_ppo import CueEnv, TINY
from agents import ppo
assert len(jax.devices()) == 2, jax.devices()
env = CueEnv()
trainer = ppo.make_trainer(TINY, env)
runner, metrics = trainer.train(jax.random.PRNGKey(3), env.default_params)
spec = runner.obs.strip.sharding
print(json.dumps(dict(devices=len(spec.device_set), spec=str(spec.spec),
                      metrics={{k: np.asarray(v).tolist() for k, v in metrics.items()}})))
"""


def test_two_device_sharded_run_matches_one_device(tiny):
    trainer, params = tiny
    _, metrics = trainer.train(jax.random.PRNGKey(3), params)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                         env.get("PYTHONPATH", "")])
    script = TWO_DEVICES.format(tests=os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["devices"] == 2 and "envs" in result["spec"]
    for k, v in metrics.items():
        np.testing.assert_allclose(np.asarray(result["metrics"][k], np.float64),
                                   np.asarray(v, np.float64), rtol=1e-4, atol=1e-6, err_msg=k)


def test_sharding_needs_divisible_envs():
    if len(jax.devices()) < 2:
        pytest.skip("one device: nothing to shard (covered in the 2-device subprocess)")
    with pytest.raises(ValueError, match="n_envs: expected a multiple"):
        ppo.make_trainer(ppo.PPOConfig(n_envs=len(jax.devices()) + 1, n_minibatches=1), CueEnv())


def test_previous_action_and_reward_reach_the_network_and_resume_bit_identically(tmp_path):
    import dataclasses
    env = CueEnv()
    params = CueParams(max_steps=jnp.int32(3))  # episodes end inside the rollout
    config = dataclasses.replace(TINY, core="mlp", prev_action_reward=True)
    trainer = ppo.make_trainer(config, env)
    runner = trainer.init(jax.random.PRNGKey(0), params)
    assert not np.any(runner.obs["prev_action"]) and not np.any(runner.obs["prev_reward"])
    _, traj, _ = jax.jit(trainer.rollout)(runner, params)
    # the observation after step t carries step t's action and reward, zeros where it starts an episode
    first = np.asarray(traj.first[1:])
    onehot = np.concatenate([np.eye(3)[np.asarray(traj.action["movement"][:-1])],
                             np.eye(2)[np.asarray(traj.action["fire"][:-1])]], -1)
    np.testing.assert_array_equal(traj.obs["prev_action"][1:], np.where(first[..., None], 0.0, onehot))
    np.testing.assert_allclose(traj.obs["prev_reward"][1:, ..., 0],
                               np.where(first, 0.0, np.asarray(traj.reward[:-1])))
    assert np.any(first) and np.any(~first)
    # checkpoints carry them: 2 updates, a save, 2 more equal 2 + 2 without the save (one
    # compiled run of 2)
    half, _ = trainer.run(runner, params, 2)
    whole, _ = trainer.run(half, params, 2)
    ppo.save(tmp_path / "ckpt", half)
    resumed, _ = trainer.run(ppo.load(tmp_path / "ckpt", trainer.init(jax.random.PRNGKey(1), params)),
                             params, 2)
    assert _equal_trees(resumed, whole)
    # evaluation feeds them too
    from agents.evaluate import make_evaluate
    out = make_evaluate(trainer.network, env, 4, 10, "sample")(jax.random.PRNGKey(0), whole.params, params)
    assert np.isfinite(float(out["episode_return"]))



GRU = dataclasses.replace(TINY, core="gru", stack=2, n_epochs=1)


def test_gru_core_resets_one_agents_carry_alone():
    """The GRU core (with the frame stack) through the trainer's rollout: agent 0's stream
    ends every third step and its carry restarts alone, and the learner's replay from the
    rollout's first carry agrees with the rollout."""
    env = AgentEndsEnv()
    params = CueParams(max_steps=jnp.int32(100))
    trainer = ppo.make_trainer(GRU, env)
    runner = trainer.init(jax.random.PRNGKey(0), params)
    carry0 = runner.carry
    assert carry0[0].shape == (GRU.n_envs, env.n_agents, GRU.width)
    _, traj, _ = jax.jit(trainer.rollout)(runner, params)
    first = np.asarray(traj.first)
    assert first[3, :, 0].all() and not first[3, :, 1].any()
    _assert_agent_0_restarted_at_step_3_and_replay_agrees(trainer.network, runner.params, carry0, traj)
