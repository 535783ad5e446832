"""The training command: outputs, bit-identical resume; the Minimal collision penalty; videos."""
import csv
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import evaluate, networks, train

TINY_ARGS = ["--env", "test_ppo:CueEnv", "--n-envs", "4", "--n-steps", "8", "--width", "8",
             "--core", "mlp", "--minibatches", "2", "--epochs", "2", "--small-convs",
             "--chunk", "2", "--reset-ratio", "1", "--eval-envs", "4", "--eval-steps", "20",
             "--no-video", "--no-progress"]


def rows_of(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_command_writes_outputs_and_resumes_bit_identically(tmp_path):
    whole, split = str(tmp_path / "whole"), str(tmp_path / "split")
    result = train.main(TINY_ARGS + ["--updates", "4", "--out", whole])
    assert result["updates"] == 4 and result["env_steps"] == 4 * 4 * 8
    for name in ("config.json", "metrics.csv", "checkpoint.msgpack", "curve.png", "eval.json"):
        assert os.path.getsize(os.path.join(whole, name)) > 0, name
    evals = json.load(open(os.path.join(whole, "eval.json")))
    assert set(evals) == {"trained", "greedy", "random", "ratio"}
    # a random policy earns 5/12 per step in the cue env
    assert abs(evals["random"]["reward"] - 5 / 12) < 0.1
    rows = rows_of(os.path.join(whole, "metrics.csv"))
    assert [int(r["update"]) for r in rows] == [1, 2, 3, 4]

    # interrupted after 2 updates, then resumed (the run's settings come from config.json)
    train.main(TINY_ARGS + ["--updates", "2", "--out", split])
    with pytest.raises(SystemExit, match="already holds a run"):
        train.main(TINY_ARGS + ["--updates", "2", "--out", split])
    train.main(["--out", split, "--resume", "--updates", "4", "--no-progress", "--no-video",
                "--eval-envs", "4", "--eval-steps", "20"])
    with open(os.path.join(whole, "checkpoint.msgpack"), "rb") as a, \
            open(os.path.join(split, "checkpoint.msgpack"), "rb") as b:
        assert a.read() == b.read()
    resumed = rows_of(os.path.join(split, "metrics.csv"))
    assert [int(r["update"]) for r in resumed] == [1, 2, 3, 4]
    for r, s in zip(rows, resumed):
        for k in r:
            if k not in ("time", "steps_per_s"):
                assert r[k] == s[k], k


def test_anneal_time_decays_the_lr_over_the_minutes_and_only_then(tmp_path):
    args = TINY_ARGS + ["--no-eval", "--lr", "1e-3", "--updates", "4"]
    timed = train.main(args + ["--minutes", "5", "--anneal-time", "--out", str(tmp_path / "a")])
    lrs = [float(r["lr"]) for r in rows_of(timed["metrics"])]
    # two chunks of 2 (TINY_ARGS' --chunk): the second starts after the first compiled and
    # ran, seconds into the 300 s budget (float32 figures)
    assert len(lrs) == 4 and 0 < lrs[0] <= 1.000001e-3 and lrs[-1] < 0.9999 * lrs[0]
    assert lrs == sorted(lrs, reverse=True)
    # without a time budget the flag changes nothing
    plain = train.main(args + ["--anneal-time", "--out", str(tmp_path / "b")])
    np.testing.assert_allclose([float(r["lr"]) for r in rows_of(plain["metrics"])], [1e-3] * 4, rtol=1e-6)


def test_command_rejects_bad_usage(tmp_path):
    with pytest.raises(SystemExit):
        train.parse_args(["--out", str(tmp_path)])  # neither --minutes nor --updates
    with pytest.raises(SystemExit, match="no checkpoint"):
        train.main(["--out", str(tmp_path / "none"), "--resume", "--updates", "1"])
    with pytest.raises(ValueError, match="env: expected"):
        train.make_envs("nowhere")


@pytest.fixture(scope="module")
def minimal():
    from megastep_jax.envs import Minimal
    return train.CollisionPenalty(Minimal(res=16))


def test_collision_penalty_on_minimal(minimal):
    env, params = minimal, minimal.default_params
    forward = {"movement": jnp.full((1,), 3, jnp.int32)}   # action 3: forward
    turn = {"movement": jnp.full((1,), 5, jnp.int32)}      # action 5: turn, never a collision

    def run(action):
        def body(c, key):
            obs, state = c
            obs, state, reward, terminated, truncated, info = env.step(key, state, action, params)
            return (obs, state), (reward, info["collision"], info["moving"])
        c = env.reset(jax.random.PRNGKey(0), params)
        return jax.lax.scan(body, c, jax.random.split(jax.random.PRNGKey(1), 80))[1]

    reward, collision, moving = jax.jit(run)(forward)
    # a 5 m box at 0.1 m per step: the wall is reached within 80 steps, then every push collides
    assert collision.sum() > 0 and collision[-1] == 1
    np.testing.assert_array_equal(reward[:, 0], -collision)
    np.testing.assert_array_equal(moving, 1)
    reward, collision, moving = jax.jit(run)(turn)
    assert collision.sum() == 0 and moving.sum() == 0 and reward.sum() == 0


def test_video_of_a_policy(minimal, tmp_path):
    env = minimal
    net = networks.ActorCritic.from_spaces(env.observation_space(), env.action_space(), width=8,
                                           core="lstm", image_kwargs=train.config_of(
                                               train.parse_args(["--out", "x", "--updates", "1",
                                                                 "--small-convs"])).image_kwargs)
    obs, _ = env.reset(jax.random.PRNGKey(0), env.default_params)
    add = lambda x: x[None, None]
    params = net.init(jax.random.PRNGKey(0), net.initial_carry((1, 1)),
                      jax.tree_util.tree_map(add, obs), jnp.ones((1, 1, 1), bool))
    path = evaluate.record_video(net, params, env, env.default_params, jax.random.PRNGKey(1), 3,
                                 str(tmp_path / "v.gif"))
    assert os.path.getsize(path) > 0
    import imageio.v3 as iio
    assert iio.imread(path).shape[0] == 4  # reset + 3 steps
    with pytest.raises(ValueError, match="policy"):
        evaluate.make_evaluate(net, env, policy="best")


def test_every_flag_has_help():
    parser = train.build_parser()
    missing = [a.option_strings for a in parser._actions
               if a.option_strings and a.dest != "help" and not a.help]
    assert missing == []


def test_budget_flag_sets_the_explorer_observation_and_the_critic_keys():
    def config(*extra, env="explorer"):
        args = train.parse_args(["--out", "x", "--updates", "1", "--env", env, *extra])
        return args, train.config_of(args)

    args, c = config("--budget", "critic")
    assert c.critic_keys == ("budget",)
    args, c = config("--budget", "both")
    assert c.critic_keys == ()
    args, c = config("--budget", "off", "--critic-keys", "imu")
    assert c.critic_keys == ("imu",)
    args, c = config("--budget", "critic", env="minimal")  # not Explorer: ignored
    assert c.critic_keys == ()
    env, test_env = train.make_envs("explorer", res=16, subsample=2, n_plans=1, n_test_plans=1,
                                    budget_obs=True)
    assert "budget" in env.observation_space() and "budget" in test_env.observation_space()


@pytest.mark.slow
def test_a_second_run_into_the_same_out_resumes_or_starts_anew(tmp_path, capsys, monkeypatch):
    out = str(tmp_path / "demo")
    args = TINY_ARGS + ["--updates", "2", "--out", out, "--no-eval"]
    train.main(args)
    # as `make demo` twice: the second resumes, saying so; --updates 4 is the new target
    result = train.main(TINY_ARGS + ["--updates", "4", "--out", out, "--no-eval",
                                     "--if-exists", "resume"])
    assert result["updates"] == 4
    assert "already holds a run: resuming it" in capsys.readouterr().err
    # or into a new directory, named in the output
    result = train.main(args + ["--if-exists", "new"])
    assert result["updates"] == 2 and result["checkpoint"] == os.path.join(out + "-2", "checkpoint.msgpack")
    assert f"starting a new run in {out}-2" in capsys.readouterr().err
    # --resume with no budget: the default, said out loud (zero minutes here, to keep it short)
    monkeypatch.setattr(train, "RESUME_MINUTES", 0.0)
    result = train.main(["--out", out, "--resume", "--no-progress", "--no-video", "--no-eval"])
    assert result["updates"] == 4
    assert "training for 0 minutes" in capsys.readouterr().err


@pytest.mark.slow
def test_a_run_stored_before_the_new_flags_resumes_with_what_it_ran_with(tmp_path):
    out = str(tmp_path / "old")
    train.main(TINY_ARGS + ["--updates", "2", "--out", out, "--no-eval", "--no-prev-action-reward",
                            "--stack", "1", "--intake", "conv"])
    path = os.path.join(out, "config.json")
    stored = json.load(open(path))
    for k in train.BEFORE_FLAG:  # as written before these flags existed
        del stored["args"][k]
    json.dump(stored, open(path, "w"))
    # 2 more: a chunk of 2 (TINY_ARGS' --chunk), the program the first session compiled
    result = train.main(["--out", out, "--resume", "--updates", "4", "--no-eval", "--no-progress",
                         "--no-video"])
    assert result["updates"] == 4
    assert json.load(open(path))["args"].get("prev_action_reward") is None  # config left as stored


def test_convs_and_stack_flags_reach_the_config():
    def config(*extra):
        return train.config_of(train.parse_args(["--out", "x", "--updates", "1", *extra]))

    c = config("--small-convs", "--convs", "8:8:8,16:2:2", "--stack", "3")
    assert dict(c.image_kwargs) == dict(conv_features=(8, 16), conv_kernels=(8, 2), conv_strides=(8, 2))
    assert c.stack == 3
    assert dict(config("--convs", "none").image_kwargs) == dict(conv_features=(), conv_kernels=(),
                                                                conv_strides=())
    assert config("--small-convs").stack == 1  # the default: a GRU core, no frame stack
    assert config("--small-convs").core == "gru"
    assert config("--small-convs").intake == "merged"  # vectors through one MLP
    assert config("--stack", "4").stack == 4
    for bad in ("8:8", "8:8:0", "a:b:c", "", "8:8:4,"):
        with pytest.raises(ValueError, match="--convs"):
            config("--convs", bad)
    with pytest.raises(ValueError, match="stack"):
        config("--stack", "0")
    assert config().ent_coef_final is None
    assert config("--ent-coef-final", "0.01").ent_coef_final == 0.01
    with pytest.raises(ValueError, match="ent_coef_final"):
        config("--ent-coef-final", "-1")
    assert config().obs_norm == ()
    assert config("--obs-norm", "imu:0:0.05,rgb:0.1:0.2").obs_norm == (("imu", 0.0, 0.05), ("rgb", 0.1, 0.2))
    for bad in ("imu", "imu:0", "imu:0:0", "imu:a:1", ":0:1", "imu:0:1:2", "imu:0:1,"):
        with pytest.raises(ValueError, match="--obs-norm"):
            config("--obs-norm", bad)
