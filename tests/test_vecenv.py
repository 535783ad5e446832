"""The baselines-interface VecEnv over functional envs: shapes, slots, auto-reset, determinism, helpers."""
import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

from megastep_jax import spaces
from megastep_jax.arrdict import arrdict
from megastep_jax.envs.base import Environment
from megastep_jax.vecenv import (VecEnv, VecEnvObservationWrapper, copy_obs_dict, dict_to_obs, gym_space,
                                 obs_space_info, obs_to_dict, tile_images)


@struct.dataclass
class ToyState:
    pos: jax.Array    # (A,) float32, position on a line
    t: jax.Array      # () int32, steps taken this episode
    limit: jax.Array  # () int32, episode length, drawn at reset


@struct.dataclass
class ToyParams:
    max_steps: int = 7


class Toy(Environment):
    """A pure-jnp env with megastep's interface: agents walk on a line and see it.

    Action 0 stays, 1 steps right, 2 steps left. Reward is the step taken. Episodes
    terminate after a drawn length in [3, max_steps) and truncate at max_steps.
    """

    def __init__(self, n_agents=1, width=8):
        self.n_agents = n_agents
        self.width = width

    @property
    def default_params(self):
        return ToyParams()

    def observation_space(self, params):
        return arrdict(rgb=spaces.MultiImage(self.n_agents, 3, 1, self.width),
                       imu=spaces.MultiVector(self.n_agents, 2))

    def action_space(self, params):
        return spaces.MultiDiscrete(self.n_agents, 3)

    def _obs(self, state):
        x = jnp.linspace(0, 1, self.width)
        rgb = jnp.clip(jnp.abs(jnp.sin(x[None, :] * 3 + state.pos[:, None])), 0, 1)
        rgb = jnp.broadcast_to(rgb[:, None, None, :], (self.n_agents, 3, 1, self.width))
        imu = jnp.stack([state.pos, jnp.broadcast_to(state.t, state.pos.shape).astype(jnp.float32)], -1)
        return arrdict(rgb=rgb.astype(jnp.float32), imu=imu.astype(jnp.float32))

    def reset_env(self, key, params):
        k1, k2 = jax.random.split(key)
        state = ToyState(pos=jax.random.uniform(k1, (self.n_agents,)),
                         t=jnp.int32(0), limit=jax.random.randint(k2, (), 3, 2 ** 20))
        return self._obs(state), state

    def step_env(self, key, state, action, params):
        move = jnp.array([0.0, 1.0, -1.0])[action]
        state = state.replace(pos=state.pos + move, t=state.t + 1)
        terminated = state.t >= state.limit
        truncated = (state.t >= params.max_steps) & ~terminated
        return self._obs(state), state, move.astype(jnp.float32), terminated, truncated, {}


TOY1, TOY2 = Toy(n_agents=1), Toy(n_agents=2)  # shared, so each compiles once


def test_spaces_drop_the_agent_axis():
    venv = VecEnv(TOY2, n_envs=3)
    assert venv.num_envs == 6
    assert venv.observation_space == gymnasium.spaces.Dict(
        rgb=gymnasium.spaces.Box(0, 1, (3, 1, 8), np.float32),
        imu=gymnasium.spaces.Box(-np.inf, np.inf, (2,), np.float32))
    assert venv.action_space == gymnasium.spaces.Discrete(3)
    act = gym_space(arrdict(move=spaces.MultiDiscrete(2, 7), fire=spaces.MultiDiscrete(2, 2)), action=True)
    assert act == gymnasium.spaces.MultiDiscrete([7, 2])


def test_step_shapes_slots_and_rewards():
    venv = VecEnv(TOY2, n_envs=3, seed=1)
    obs = venv.reset()
    assert obs["rgb"].shape == (6, 3, 1, 8) and obs["imu"].shape == (6, 2)
    assert venv.observation_space.contains(jax.tree_util.tree_map(lambda x: x[0], obs))
    actions = np.array([1, 2, 0, 1, 2, 0])
    obs2, rewards, dones, infos = venv.step(actions)
    np.testing.assert_array_equal(rewards, [1, -1, 0, 1, -1, 0])
    # slot i is agent i % 2 of env i // 2: its position moved by its own action
    np.testing.assert_allclose(obs2["imu"][:, 0] - obs["imu"][:, 0], [1, -1, 0, 1, -1, 0], atol=1e-6)
    assert rewards.dtype == np.float32 and dones.dtype == bool
    rewards += 1.0  # learners (SB3's timeout bootstrap) edit rewards in place
    obs2["imu"][:] = 0  # and may scribble on observations without touching ours
    assert venv.get_images()[0].shape[-1] == 3
    assert len(infos) == 6 and infos[0] == {}


