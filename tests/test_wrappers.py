"""Wrappers: exact behaviour on a tiny counting env, and composition on a real env in a scan."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

from megastep_jax import recording, spaces
from megastep_jax.arrdict import arrdict, dotdict
from megastep_jax.envs import Environment, Minimal
from megastep_jax.wrappers import (EpisodeStatistics, FinalObservation, FrameStack, LegacyStep,
                                   NormalizeObservation, Wrapper)


@struct.dataclass
class CounterParams:
    max_steps: int = 3


@struct.dataclass
class CounterState:
    t: jax.Array  # () int32


class Counter(Environment):
    """Two agents; obs img = t/10 everywhere, vec = (t, -t); reward (t, 2t); truncates."""

    n_agents = 2

    @property
    def default_params(self):
        return CounterParams()

    def observation_space(self, params=None):
        return dotdict(img=spaces.MultiImage(2, 1, 1, 3), vec=spaces.MultiVector(2, 2))

    def action_space(self, params=None):
        return dotdict(movement=spaces.MultiDiscrete(2, 7))

    def _obs(self, t):
        t = t.astype(jnp.float32)
        return arrdict(img=jnp.full((2, 1, 1, 3), t / 10), vec=jnp.stack([jnp.stack([t, -t])] * 2))

    def reset_env(self, key, params):
        return self._obs(jnp.int32(0)), CounterState(jnp.int32(0))

    def step_env(self, key, state, action, params):
        t = state.t + 1
        reward = jnp.stack([t, 2 * t]).astype(jnp.float32)
        return self._obs(t), CounterState(t), reward, jnp.bool_(False), t >= params.max_steps, {}


def run(env, n, key=jax.random.PRNGKey(0), params=None):
    """Steps 0..n of a rollout with action 0 (the project's one helper, recording.rollout_fn)."""
    params = env.default_params if params is None else params
    zeros = lambda key, obs: arrdict(movement=jnp.zeros((env.n_agents,), jnp.int32))
    traj = recording.rollout_fn(env, zeros, n)(key, params)
    at = lambda tree, t: jax.tree_util.tree_map(lambda x: x[t], tree)
    out = [(at(traj.obs, 0), at(traj.state, 0), None)]
    for t in range(n):
        out.append((at(traj.obs, t + 1), at(traj.state, t + 1), traj.reward[t], traj.terminated[t],
                    traj.truncated[t], at(traj.info, t)))
    return out


def test_episode_statistics_tracks_returns_and_lengths():
    env = EpisodeStatistics(Counter())
    steps = run(env, 4)
    _, state, reward, terminated, truncated, info = steps[3]
    assert bool(truncated) and info["returned_episode"].tolist() == [True, True]  # per agent
    assert info["returned_episode_returns"].tolist() == [6.0, 12.0]  # 1+2+3, 2+4+6
    assert info["returned_episode_lengths"].tolist() == [3, 3]
    assert state.episode_returns.tolist() == [0.0, 0.0] and state.episode_lengths.tolist() == [0, 0]
    _, state, _, _, _, info = steps[4]  # first step of the next episode
    assert not bool(info["returned_episode"].any())
    assert state.episode_returns.tolist() == [1.0, 2.0]
    assert info["returned_episode_returns"].tolist() == [6.0, 12.0]
    assert env.n_agents == 2 and env.unwrapped.__class__ is Counter


def test_frame_stack_rolls_and_refills_after_reset():
    env = FrameStack(FinalObservation(Counter()), 3)
    space = env.observation_space()
    assert space.img == spaces.MultiImage(2, 3, 1, 3) and space.vec.shape == (2, 6)
    steps = run(env, 4)
    first = steps[0][0]
    assert np.allclose(first.img[0, :, 0, 0], [0, 0, 0])
    obs = steps[2][0]
    assert np.allclose(obs.img[0, :, 0, 0], [0.0, 0.1, 0.2])
    assert np.allclose(obs.vec[0], [0, 0, 1, -1, 2, -2])
    obs, state, reward, terminated, truncated, info = steps[3]  # ends: t 3, then fresh
    assert bool(truncated)
    assert np.allclose(info["final_observation"].img[0, :, 0, 0], [0.1, 0.2, 0.3])
    assert np.allclose(obs.img[0, :, 0, 0], [0, 0, 0])
    assert np.allclose(steps[4][0].img[1, :, 0, 0], [0, 0, 0.1])
    assert bool(spaces.contains(space, steps[2][0]))
    with pytest.raises(ValueError, match="n_frames"):
        FrameStack(Counter(), 0)


def test_normalize_observation_running_moments():
    env = NormalizeObservation(Counter(), keys=["vec"])
    steps = run(env, 2)
    # after reset the only sample is itself: normalised to 0
    assert np.allclose(steps[0][0].vec, 0.0)
    # vec first column over t = 0, 1, 2: mean 1, var 2/3; the latest (2) is (2-1)/sqrt(2/3)
    obs, state = steps[2][0], steps[2][1]
    assert np.allclose(obs.vec[0], [1 / np.sqrt(2 / 3), -1 / np.sqrt(2 / 3)], atol=1e-4)
    assert np.allclose(state.moments.mean.vec[0], [1.0, -1.0])
    assert np.allclose(obs.img, steps[2][0].img) and float(obs.img.max()) == pytest.approx(0.2)
    space = env.observation_space()
    assert bool(spaces.contains(space, obs)) and space.img == spaces.MultiImage(2, 1, 1, 3)


def test_normalize_observation_pools_over_a_named_vmap_axis():
    env = NormalizeObservation(Counter(), keys=["vec"], axis_name="envs")
    params = CounterParams(max_steps=5)
    reset = jax.vmap(lambda k: env.reset(k, params), axis_name="envs")
    obs, state = reset(jax.random.split(jax.random.PRNGKey(0), 4))
    assert float(state.moments.count[0]) == 4.0
    action = arrdict(movement=jnp.zeros((4, 2), jnp.int32))
    step = jax.vmap(lambda k, s, a: env.step(k, s, a, params), axis_name="envs")
    obs, state, *_ = step(jax.random.split(jax.random.PRNGKey(1), 4), state, action)
    assert float(state.moments.count[0]) == 8.0
    assert np.allclose(state.moments.mean.vec[:, 0, 0], 0.5)


def test_legacy_step_returns_gymnax_five_tuple():
    env = LegacyStep(EpisodeStatistics(Counter()))
    params = env.default_params
    obs, state = env.reset(jax.random.PRNGKey(0), params)
    action = arrdict(movement=jnp.zeros((2,), jnp.int32))
    out = env.step(jax.random.PRNGKey(0), state, action, params)
    assert len(out) == 5
    obs, state, reward, done, info = out
    assert done.dtype == jnp.bool_ and not bool(done)
    assert "terminated" in info and "truncated" in info and "final_observation" not in info
    info = LegacyStep(FinalObservation(Counter())).step(jax.random.PRNGKey(0), state.env_state, action, params)[4]
    assert "final_observation" in info


def test_wrappers_refuse_raw_transitions():
    with pytest.raises(NotImplementedError, match="inner env"):
        FrameStack(Counter(), 2).step_env(None, None, None, None)


def test_composition_on_minimal_in_a_jitted_scan():
    base = Minimal(res=16)
    env = EpisodeStatistics(FrameStack(NormalizeObservation(base), 2))
    params = base.default_params.replace(max_steps=5)

    @jax.jit
    def rollout(key):
        obs, state = env.reset(key, params)

        def body(carry, key):
            obs, state = carry
            k1, k2 = jax.random.split(key)
            action = spaces.sample(env.action_space(params), k1)
            obs, state, reward, terminated, truncated, info = env.step(k2, state, action, params)
            return (obs, state), (obs, info["returned_episode"], info["returned_episode_lengths"])

        return jax.lax.scan(body, (obs, state), jax.random.split(key, 12))

    (obs, state), (obss, ended, lengths) = rollout(jax.random.PRNGKey(0))
    assert obss.rgb.shape == (12, 1, 6, 1, 16)
    assert bool(jnp.all(jnp.isfinite(obss.rgb)))
    assert np.asarray(ended).nonzero()[0].tolist() == [4, 9]
    assert lengths[-1].tolist() == [5]  # per agent
    assert bool(spaces.contains(env.observation_space(params), obs))
    # the plot state reaches through the wrappers to the base env
    assert env.state(state).agents.positions.shape == (1, 2)
