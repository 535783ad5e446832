"""Environment throughput: env steps per second with random actions inside jit(lax.scan).

For each env, number of envs and backend, one jitted call runs ``--steps`` steps of a
:class:`~megastep_jax.envs.Batched` env (auto-reset included) with uniformly random
actions. The first call (compile) is not timed; the best of ``--repeats`` calls is.

Reported: env steps/s (one transition of one env, all its agents) and frames/s (agent
observations per second, env steps x agents: megastep's figure of merit).

Examples::

    python benchmarks/envs.py                                  # quick: small sizes
    python benchmarks/envs.py --n-envs 1,256,4096 --steps 100  # the full table
    python benchmarks/envs.py --envs explorer --backends kernel --res 256 --geometries floorplans
"""
from __future__ import annotations

import argparse
import platform
import time

import jax
import jax.numpy as jnp

from megastep_jax import spaces, toys
from megastep_jax.envs import Batched, Deathmatch, Explorer, Minimal


def make(name: str, backend: str, res: int | None, geometries: str, n_agents: int | None):
    geoms = None if geometries == "floorplans" else [toys.box(), toys.room_with_column()]
    if name == "minimal":
        return Minimal(res=res or 64, backend=backend)
    if name == "explorer":
        return Explorer(res=res or 256, subsample=4, geometries=geoms, backend=backend)
    if name == "deathmatch":
        return Deathmatch(n_agents=n_agents or 4, res=res or 512, subsample=4, geometries=geoms,
                          backend=backend)
    raise ValueError(f"--envs: unknown env {name!r}; expected minimal, explorer or deathmatch")


def bench(env, n_envs: int, n_steps: int, repeats: int, reset_ratio: int, seed: int = 0):
    batched = Batched(env, n_envs, reset_ratio)
    params = env.default_params
    action_space = env.action_space(params)

    @jax.jit
    def run(key, state):
        def body(state, key):
            k_act, k_step = jax.random.split(key)
            action = spaces.sample(action_space, k_act, (n_envs,))
            obs, state, reward, terminated, truncated, info = batched.step(k_step, state, action, params)
            return state, jnp.sum(reward)
        return jax.lax.scan(body, state, jax.random.split(key, n_steps))

    key = jax.random.PRNGKey(seed)
    _, state = jax.jit(batched.reset)(key, params)
    t0 = time.perf_counter()
    state, _ = jax.block_until_ready(run(key, state))
    compile_s = time.perf_counter() - t0
    best = float("inf")
    for i in range(repeats):
        t0 = time.perf_counter()
        state, _ = jax.block_until_ready(run(jax.random.fold_in(key, i + 1), state))
        best = min(best, time.perf_counter() - t0)
    return n_envs * n_steps / best, compile_s


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--envs", default="minimal,explorer,deathmatch")
    p.add_argument("--n-envs", default="1,16", help="comma-separated env counts, e.g. 1,256,4096")
    p.add_argument("--backends", default="kernel,reference")
    p.add_argument("--steps", type=int, default=20, help="steps per timed call")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--res", type=int, default=None, help="render resolution (env default if unset)")
    p.add_argument("--n-agents", type=int, default=None, help="Deathmatch agents per env (4)")
    p.add_argument("--geometries", choices=["toys", "floorplans"], default="toys")
    p.add_argument("--reset-ratio", type=int, default=1, help="Batched optimistic reset ratio")
    args = p.parse_args(argv)

    print(f"# jax {jax.__version__} on {jax.default_backend()} ({platform.processor() or platform.machine()}), "
          f"{args.steps} steps/call, best of {args.repeats}, geometries={args.geometries}, "
          f"res={args.res or 'default'}, reset_ratio={args.reset_ratio}")
    print(f"{'env':<11} {'backend':<10} {'n_envs':>7} {'agents':>6} {'res':>5} "
          f"{'env steps/s':>12} {'frames/s':>12} {'compile s':>9}")
    for name in args.envs.split(","):
        for backend in args.backends.split(","):
            env = make(name, backend, args.res, args.geometries, args.n_agents)
            for n in (int(x) for x in args.n_envs.split(",")):
                rate, compile_s = bench(env, n, args.steps, args.repeats, args.reset_ratio)
                print(f"{name:<11} {backend:<10} {n:>7} {env.n_agents:>6} {env.res:>5} "
                      f"{rate:>12.0f} {rate * env.n_agents:>12.0f} {compile_s:>9.1f}", flush=True)


if __name__ == "__main__":
    main()