def test_done_gives_terminal_observation_and_episode_stats():
    venv = VecEnv(TOY1, n_envs=2, seed=0)
    venv.reset()
    last = None
    for t in range(7):
        obs, rewards, dones, infos = venv.step(np.ones(2, int))
        if t < 6:
            assert not dones.any()
            last = obs
    # max_steps=7 truncates every env at step 7 (drawn limits are far larger)
    assert dones.all()
    for i in range(2):
        info = infos[i]
        assert info["TimeLimit.truncated"] is True
        assert info["episode"] == {"r": 7.0, "l": 7}
        np.testing.assert_allclose(info["terminal_observation"]["imu"], last["imu"][i] + [1, 1])
    # the returned obs is a fresh episode's
    np.testing.assert_array_equal(obs["imu"][:, 1], 0)


def test_same_seed_same_trajectory_different_seed_differs():
    def run(seed):
        venv = VecEnv(TOY1, n_envs=4, seed=seed)
        out = [venv.reset()["imu"]]
        for t in range(9):
            out.append(venv.step(np.full(4, t % 3))[0]["imu"])
        return np.stack(out)

    np.testing.assert_array_equal(run(3), run(3))
    assert not np.array_equal(run(3), run(4))


def test_async_protocol_and_bad_actions():
    venv = VecEnv(TOY1, n_envs=2)
    venv.reset()
    with pytest.raises(ValueError, match="actions"):
        venv.step_async(np.zeros(3, int))
    with pytest.raises(ValueError, match="actions"):
        venv.step_async(np.array([0, 5]))
    with pytest.raises(ValueError, match="step_wait"):
        venv.step_wait()
    venv.step_async(np.zeros(2, int))
    with pytest.raises(ValueError, match="pending"):
        venv.step_async(np.zeros(2, int))
    venv.step_wait()
    venv.close()
    assert venv.closed


def test_reset_single_env_resets_only_that_env():
    venv = VecEnv(TOY2, n_envs=2, seed=0)
    venv.reset()
    obs, *_ = venv.step(np.ones(4, int))
    new = venv.reset_single_env(3)       # slot 3 is agent 1 of env 1
    assert new["imu"][1] == 0            # t reset
    obs2, *_ = venv.step(np.zeros(4, int))
    np.testing.assert_array_equal(obs2["imu"][:2, 1], [2, 2])   # env 0 kept going
    np.testing.assert_array_equal(obs2["imu"][2:, 1], [1, 1])   # env 1 restarted
    with pytest.raises(ValueError, match="i:"):
        venv.reset_single_env(4)


def test_tile_images_and_render():
    imgs = np.arange(5 * 2 * 3 * 1).reshape(5, 2, 3, 1)
    big = tile_images(imgs)
    assert big.shape == (3 * 2, 2 * 3, 1)
    np.testing.assert_array_equal(big[0:2, 3:6], imgs[1])
    np.testing.assert_array_equal(big[2:4, 0:3], imgs[2])
    np.testing.assert_array_equal(big[4:6, 3:6], 0)  # the padding cell
    venv = VecEnv(TOY1, n_envs=3)
    venv.reset()
    images = venv.get_images()
    assert len(images) == 3 and images[0].dtype == np.uint8 and images[0].shape[-1] == 3
    frame = venv.render(mode="rgb_array")
    assert frame.shape == (2 * images[0].shape[0], 2 * images[0].shape[1], 3)
    with pytest.raises(ValueError, match="mode"):
        venv.render(mode="human")


def test_obs_dict_helpers():
    box = gymnasium.spaces.Box(0, 1, (2,))
    assert obs_space_info(box) == ([None], {None: (2,)}, {None: np.dtype(np.float32)})
    keys, shapes, _ = obs_space_info(gymnasium.spaces.Dict(a=box, b=gymnasium.spaces.Discrete(3)))
    assert keys == ["a", "b"] and shapes == {"a": (2,), "b": ()}
    x = np.zeros(2)
    assert obs_to_dict(x)[None] is x and dict_to_obs(obs_to_dict(x)) is x
    d = {"a": x}
    assert dict_to_obs(d) is d
    c = copy_obs_dict(d)
    c["a"][0] = 1
    assert x[0] == 0


def test_observation_wrapper():
    class Scale(VecEnvObservationWrapper):
        def process(self, obs):
            return {k: v * 2 for k, v in obs.items()}

    base = VecEnv(TOY1, n_envs=2, seed=5)
    wrapped = Scale(VecEnv(TOY1, n_envs=2, seed=5))
    np.testing.assert_array_equal(wrapped.reset()["imu"], 2 * base.reset()["imu"])
    np.testing.assert_array_equal(wrapped.step(np.ones(2, int))[0]["imu"], 2 * base.step(np.ones(2, int))[0]["imu"])
    assert wrapped.num_envs == 2 and wrapped.n_agents == 1 and wrapped.unwrapped is not wrapped


@pytest.fixture(scope="module")
def minimal():
    from megastep_jax.envs.minimal import Minimal

    return Minimal(res=8)


