"""Training several seeds at once: the orthogonal initialiser without LAPACK, one-at-a-time
initialisation under vmap, the README's Learning snippet as written, and vmapped rollouts
through the FFI kernels on 1- and 2-thread pools (each in a subprocess with a timeout: the
failure these guard against is a deadlock)."""
import os
import re
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import initializers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _subprocess_env(**extra):
    env = dict(os.environ, JAX_PLATFORMS="cpu", **extra)
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
    return env


@pytest.mark.parametrize("shape", [(64, 64), (96, 32), (8, 3, 32), (5, 7), (1, 6)])
def test_orthogonal_matches_flax_for_the_same_key(shape):
    for seed in range(3):
        key = jax.random.PRNGKey(seed)
        ours = initializers.orthogonal(1.5)(key, shape)
        flax_ = nn.initializers.orthogonal(1.5)(key, shape)
        assert ours.shape == shape and ours.dtype == jnp.float32
        np.testing.assert_allclose(ours, flax_, atol=3e-5)
        m = np.asarray(ours).reshape(-1, shape[-1]) / 1.5
        gram = m.T @ m if m.shape[0] >= m.shape[1] else m @ m.T
        np.testing.assert_allclose(gram, np.eye(len(gram)), atol=1e-5)


def test_orthogonal_is_haar_distributed():
    """Statistics of many draws against flax's: Haar measure on O(4) gives every entry
    mean 0 and variance 1/4, and det +-1 with equal odds."""
    keys = jax.random.split(jax.random.PRNGKey(7), 2000)
    ours = np.asarray(jax.vmap(lambda k: initializers.orthogonal()(k, (4, 4)))(keys))
    assert abs(ours.mean()) < 0.01
    np.testing.assert_allclose(ours.var(axis=0), 0.25, atol=0.03)
    det = np.linalg.det(ours)
    np.testing.assert_allclose(np.abs(det), 1.0, atol=1e-4)
    assert 0.45 < (det > 0).mean() < 0.55
    # flax's own draws (one at a time: its batched QR is what deadlocks)
    flax_ = np.stack([np.asarray(nn.initializers.orthogonal()(k, (4, 4))) for k in keys[:200]])
    np.testing.assert_allclose(ours[:200], flax_, atol=3e-5)


def test_thin_q_rejects_wide_matrices():
    with pytest.raises(ValueError, match="a: expected a matrix with at least as many rows"):
        initializers.thin_q(jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match="shape"):
        initializers.orthogonal()(jax.random.PRNGKey(0), (3,))


def test_one_at_a_time_under_nested_vmap():
    calls = []

    def f(x, y):
        calls.append(x.shape)  # traced once per (non-batched) shape
        return jnp.linalg.qr(x)[0] + y

    g = initializers.one_at_a_time(f)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 5, 5))
    out = jax.jit(jax.vmap(jax.vmap(g, in_axes=(0, None)), in_axes=(0, None)))(x, 1.0)
    assert all(s == (5, 5) for s in calls)  # f only ever saw one member
    np.testing.assert_allclose(out[1, 2], f(x[1, 2], 1.0), atol=1e-6)


def readme_learning_snippet() -> str:
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    section = text.split("## Learning", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks, "README's Learning section has no python block"
    return blocks[0]


@pytest.mark.slow
def test_readme_learning_snippet_runs_as_written():
    """The README's snippet, vmap over 4 seeds included, as a user would paste it."""
    code = readme_learning_snippet()
    assert "jax.vmap(train" in code and "key =" in code
    out = subprocess.run([sys.executable, "-c", code], env=_subprocess_env(), cwd=ROOT,
                         capture_output=True, text=True, timeout=540)
    assert out.returncode == 0, out.stderr[-3000:]


ROLLOUT = """
import jax, jax.numpy as jnp, numpy as np
from megastep_jax import spaces
from megastep_jax.envs import Explorer
from megastep_jax.envs.base import Batched
env = Explorer(res=128, subsample=1, n_geometries=2)
params = env.default_params
n_envs, members = 8, 3
batched = Batched(env, n_envs)
space = env.action_space(params)

def rollout(key):
    obs, state = batched.reset(key, params)
    def body(state, k):
        action = jax.vmap(lambda kk: spaces.sample(space, kk))(jax.random.split(k, n_envs))
        obs, state, reward, *_ = batched.step(k, state, action, params)
        return state, reward.sum()
    return jax.lax.scan(body, state, jax.random.split(key, 6))[1]

keys = jax.random.split(jax.random.key(0), members)
vmapped = jax.jit(jax.vmap(rollout))(keys)
# two independent vmapped rollouts in one program: XLA may run their kernel calls at once
both = jax.jit(lambda k: (jax.vmap(rollout)(k), jax.vmap(rollout)(k[::-1])))(keys)
one = jax.jit(rollout)(keys[1])
np.testing.assert_allclose(vmapped[1], one, rtol=1e-5)
np.testing.assert_allclose(both[0], vmapped, rtol=1e-5)
np.testing.assert_allclose(both[1], vmapped[::-1], rtol=1e-5)
print("ok", vmapped.shape)
"""


@pytest.mark.parametrize("threads", [1, 2])
def test_vmapped_kernel_rollout_completes_on_small_thread_pools(threads):
    """Our CPU kernels share XLA's intra-op pool with the calling thread doing work too;
    under vmap (a batched call) and with two programs' calls in flight they must finish,
    with one thread (no helper ever runs) or two."""
    flags = "--xla_cpu_multi_thread_eigen=false" if threads == 1 else ""
    cmd = [sys.executable, "-c", ROLLOUT]
    if threads == 1 and os.path.exists("/usr/bin/taskset"):
        cmd = ["/usr/bin/taskset", "-c", "0"] + cmd  # the pool is sized from the usable cores
    elif threads == 2 and len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one usable core")
    out = subprocess.run(cmd, env=_subprocess_env(XLA_FLAGS=flags), cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "ok (3, 6)" in out.stdout
