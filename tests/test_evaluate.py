"""agents.evaluate.make_evaluate: first episodes scored, the loop stops once all have ended."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import networks
from agents.evaluate import make_evaluate
from megastep_jax.envs.base import Batched

from test_ppo import CueEnv, CueParams


class EndingCueEnv(CueEnv):
    """CueEnv whose episodes also end at random (probability 0.08 a step), so first
    episodes have different lengths."""

    def step_env(self, key, s, action, params):
        k_env, k_end = jax.random.split(key)
        obs, s, reward, _, truncated, info = super().step_env(k_env, s, action, params)
        return obs, s, reward, jax.random.bernoulli(k_end, 0.08), truncated, info


@pytest.fixture(scope="module")
def setup():
    env = EndingCueEnv(n_agents=2)
    net = networks.ActorCritic.from_spaces(env.observation_space(), env.action_space(), width=8,
                                           core="mlp", image_kwargs=(("conv_features", (4,)),
                                                                     ("conv_kernels", (3,)),
                                                                     ("conv_strides", (1,))))
    obs, _ = Batched(env, 1).reset(jax.random.PRNGKey(0), env.default_params)
    add = lambda x: x[None]
    params = net.init(jax.random.PRNGKey(0), net.initial_carry((1, 2)),
                      jax.tree_util.tree_map(add, obs), jnp.ones((1, 1, 2), bool))
    return env, net, params


def first_episodes_by_scan(env, n_envs, n_steps, key, env_params):
    """Reference: every one of n_steps steps run, random actions drawn as the evaluation
    draws them; (return (n_envs, A), length (n_envs,), running (n_envs,))."""
    from megastep_jax import spaces
    batched = Batched(env, n_envs)
    key, k_reset = jax.random.split(key)
    _, state = batched.reset(k_reset, env_params)
    space = env.action_space(env_params)

    def body(c, key):
        state, ret, length, running = c
        k_act, k_env = jax.random.split(key)
        action = jax.vmap(lambda k: spaces.sample(space, k))(jax.random.split(k_act, n_envs))
        _, state, reward, terminated, truncated, _ = batched.step(k_env, state, action, env_params)
        ret = ret + jnp.where(running[:, None], reward, 0.0)
        length = length + running
        running = running & ~(terminated | truncated)
        return (state, ret, length, running), None

    c = (state, jnp.zeros((n_envs, env.n_agents)), jnp.zeros((n_envs,), jnp.int32),
         jnp.ones((n_envs,), bool))
    (_, ret, length, running), _ = jax.lax.scan(body, c, jax.random.split(key, n_steps))
    return ret, length, running


@pytest.mark.parametrize("n_steps", [200, 3], ids=["past_every_end", "cap_before_the_ends"])
def test_stops_when_every_first_episode_has_ended_with_the_scores_of_a_full_run(setup, n_steps):
    """With room, the loop stops at the longest first episode; with a short cap, unfinished
    episodes score their partial returns. Either way the scores are those of the reference
    that runs every one of the n_steps."""
    env, net, params = setup
    env_params = CueParams(max_steps=60)
    key = jax.random.PRNGKey(3)
    n_envs = 6
    out = make_evaluate(net, env, n_envs, n_steps, "random")(key, params, env_params)
    ret, length, running = first_episodes_by_scan(env, n_envs, n_steps, key, env_params)
    lengths = np.asarray(length)
    if n_steps == 200:
        assert not bool(running.any())
        assert len(set(lengths.tolist())) > 1  # the random ends give different lengths
        # the loop ran exactly as long as the longest first episode, not n_steps
        assert int(out["steps"]) == lengths.max() < n_steps
    else:
        assert int(out["steps"]) == n_steps and float(out["unfinished"]) > 0
    np.testing.assert_allclose(float(out["episode_return"]), float(jnp.mean(ret)), rtol=1e-6)
    np.testing.assert_allclose(float(out["episode_length"]), lengths.mean(), rtol=1e-6)
    np.testing.assert_allclose(float(out["unfinished"]), float(jnp.mean(running)), rtol=1e-6)
    assert 0.0 < float(out["reward"]) <= 1.0 and 0.0 <= float(out["info/correct"]) <= 1.0


def test_the_trained_policies_run_and_bad_arguments_are_named(setup):
    env, net, params = setup
    env_params = CueParams(max_steps=30)
    for policy in ("sample", "greedy"):
        out = make_evaluate(net, env, 3, 100, policy)(jax.random.PRNGKey(1), params, env_params)
        assert int(out["steps"]) <= 30 and float(out["unfinished"]) == 0.0
    with pytest.raises(ValueError, match="n_steps"):
        make_evaluate(net, env, 3, 0, "sample")
    with pytest.raises(ValueError, match="policy"):
        make_evaluate(net, env, 3, 10, "best")