def test_minimal_vecenv_steps_and_truncates(minimal):
    from megastep_jax.envs.minimal import MinimalParams

    venv = VecEnv(minimal, n_envs=2, params=MinimalParams(max_steps=3), seed=0)
    assert venv.observation_space == gymnasium.spaces.Dict(rgb=gymnasium.spaces.Box(0, 1, (3, 1, 8), np.float32))
    assert venv.action_space == gymnasium.spaces.Discrete(7)   # one movement head: one choice per slot
    obs = venv.reset()
    assert obs["rgb"].shape == (2, 3, 1, 8) and venv.observation_space.contains({"rgb": obs["rgb"][0]})
    for t in range(3):
        moved, rewards, dones, infos = venv.step(np.full((2, 1), 5))   # turn on the spot
        assert not np.array_equal(moved["rgb"], obs["rgb"]) or t == 2
        obs = moved
    assert dones.all() and all(i["TimeLimit.truncated"] and i["episode"]["l"] == 3 for i in infos)
    assert infos[0]["terminal_observation"]["rgb"].shape == (3, 1, 8)
    assert venv.render().shape[-1] == 3


def test_plot_images_of_minimal(minimal):
    venv = VecEnv(minimal, n_envs=2, image_fn="plot")
    venv.reset()
    a, b = venv.get_images()
    assert a.shape == (600, 1200, 3) and not np.array_equal(a, b)   # each env's own plan
    with pytest.raises(ValueError, match="image_fn"):
        VecEnv(TOY1, n_envs=1, image_fn="plot")


def test_writing_into_returned_arrays_leaves_the_vecenv_unchanged():
    # a twin run with the same seed and actions, whose returns nobody touches, is the reference
    venv, twin = VecEnv(TOY2, n_envs=2, seed=4), VecEnv(TOY2, n_envs=2, seed=4)
    obs = venv.reset()
    twin.reset()
    obs["rgb"][:] = 0.25
    obs["imu"][:] = 99
    np.testing.assert_array_equal(np.stack(venv.get_images()), np.stack(twin.get_images()))
    act = np.array([1, 2, 1, 1])
    ended = False
    for _ in range(8):   # through the truncation at step 7: terminal observations too
        obs, rewards, dones, infos = venv.step(act)
        _, ref_rewards, _, ref_infos = twin.step(act)
        for k in obs:
            obs[k][:] = -1
        rewards[:] = 123
        dones[:] = ~dones
        for info in infos:
            if "terminal_observation" in info:
                ended = True
                info["terminal_observation"]["imu"][:] = -5
                info["episode"]["r"] = -1.0
    assert ended
    np.testing.assert_array_equal(venv.slots.obs["imu"], twin.slots.obs["imu"])
    np.testing.assert_array_equal(np.stack(venv.get_images()), np.stack(twin.get_images()))
    # the running returns were not touched by writing into the rewards
    _, _, _, infos = venv.step(act)
    _, _, _, ref_infos = twin.step(act)
    np.testing.assert_array_equal(venv._returns, twin._returns)


class DyingToy(Toy):
    """Toy with per-agent episode ends: agent 0 alone ends its stream every 3rd step."""

    def step_env(self, key, state, action, params):
        obs, state, reward, terminated, truncated, info = super().step_env(key, state, action, params)
        alone = jnp.arange(self.n_agents) == 0
        info = dict(info, agent_terminated=(state.t % 3 == 0) & alone | terminated,
                    agent_truncated=jnp.broadcast_to(truncated, (self.n_agents,)))
        return obs, state, reward, terminated, truncated, info


def test_slots_end_where_their_agent_ends():
    venv = VecEnv(DyingToy(n_agents=2), n_envs=1, params=ToyParams(max_steps=100), seed=0)
    venv.reset()
    for t in range(1, 4):
        _, rewards, dones, infos = venv.step(np.array([1, 2]))
    assert dones.tolist() == [True, False]   # agent 0 ended its stream alone at step 3
    assert infos[0]["episode"] == {"r": 3.0, "l": 3} and "episode" not in infos[1]
    assert not infos[0]["TimeLimit.truncated"]
    _, _, dones, infos = venv.step(np.array([1, 2]))
    assert not dones.any()
    for _ in range(2):
        _, _, dones, infos = venv.step(np.array([1, 2]))
    assert dones.tolist() == [True, False] and infos[0]["episode"] == {"r": 3.0, "l": 3}


def test_terminal_observations_of_a_wrapped_env_go_through_its_wrappers():
    from megastep_jax.wrappers import FrameStack

    venv = VecEnv(FrameStack(TOY1, 2), n_envs=2, seed=0)
    assert venv.observation_space["imu"].shape == (4,)
    obs = venv.reset()
    for _ in range(7):   # truncated at step 7
        obs, _, dones, infos = venv.step(np.ones(2, int))
    assert dones.all()
    final = infos[0]["terminal_observation"]["imu"]
    assert final[1] == 6 and final[3] == 7 and final[2] == final[0] + 1   # the last two frames, stacked
    assert obs["imu"][0, 1] == 0 and obs["imu"][0, 3] == 0             # the fresh episode's stack
