"""Physics' share of a Deathmatch step: the same batched step timed with and without physics.

One jitted ``lax.scan`` of ``--steps`` steps of ``envs.Batched(Deathmatch)`` with random
actions (auto-reset included) is timed in the same process, interleaved with (a) the same
scan with the env's physics call replaced by the identity (agents unmoved) and (b) a scan
of the physics call alone (vmapped over the envs, from the states the steps reached, with
their velocities). Physics' share is (b) over the full step; the difference full - (a) is
printed too but on a busy machine it is within the noise. Best of ``--repeats``.

    python benchmarks/physics_share.py                      # 64 envs, 4 agents, res 512
    python benchmarks/physics_share.py --n-envs 256 --geometries toys
"""
from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp

from megastep_jax import spaces, toys
from megastep_jax.envs import Batched, Deathmatch


def make_runner(env, n_envs: int, n_steps: int):
    batched = Batched(env, n_envs)
    params = env.default_params
    action_space = env.action_space(params)

    @jax.jit
    def run(key, state):
        def body(state, key):
            k_act, k_step = jax.random.split(key)
            action = spaces.sample(action_space, k_act, (n_envs,))
            _, state, reward, *_ = batched.step(k_step, state, action, params)
            return state, jnp.sum(reward)
        return jax.lax.scan(body, state, jax.random.split(key, n_steps))

    _, state = jax.jit(batched.reset)(jax.random.PRNGKey(0), params)
    return run, state


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-envs", type=int, default=64)
    p.add_argument("--n-agents", type=int, default=4)
    p.add_argument("--res", type=int, default=512)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--backend", default="kernel")
    p.add_argument("--geometries", choices=["toys", "floorplans"], default="floorplans")
    args = p.parse_args(argv)
    geoms = None if args.geometries == "floorplans" else [toys.box(), toys.column()]

    with_physics = Deathmatch(n_agents=args.n_agents, res=args.res, geometries=geoms, backend=args.backend)
    without = Deathmatch(n_agents=args.n_agents, res=args.res, geometries=geoms, backend=args.backend)
    without._physics = lambda geometry, agents, fps: (agents, jnp.ones(agents.angles.shape, jnp.float32))
    runners = {"with": make_runner(with_physics, args.n_envs, args.steps),
               "without": make_runner(without, args.n_envs, args.steps)}
    fps = with_physics.default_params.fps

    @jax.jit
    def physics_alone(state):
        def body(agents, _):
            moved = jax.vmap(lambda g, a: with_physics._physics(g, a, fps)[0])(state.geometry, agents)
            # keep them moving: restore the velocities stop mode zeroed on contact
            return moved.replace(velocity=agents.velocity), None
        return jax.lax.scan(body, state.agents, None, length=args.steps)[0]

    best = {}
    states = {}
    for name, (run, state) in runners.items():  # compile
        states[name] = jax.block_until_ready(run(jax.random.PRNGKey(1), state))[0]
        best[name] = float("inf")
    jax.block_until_ready(physics_alone(states["with"]))
    best["physics"] = float("inf")
    for i in range(args.repeats):  # interleaved, so load changes hit all alike
        for name, (run, _) in runners.items():
            t0 = time.perf_counter()
            states[name] = jax.block_until_ready(run(jax.random.PRNGKey(i + 2), states[name]))[0]
            best[name] = min(best[name], time.perf_counter() - t0)
        t0 = time.perf_counter()
        jax.block_until_ready(physics_alone(states["with"]))
        best["physics"] = min(best["physics"], time.perf_counter() - t0)
    per_step = {k: v / args.steps * 1e3 for k, v in best.items()}
    physics_ms = per_step["physics"]
    print(f"deathmatch n_envs={args.n_envs} n_agents={args.n_agents} res={args.res} "
          f"geometries={args.geometries} backend={args.backend}")
    print(f"step {per_step['with']:.2f} ms (without physics {per_step['without']:.2f} ms); "
          f"physics alone {physics_ms:.3f} ms = {100 * physics_ms / per_step['with']:.2f}% of the step")


if __name__ == "__main__":
    main()
