"""The fast auto-reset: exactly the straightforward semantics, one render, nothing per plan.

- ``env.step`` (one render per step, ``jnp.where`` over the small state) gives the same
  episodes, rewards and observations, bit for bit, as the straightforward auto-reset
  written out here: the raw ``step_env`` and, where the episode ended, ``reset_env``
  chosen with ``lax.cond`` (under ``vmap``: both computed, then selected);
- the jitted, vmapped step's temporary memory and op count do not grow with the number
  of plans (the old ``lax.cond`` copied the scenery pool to every env, every step);
- Deathmatch's per-agent streams: an agent that dies ends its own stream, not the others'.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from megastep_jax import recording, spaces, toys
from megastep_jax.arrdict import arrdict
from megastep_jax.envs import Batched, Deathmatch, Explorer, Minimal
from megastep_jax.wrappers import EpisodeStatistics

GEOMS = [toys.box(), toys.column()]


@functools.lru_cache(maxsize=None)
def make(name):
    if name == "minimal":
        return Minimal(res=16, geometries=GEOMS)
    if name == "explorer":
        return Explorer(res=32, subsample=2, geometries=GEOMS)
    return Deathmatch(n_agents=3, res=32, subsample=2, geometries=GEOMS)


def ending_params(name, env):
    """Params that end episodes (and, in Deathmatch, agents' lives) often and irregularly."""
    p = env.default_params
    if name == "minimal":
        return p.replace(max_steps=3)
    if name == "explorer":  # potentials start near 30: ends once length >= potential - 27, or at 9
        return p.replace(patience=-27, max_steps=9)
    return p.replace(max_steps=6, hit_damage=0.4, step_cost=0.15)


def straightforward_step(env, key, state, action, params):
    """The semantics the fast step must reproduce: raw step, then a cond-chosen reset."""
    key_step, key_reset = jax.random.split(key)
    obs, state, reward, terminated, truncated, info = env.step_env(key_step, state, action, params)
    obs, state = jax.lax.cond(terminated | truncated, lambda: env.reset_env(key_reset, params),
                              lambda: (obs, state))
    return obs, state, reward, terminated, truncated, info


def assert_same(x, y, where):
    """Bit-identical, except that float observations may differ by 1 ulp: XLA fuses the
    depth arithmetic of the two programs differently (the states, rewards, flags and RGB
    are bit-identical)."""
    x, y = np.asarray(x), np.asarray(y)
    if x.dtype.kind == "f" and not np.array_equal(x, y):
        np.testing.assert_array_max_ulp(x, y, maxulp=1)
    else:
        assert np.array_equal(x, y), where


@functools.lru_cache(maxsize=None)
def batched_rollouts(name, n_envs=4, length=14):
    env = make(name)

    def rollout(step, key, params):
        keys = jax.random.split(key, n_envs)
        obs, state = jax.vmap(env.reset, in_axes=(0, None))(keys, params)

        def body(state, key):
            k_act, k_step = jax.random.split(key)
            action = spaces.sample(env.action_space(params), k_act, (n_envs,))
            out = jax.vmap(step, in_axes=(0, 0, 0, None))(
                jax.random.split(k_step, n_envs), state, action, params)
            return out[1], out

        return jax.lax.scan(body, state, jax.random.split(key, length))[1]

    fast = jax.jit(functools.partial(rollout, env.step))
    slow = jax.jit(functools.partial(rollout, functools.partial(straightforward_step, env)))
    return fast, slow


@pytest.mark.parametrize("name", ["minimal", "explorer", "deathmatch"])
def test_fast_auto_reset_is_exactly_the_straightforward_one(name):
    env = make(name)
    params = ending_params(name, env)
    fast, slow = batched_rollouts(name)
    a, b = fast(jax.random.PRNGKey(1), params), slow(jax.random.PRNGKey(1), params)
    done = np.asarray(a[3] | a[4])
    assert 0 < done.mean() < 1, "the params should end some episodes, not all"
    if name == "deathmatch":
        respawned = np.asarray(a[5]["respawned"])
        assert respawned.any() and not respawned.all(axis=-1).all()
    flat_a, tree_a = jax.tree_util.tree_flatten(a)
    flat_b, tree_b = jax.tree_util.tree_flatten(b)
    assert tree_a == tree_b
    for path, x, y in zip(jax.tree_util.tree_flatten_with_path(a)[0], flat_a, flat_b):
        assert_same(x, y, jax.tree_util.keystr(path[0]))
    # unbatched (the cond then really branches) the one-env step agrees too
    key = jax.random.PRNGKey(2)
    obs, state = env.reset(key, params)
    step, ref = jax.jit(env.step), jax.jit(functools.partial(straightforward_step, env))
    for t in range(8):
        action = spaces.sample(env.action_space(params), jax.random.fold_in(key, t))
        one, two = step(jax.random.PRNGKey(t), state, action, params), ref(jax.random.PRNGKey(t), state, action, params)
        for x, y in zip(jax.tree_util.tree_leaves(one), jax.tree_util.tree_leaves(two)):
            assert_same(x, y, f"step {t}")
        state = one[1]


def _compiled_step(n_plans, n_envs=8):
    env = Explorer(res=32, subsample=2, geometries=[toys.box()] * n_plans)
    params = env.default_params
    obs, state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(jax.random.PRNGKey(0), n_envs), params)
    action = jnp.zeros((n_envs, 1), jnp.int32)
    step = jax.jit(jax.vmap(env.step, in_axes=(0, 0, 0, None)))
    compiled = step.lower(jax.random.split(jax.random.PRNGKey(1), n_envs), state, action, params).compile()
    return compiled, env


