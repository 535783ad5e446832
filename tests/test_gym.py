"""gymnasium adapters: the env checker on the single-env view, the vector env's autoreset."""
import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from megastep_jax.gym import GymnasiumEnv, GymnasiumVectorEnv
try:  # tests/ is on sys.path under pytest's default import mode
    from test_vecenv import TOY1, TOY2
except ImportError:  # importlib mode: import it as a namespace package
    from tests.test_vecenv import TOY1, TOY2


def test_gymnasium_env_checker_passes_on_single_env_view():
    env = GymnasiumEnv(TOY1, render_mode="rgb_array")
    check_env(env, skip_render_check=False)


def test_single_env_view_with_several_agents_keeps_the_agent_axis():
    env = GymnasiumEnv(TOY2)
    assert env.action_space == gymnasium.spaces.MultiDiscrete([3, 3])
    obs, _ = env.reset(seed=0)
    assert obs["rgb"].shape == (2, 3, 1, 8)
    obs, reward, terminated, truncated, info = env.step(np.array([1, 2]))
    assert reward == 0.0 and info["rewards"].tolist() == [1.0, -1.0]
    with pytest.raises(ValueError, match="action"):
        env.step(np.array([1, 3]))
    check_env(env)


def test_vector_env_autoresets_in_the_same_step():
    envs = GymnasiumVectorEnv(TOY2, n_envs=2)
    assert envs.num_envs == 4
    assert envs.metadata["autoreset_mode"] == gymnasium.vector.AutoresetMode.SAME_STEP
    obs, _ = envs.reset(seed=3)
    assert envs.observation_space.contains(obs)
    for t in range(7):
        obs, rewards, terminated, truncated, infos = envs.step(np.ones(4, int))
        assert envs.observation_space.contains(obs)
        if t < 6:
            assert infos == {}
    assert truncated.all() and not terminated.any()
    assert infos["_final_obs"].all()
    np.testing.assert_array_equal([f["imu"][1] for f in infos["final_obs"]], [7, 7, 7, 7])
    np.testing.assert_array_equal(obs["imu"][:, 1], 0)


def test_vector_env_seeding_is_reproducible():
    def run(seed):
        envs = GymnasiumVectorEnv(TOY1, n_envs=3)
        first, _ = envs.reset(seed=seed)
        return first["imu"], envs.step(envs.action_space.sample() * 0)[0]["imu"]

    a, b = run(11), run(11)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(run(12)[0], a[0])


def test_checkers_pass_on_minimal():
    from megastep_jax.envs.minimal import Minimal, MinimalParams

    env = GymnasiumEnv(Minimal(res=8), params=MinimalParams(max_steps=5), render_mode="rgb_array")
    check_env(env, skip_render_check=False)
    assert env.render().shape == (600, 1200, 3)   # the env's plot_state figure


def test_action_spaces_of_our_envs_for_one_and_several_agents():
    from megastep_jax.envs import Deathmatch
    from megastep_jax.envs.minimal import Minimal

    one = GymnasiumEnv(Minimal(res=8))
    assert one.action_space == gymnasium.spaces.Discrete(7)
    one.reset(seed=0)
    obs, *_ = one.step(3)   # a bare int, as gymnasium users write it
    assert obs["rgb"].shape == (3, 1, 8)
    with pytest.raises(ValueError, match="action"):
        one.step(7)
    four = GymnasiumEnv(Minimal(n_agents=4, res=8))
    assert four.action_space == gymnasium.spaces.MultiDiscrete([7] * 4)
    assert four.action_space.shape == (4,)
    dm = GymnasiumEnv(Deathmatch(res=16, n_geometries=1))
    assert dm.action_space == gymnasium.spaces.MultiDiscrete([7] * 4)   # as the docstring says
    assert dm.observation_space["rgb"].shape == (4, 3, 1, 4)
    assert dm.observation_space["health"].shape == (4, 1)
