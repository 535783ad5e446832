"""Frames per second of physics + render under jit, compiled kernels vs the jnp reference.

    python benchmarks/kernels.py               # both scenes, both backends
    python benchmarks/kernels.py --quick       # smaller batches, for a smoke run

A frame is one agent's rendered view; each step runs physics then render for every env,
inside one jitted lax.scan, so dispatch overhead is amortised. Figures are the best of
``--repeats`` timed runs after a warm-up (compile) run.
"""
from __future__ import annotations

import argparse
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from megastep_jax import core, geometry, scene, toys


def many_walls(n_walls: int = 300, size: float = 20.0, seed: int = 0):
    """A plan with about n_walls segments: a square outline and short random partitions."""
    rng = np.random.default_rng(seed)
    box = toys.box(size, size)
    starts = rng.uniform(1.5, size, (n_walls - 4, 2))
    angle = rng.uniform(0, 2 * np.pi, n_walls - 4)
    length = rng.uniform(0.3, 2.0, n_walls - 4)
    ends = np.clip(starts + length[:, None] * np.stack([np.cos(angle), np.sin(angle)], 1), 1.1, size + 0.9)
    walls = np.concatenate([box.walls, np.stack([starts, ends], 1)]).astype(np.float32)
    lights = rng.uniform(2, size, (8, 2)).astype(np.float32)
    return geometry.geometry(walls, lights, box.masks, box.res, id=300)


def scene_for(name: str, n_envs: int, key):
    if name == "box":
        geoms = [toys.box()]
    elif name == "floorplans":
        from megastep_jax import floorplans

        geoms = floorplans.sample(8, seed=0)
    else:
        geoms = [many_walls(300, seed=i) for i in range(8)]
    geoms = [geoms[i % len(geoms)] for i in range(n_envs)]
    s = scene.scenery(geoms, n_agents=1, key=key)
    rng = np.random.default_rng(0)
    spawns = []
    for g in geoms:
        free = np.argwhere(g.masks > 0)
        spawns.append(geometry.centers(free[rng.integers(len(free))], g.masks.shape, g.res))
    agents = core.init_agents(n_envs, 1).replace(
        positions=jnp.asarray(np.stack(spawns)[:, None], jnp.float32),
        angles=jnp.asarray(rng.uniform(-180, 180, (n_envs, 1)), jnp.float32))
    n_walls = float(np.mean(np.asarray(s.n_lines) - 8))
    return s, agents, n_walls


def measure(s, agents, res: int, backend: str, steps: int, repeats: int, key) -> tuple[float, float]:
    """(frames per wall-clock second, frames per CPU-second of this process).

    CPU time counts every thread of the process, so it is the steadier figure on a shared
    machine; wall-clock time is what a user waits.
    """
    def step(carry, k):
        ag = carry
        vel = jax.random.normal(k, ag.velocity.shape) * 2.0
        ag = ag.replace(velocity=vel, angvelocity=jnp.full(ag.angvelocity.shape, 30.0))
        ag, progress = core.physics(s, ag, fps=10.0, backend=backend)
        r = core.render(s, ag, res=res, backend=backend)
        return ag, jnp.mean(r.screen) + jnp.mean(progress)

    run = jax.jit(lambda ag, key: jax.lax.scan(step, ag, jax.random.split(key, steps)))
    jax.block_until_ready(run(agents, key))
    best_wall = best_cpu = float("inf")
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        jax.block_until_ready(run(agents, key))
        best_wall = min(best_wall, time.perf_counter() - t)
        best_cpu = min(best_cpu, time.process_time() - c)
    frames = agents.n_envs * agents.n_agents * steps
    return frames / best_wall, frames / best_cpu


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small batches, for a smoke run")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    key = jax.random.key(0)
    cases = [("box", 4096, 64), ("300 walls", 256, 256), ("floorplans", 256, 256)]
    if args.quick:
        cases = [("box", 256, 64), ("300 walls", 16, 256)]
    print(f"# {platform.node()} {platform.processor() or platform.machine()}, "
          f"{jax.device_count()} {jax.default_backend()} device(s), jax {jax.__version__}")
    print(f"{'scene':<14}{'envs':>6}{'res':>5}{'walls':>7}{'kernel fps':>12}{'ref fps':>11}{'ratio':>7}"
          f"{'kernel /cpu-s':>15}{'ref /cpu-s':>12}{'ratio':>7}")
    for name, n_envs, res in cases:
        s, agents, n_walls = scene_for(name, n_envs, key)
        fk, ck = measure(s, agents, res, "kernel", args.steps, args.repeats, key)
        fr, cr = measure(s, agents, res, "reference", args.steps, args.repeats, key)
        print(f"{name:<14}{n_envs:>6}{res:>5}{n_walls:>7.0f}{fk:>12,.0f}{fr:>11,.0f}{fk / fr:>6.1f}x"
              f"{ck:>15,.0f}{cr:>12,.0f}{ck / cr:>6.1f}x", flush=True)


if __name__ == "__main__":
    main()
