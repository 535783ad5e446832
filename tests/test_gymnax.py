"""megastep_jax.gymnax: our envs as gymnax environments, driven by gymnax's own wrappers and
a purejaxrl-shaped PPO (tests/gymnax_ppo.py) under jit and vmap."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnax.environments import environment as gymnax_environment
from gymnax.environments import spaces as gxs
from gymnax.wrappers import FlattenObservationWrapper, LegacyStepAPIWrapper, LogWrapper

try:  # tests/ is on sys.path under pytest's default import mode
    from gymnax_ppo import make_evaluate, make_train
except ImportError:  # importlib mode: import it as a namespace package
    from tests.gymnax_ppo import make_evaluate, make_train
from megastep_jax import gymnax as mg
from megastep_jax.arrdict import arrdict
from megastep_jax.envs import Explorer, Minimal

KEY = jax.random.PRNGKey(0)
SMALL_EXPLORER = dict(res=32, subsample=4, n_geometries=1)

minimal, minimal_params = mg.make("Minimal", res=16)
explorer, explorer_params = mg.make("Explorer", **SMALL_EXPLORER)


def test_make_gives_a_gymnax_environment_with_its_descriptive_interface():
    assert isinstance(minimal, gymnax_environment.Environment)
    assert minimal.name == "Minimal" and explorer.name == "Explorer"
    assert minimal.num_actions == 7
    assert minimal_params == Minimal().default_params
    assert explorer.default_params == explorer_params


def test_spaces_are_gymnax_spaces_users_can_sample_and_check():
    act = minimal.action_space(minimal_params)
    assert isinstance(act, gxs.Discrete) and act.n == 7 and act.shape == ()
    a = act.sample(KEY)
    assert a.shape == () and a.dtype == jnp.int32 and bool(act.contains(a))
    assert not bool(act.contains(7)) and not bool(act.contains(-1))

    obs_space = explorer.observation_space(explorer_params)
    assert isinstance(obs_space, gxs.Box)
    W = 32 // 4
    assert obs_space.shape == (W + 3 + 3 * W,)  # d, imu, rgb
    x = obs_space.sample(KEY)
    assert x.shape == obs_space.shape and np.all(np.isfinite(x))  # imu is unbounded
    assert bool(obs_space.contains(x))
    assert not bool(obs_space.contains(x.at[-1].set(2.0)))  # rgb is in [0, 1]
    assert not bool(obs_space.contains(x[:-1]))
    obs, _ = explorer.reset(KEY, explorer_params)
    assert bool(obs_space.contains(obs))


def test_observation_is_the_sorted_keys_flattened_and_unflattens():
    env = Explorer(**SMALL_EXPLORER)
    obs, _ = env.reset(KEY, env.default_params)
    flat, _ = explorer.reset(KEY, explorer_params)
    assert [k for k, *_ in explorer.layout] == ["d", "imu", "rgb"]
    want = np.concatenate([np.asarray(obs[k][0]).ravel() for k in ("d", "imu", "rgb")])
    np.testing.assert_array_equal(flat, want)
    back = explorer.unflatten(flat)
    for k in obs:
        np.testing.assert_array_equal(back[k], obs[k][0])
    batch = explorer.unflatten(jnp.stack([flat, flat]))
    assert batch["rgb"].shape == (2, 3, 1, 32 // 4)


_minimal_step = jax.jit(minimal.step)


def test_step_takes_a_bare_int_and_gives_scalars_as_the_env_does():
    obs, state = minimal.reset(KEY, minimal_params)
    out = _minimal_step(jax.random.PRNGKey(1), state, jnp.int32(2), minimal_params)
    assert len(out) == 6
    obs2, state2, reward, terminated, truncated, info = out
    assert obs2.shape == (48,) and reward.shape == () and reward.dtype == jnp.float32
    assert terminated.shape == () and truncated.shape == () and terminated.dtype == jnp.bool_
    assert "final_observation" not in info
    assert set(info) >= {"terminated", "truncated"}
    # the same transition as the env's own step with the arrdict action
    env = minimal.env
    eobs, estate, ereward, *_ = env.step(jax.random.PRNGKey(1), state, arrdict(movement=jnp.array([2])),
                                         minimal_params)
    np.testing.assert_array_equal(obs2, minimal.flatten(eobs)[0])
    np.testing.assert_array_equal(reward, ereward[0])
    # a Python int works too (gymnax's own envs take one)
    obs3, *_ = minimal.step(jax.random.PRNGKey(1), state, 2, minimal_params)
    np.testing.assert_array_equal(obs3, obs2)


def test_final_observation_only_when_asked_and_it_is_the_ended_episodes():
    env, params = mg.make("Minimal", res=16, final_observation=True)
    params = params.replace(max_steps=2)
    obs, state = env.reset(KEY, params)
    step = jax.jit(env.step)
    obs1, state, *_, info1 = step(jax.random.PRNGKey(1), state, 0, params)
    np.testing.assert_array_equal(info1["final_observation"], obs1)  # not done: the step's
    obs2, state, _, _, truncated, info2 = step(jax.random.PRNGKey(2), state, 0, params)
    assert bool(truncated)
    assert info2["final_observation"].shape == obs2.shape
    assert not np.array_equal(info2["final_observation"], obs2)  # obs starts the next episode
    assert int(state.length) == 0


def test_legacy_step_is_the_five_tuple():
    env, params = mg.make("Minimal", res=16, legacy_step=True)
    _, state = env.reset(KEY, params)
    out = env.step(KEY, state, 1, params.replace(max_steps=1))
    assert len(out) == 5
    assert bool(out[3])  # done = terminated | truncated
    assert bool(out[4]["truncated"]) and not bool(out[4]["terminated"])


def test_bad_names_options_and_actions_are_refused_with_the_argument_named():
    with pytest.raises(ValueError, match="name"):
        mg.make("CartPole-v1")
    with pytest.raises(ValueError, match="multi_agent"):
        mg.make("Minimal", n_agents=2, res=16)
    with pytest.raises(ValueError, match="multi_agent"):
        mg.make("Minimal", res=16, multi_agent="per_agent")
    with pytest.raises(ValueError, match="legacy_step"):
        mg.make("Minimal", res=16, legacy_step="yes")
    _, state = minimal.reset(KEY, minimal_params)
    with pytest.raises(ValueError, match="action"):
        minimal.step(KEY, state, 7, minimal_params)
    with pytest.raises(ValueError, match="action"):
        minimal.step(KEY, state, 1.0, minimal_params)
    with pytest.raises(ValueError, match="action"):
        minimal.step(KEY, state, jnp.array([1, 2]), minimal_params)


def test_multi_agent_envs_keep_an_agent_axis_when_asked():
    env, params = mg.make("Minimal", n_agents=3, res=16, multi_agent="agent_axis")
    obs, state = env.reset(KEY, params)
    assert obs.shape == (3, 48)
    assert env.observation_space(params).shape == (48,)  # one agent's
    obs, state, reward, terminated, truncated, info = jax.jit(env.step)(
        KEY, state, jnp.array([0, 1, 2], jnp.int32), params)
    assert obs.shape == (3, 48) and reward.shape == (3,)
    assert terminated.shape == (3,) and truncated.shape == (3,)


def _ppo_metrics(env, params, legacy, n_updates=2):
    train = jax.jit(make_train(env, params, n_envs=4, n_steps=8, n_updates=n_updates, legacy=legacy))
    ts, metrics = train(jax.random.PRNGKey(3))
    return ts, jax.device_get(metrics)


def test_purejaxrl_shaped_ppo_runs_on_gymnax_wrappers_minimal():
    # gymnax 1.x stack: FlattenObservationWrapper reads info["final_observation"]
    env, params = mg.make("Minimal", res=16, final_observation=True)
    params = params.replace(max_steps=5)
    env = LegacyStepAPIWrapper(LogWrapper(FlattenObservationWrapper(env)))
    ts, m = _ppo_metrics(env, params, legacy=True)
    assert m["reward"].shape == (2, 8, 4) and m["done"].dtype == bool
    assert m["returned_episode"].any()
    np.testing.assert_array_equal(m["returned_episode_lengths"][m["returned_episode"]], 5)
    assert all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves(ts.params))


def test_purejaxrl_shaped_ppo_runs_on_explorer_with_the_legacy_step_vmapped_over_seeds():
    # purejaxrl's ppo.py: the 5-tuple step straight from make; and its vmap of train over seeds
    env, params = mg.make("Explorer", legacy_step=True, **SMALL_EXPLORER)
    train = make_train(env, params, n_envs=4, n_steps=8, n_updates=1, legacy=True)
    ts, m = jax.jit(jax.vmap(train))(jax.random.split(jax.random.PRNGKey(3), 2))
    m = jax.device_get(m)
    assert m["reward"].shape == (2, 1, 8, 4)
    assert (m["reward"] > 0).any()  # exploring is rewarded
    assert not np.array_equal(m["reward"][0], m["reward"][1])  # each seed its own run
    assert "final_observation" not in m and set(m) >= {"terminated", "truncated", "potential"}


@pytest.mark.slow
def test_ppo_on_explorer_beats_a_random_policy():
    """Reward per step over the first 200 steps of fresh episodes (before any can end).

    Measured 2026-11-30 (2 loaded cores, ~1.5 min): random 0.118, trained 0.186 (50 updates of
    16 envs x 64 steps) at res=64, subsample=4, n_geometries=2.
    """
    env, params = mg.make("Explorer", res=64, subsample=4, n_geometries=2)
    train = jax.jit(make_train(env, params, n_envs=16, n_steps=64, n_updates=50, n_epochs=4,
                               n_minibatches=4, lr=1e-3))
    ts, _ = train(jax.random.PRNGKey(0))
    evaluate = make_evaluate(env, params)
    random = float(jax.jit(lambda k: evaluate(None, k))(jax.random.PRNGKey(1)))
    trained = float(jax.jit(evaluate)(ts.params, jax.random.PRNGKey(1)))
    assert trained > 1.2 * random, (trained, random)
