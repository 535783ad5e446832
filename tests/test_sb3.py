"""stable-baselines3 as a real client: its env checks and PPO on our VecEnv.

Needs the ``sb3`` extra (stable-baselines3 and a CPU torch); skipped cleanly without it.
"""
import numpy as np
import pytest

sb3 = pytest.importorskip("stable_baselines3")
pytest.importorskip("torch")

from stable_baselines3.common.env_checker import check_env  # noqa: E402
from stable_baselines3.common.vec_env import VecCheckNan, VecEnv as SB3VecEnv  # noqa: E402

from megastep_jax.gym import GymnasiumEnv  # noqa: E402
from megastep_jax.vecenv import VecEnv, to_sb3  # noqa: E402
try:  # tests/ is on sys.path under pytest's default import mode
    from test_vecenv import TOY1, TOY2  # noqa: E402
except ImportError:  # importlib mode: import it as a namespace package
    from tests.test_vecenv import TOY1, TOY2  # noqa: E402


def test_sb3_env_checker_passes_on_single_env_view():
    check_env(GymnasiumEnv(TOY1), warn=True)


def test_sb3_adapter_is_an_sb3_vecenv():
    venv = to_sb3(VecEnv(TOY2, n_envs=2))
    assert isinstance(venv, SB3VecEnv) and venv.num_envs == 4
    venv.seed(7)
    first = venv.reset()
    venv.seed(7)
    np.testing.assert_array_equal(venv.reset()["imu"], first["imu"])
    assert venv.get_attr("n_agents") == [2] * 4
    assert venv.env_is_wrapped(object) == [False] * 4
    assert venv.render(mode="rgb_array").ndim == 3


def test_ppo_runs_on_toy_vecenv_through_sb3_checks():
    venv = VecCheckNan(to_sb3(VecEnv(TOY2, n_envs=2, seed=0)), raise_exception=True)
    model = sb3.PPO("MultiInputPolicy", venv, n_steps=32, batch_size=64, n_epochs=1, seed=0,
                    device="cpu", policy_kwargs=dict(net_arch=[16]))
    model.learn(total_timesteps=256)
    assert model.num_timesteps >= 256
    # episodes end (max_steps=7) and SB3 collects their returns from our infos
    assert len(model.ep_info_buffer) > 0
    assert all(info["l"] == 7 for info in model.ep_info_buffer)
    obs = venv.reset()
    actions, _ = model.predict(obs, deterministic=True)
    assert actions.shape == (4,)
    venv.close()


def test_ppo_runs_on_minimal():
    from megastep_jax.envs.minimal import Minimal, MinimalParams

    venv = VecCheckNan(to_sb3(VecEnv(Minimal(res=8), n_envs=4, params=MinimalParams(max_steps=20))),
                       raise_exception=True)
    check_env(GymnasiumEnv(Minimal(res=8)), warn=True)
    model = sb3.PPO("MultiInputPolicy", venv, n_steps=64, batch_size=64, n_epochs=1, seed=0, device="cpu",
                    policy_kwargs=dict(net_arch=[16]))
    model.learn(total_timesteps=256)
    assert model.num_timesteps >= 256
    assert [info["l"] for info in model.ep_info_buffer][:4] == [20] * 4