def test_vmapped_step_does_not_copy_the_scenery_per_env():
    """2 vs 32 plans (16x the pool): the step's temporaries and HLO do not grow with it."""
    small, env2 = _compiled_step(2)
    big, env32 = _compiled_step(32)
    pool_bytes = lambda env: sum(x.nbytes for x in jax.tree_util.tree_leaves(env.scene.pool))
    grown = pool_bytes(env32) - pool_bytes(env2)
    assert grown > 100_000
    temp = lambda c: c.memory_analysis().temp_size_in_bytes
    # copying the pool to each of the 8 envs would add 8 * grown bytes of temporaries
    assert temp(big) - temp(small) < grown / 4, (temp(small), temp(big), grown)
    ops = lambda c: sum(1 for line in c.as_text().splitlines() if " = " in line)
    assert abs(ops(big) - ops(small)) <= 4, (ops(small), ops(big))


def test_deathmatch_agent_that_dies_ends_its_own_stream_only():
    env = make("deathmatch")
    stats = EpisodeStatistics(env)
    params = env.default_params.replace(max_steps=50)
    obs, state = stats.reset(jax.random.PRNGKey(0), params)
    # agent 0 is about to die: the step cost takes it below 0 on the first step's render
    state = state.replace(env_state=state.env_state.replace(health=jnp.array([0.0005, 1.0, 1.0])))
    noop = jnp.zeros((3,), jnp.int32)
    step = jax.jit(stats.step)
    infos = []
    for t in range(4):
        obs, state, reward, terminated, truncated, info = step(jax.random.PRNGKey(t), state, noop, params)
        infos.append(info)
    ended = np.stack([np.asarray(i["agent_terminated"] | i["agent_truncated"]) for i in infos])
    # it died on step 0's render and respawns (its stream ends) on step 1; nobody else's ends
    assert ended.tolist() == [[False] * 3, [True, False, False], [False] * 3, [False] * 3]
    assert infos[1]["returned_episode"].tolist() == [True, False, False]
    assert infos[1]["returned_episode_lengths"].tolist() == [2, 0, 0]
    assert np.asarray(state.episode_lengths).tolist() == [2, 4, 4]
    assert not any(bool(i["agent_truncated"].any()) for i in infos)
    # the same in a batch and in the project's rollout helper
    batched = Batched(stats, 2)
    obs, states = batched.reset(jax.random.PRNGKey(0), params)
    states = states.replace(env_state=states.env_state.replace(
        health=jnp.array([[0.0005, 1.0, 1.0], [1.0, 1.0, 1.0]])))
    out = jax.jit(batched.step)(jax.random.PRNGKey(0), states, jnp.zeros((2, 3), jnp.int32), params)
    out = jax.jit(batched.step)(jax.random.PRNGKey(1), out[1], jnp.zeros((2, 3), jnp.int32), params)
    assert np.asarray(out[5]["agent_terminated"]).tolist() == [[True, False, False], [False] * 3]
    traj = recording.rollout(env, params.replace(max_steps=3), lambda k, o: noop, jax.random.PRNGKey(0), 4)
    assert traj.info["agent_truncated"].shape == (4, 3)
    assert np.asarray(traj.info["agent_truncated"][2]).all()  # the env's truncation ends every stream


def test_next_step_auto_reset_mode():
    """gymnasium's next-step mode: the end step shows the ended episode, the next resets."""
    from megastep_jax.wrappers import NextStepAutoReset

    env = make("minimal")
    params = env.default_params.replace(max_steps=2)
    nxt = NextStepAutoReset(env)
    obs, state = nxt.reset(jax.random.PRNGKey(0), params)
    step = jax.jit(nxt.step)
    action = jnp.array([3], jnp.int32)
    raw = state.env_state
    outs = []
    for t in range(4):
        out = step(jax.random.PRNGKey(t), state, action, params)
        outs.append(out)
        state = out[1]
    # step 1 ends the episode and shows its own last frame (the raw step's)
    k_step, k_reset = jax.random.split(jax.random.PRNGKey(0))
    o1, raw, *_ = env.step_env(k_step, raw, action, params)
    k_step, k_reset = jax.random.split(jax.random.PRNGKey(1))
    o2, raw, *_ = env.step_env(k_step, raw, action, params)
    assert bool(outs[1][4]) and np.array_equal(outs[1][0].rgb, o2.rgb)
    # step 2 resets: the fresh episode's first frame, reward 0, no end, action ignored
    fresh_obs, _ = env.reset_env(jax.random.split(jax.random.PRNGKey(2))[1], params)
    assert np.array_equal(outs[2][0].rgb, fresh_obs.rgb) and not bool(outs[2][3] | outs[2][4])
    assert outs[2][2].tolist() == [0.0] and int(outs[2][1].env_state.length) == 0
    batched = Batched(env, 3, autoreset="next_step")
    obs, states = batched.reset(jax.random.PRNGKey(0), params)
    assert states.ended.shape == (3,)
    with pytest.raises(ValueError, match="reset_ratio"):
        Batched(env, 3, reset_ratio=2, autoreset="next_step")
    with pytest.raises(ValueError, match="autoreset"):
        Batched(env, 3, autoreset="sometimes")
