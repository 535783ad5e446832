"""The same key gives bit-identical results across fresh processes.

A script runs in two separate Python processes and prints SHA-256 digests of: procedural
floorplans, a scenery (textures, lights, baked lighting), a rollout of a multi-agent env
(observations, rewards, agent states after every step, with random actions drawn from
keys), and the metrics and parameters of a tiny PPO run, each for keys 0 and 1. The two
processes must agree digest for digest, and key 1 must differ from key 0 (so the digests
see the key).
"""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

SCRIPT = r'''
import hashlib, json, sys
import jax, jax.numpy as jnp, numpy as np

from megastep_jax import floorplans, scene, toys
from megastep_jax.arrdict import arrdict

what = sys.argv[2].split(",")
out = {}

def digest(tree):
    h = hashlib.sha256()
    for leaf in jax.tree_util.tree_leaves(tree):
        a = np.asarray(leaf)
        h.update(str((a.dtype, a.shape)).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()

# Each env and jitted function is built once, so a process compiles each once; the keys
# differ from seed to seed.
if "rollout" in what:
    from megastep_jax.envs import Minimal

    rollout_env = Minimal(n_agents=3, res=16, seed=0)
    n_envs, n_steps = 3, 12
    rollout_params = rollout_env.default_params
    space = rollout_env.action_space(rollout_params).movement

    @jax.jit
    def rollout(key):
        env, params = rollout_env, rollout_params
        k_reset, k_run = jax.random.split(key)
        obs, state = jax.vmap(env.reset, (0, None))(jax.random.split(k_reset, n_envs), params)

        def step(carry, k):
            obs, state = carry
            k_act, k_step = jax.random.split(k)
            act = {"movement": jax.random.randint(k_act, (n_envs, 3), 0, space.n_actions)}
            obs, state, reward, term, trunc, info = jax.vmap(env.step, (0, 0, 0, None))(
                jax.random.split(k_step, n_envs), state, arrdict(act), params)
            return (obs, state), (obs, reward, term, trunc, state.agents)

        _, trace = jax.lax.scan(step, (obs, state), jax.random.split(k_run, n_steps))
        return trace

if "ppo" in what:
    sys.path.insert(0, ".")
    from agents import ppo
    from megastep_jax.envs import Minimal

    ppo_env = Minimal(res=8, seed=0)
    convs = (("conv_features", (4,)), ("conv_kernels", (3,)), ("conv_strides", (1,)))
    config = ppo.PPOConfig(n_envs=4, n_steps=8, n_updates=2, n_epochs=2, n_minibatches=2,
                           width=8, core="mlp", image_kwargs=convs)
    train = jax.jit(ppo.make_train(config, ppo_env))

for seed in map(int, sys.argv[1].split(",")):
    key = jax.random.PRNGKey(seed)
    if "scenery" in what:
        plans = [floorplans.generate(jax.random.fold_in(key, i)) for i in range(2)]
        out[f"{seed}/floorplans"] = digest([(g.walls, g.lights, g.masks) for g in plans])
        s = scene.scenery(plans + [toys.box()], n_agents=2, key=key)
        out[f"{seed}/scenery"] = digest(s)
    if "rollout" in what:
        out[f"{seed}/rollout"] = digest(rollout(key))
    if "ppo" in what:
        runner, metrics = train(key, ppo_env.default_params)
        out[f"{seed}/ppo_metrics"] = digest(metrics)
        out[f"{seed}/ppo_params"] = digest(runner.params)

print("DIGESTS " + json.dumps(out))
'''


def start(seeds: str, what: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               JAX_PLATFORMS="cpu")
    # each process compiles for itself: a compilation shared through the test run's
    # cache (conftest.py) would hide a difference in what the processes compile
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    return subprocess.Popen([sys.executable, "-c", SCRIPT, seeds, what], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def digests(*procs) -> list:
    """The digests each started process prints (they run side by side)."""
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=900)
        assert proc.returncode == 0, stderr[-3000:]
        line = [l for l in stdout.splitlines() if l.startswith("DIGESTS ")][-1]
        out.append(json.loads(line[len("DIGESTS "):]))
    return out


def test_scenery_and_rollout_are_bit_identical_across_processes():
    first, second = digests(start("0,1", "scenery,rollout"), start("0,1", "scenery,rollout"))
    assert set(first) == {f"{k}/{n}" for k in (0, 1) for n in ("floorplans", "scenery", "rollout")}
    assert first == second
    for name in ("floorplans", "scenery", "rollout"):
        assert first[f"0/{name}"] != first[f"1/{name}"], f"{name} does not depend on the key"


@pytest.mark.slow
def test_training_metrics_are_bit_identical_across_processes():
    first, second = digests(start("0,1", "ppo"), start("0,1", "ppo"))
    assert first == second
    assert first["0/ppo_params"] != first["1/ppo_params"]
    assert first["0/ppo_metrics"] != first["1/ppo_metrics"]
