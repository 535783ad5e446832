"""Frames per second of the kernels: physics + render vs the jnp reference, the render's
cost against the number of walls (grid vs casting every line), and the Explorer and
Deathmatch bare kernels (grid vs every line).

    python benchmarks/kernels.py               # all tables
    python benchmarks/kernels.py --quick       # smaller batches, for a smoke run
    python benchmarks/kernels.py --only walls,envs --cpu-time

A frame is one agent's rendered view; each step runs the kernels for every env inside one
jitted lax.scan, so dispatch overhead is amortised. Figures are the best of ``--repeats``
timed runs after a warm-up (compile) run. "grid" renders through the scenery's
acceleration grid, "every line" the same scenery without it (``Scenery.without_grid()``:
the index-order cast, the old path), "default" as ``core.render`` does (traversal "auto":
the grid from ``kernels.GRID_MIN_LINES`` static lines up); all give identical frames.
"""
from __future__ import annotations

import argparse
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from megastep_jax import core, geometry, kernels, scene, toys


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


def hall(n_walls: int, size: float = 40.0, seed: int = 0):
    """A size x size hall: its four sides and n_walls - 4 random walls 0.3-2 m long inside."""
    rng = np.random.default_rng(seed)
    box = toys.box(size, size)
    m = n_walls - 4
    starts = rng.uniform(1.5, size, (m, 2))
    angle = rng.uniform(0, 2 * np.pi, m)
    length = rng.uniform(0.3, 2.0, m)
    ends = np.clip(starts + length[:, None] * np.stack([np.cos(angle), np.sin(angle)], 1), 1.1, size + 0.9)
    walls = np.concatenate([box.walls, np.stack([starts, ends], 1)]).astype(np.float32)
    lights = rng.uniform(2, size, (8, 2)).astype(np.float32)
    return geometry.geometry(walls, lights, box.masks, box.res, id=n_walls)


def _best(fn, args, repeats: int, cpu: bool) -> float:
    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(repeats):
        t = time.process_time() if cpu else time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, (time.process_time() if cpu else time.perf_counter()) - t)
    return best


def render_rate(s, agents, res: int, steps: int, repeats: int, cpu: bool,
                traversal: str | None = None) -> float:
    """Rendered frames/s of s; the agents turn every step so no render is loop-invariant.
    ``traversal``: a key of ``kernels.TRAVERSALS`` (None: ``core.render``'s default)."""
    def render(ag):
        if traversal is None:
            return core.render(s, ag, res=res)
        return kernels.render(s, ag, res, core.DEFAULT_FOV, core.AGENT_RADIUS, traversal=traversal)

    def step(ag, _):
        ag = ag.replace(angles=ag.angles + 7.0)
        return ag, render(ag).distances[:, :, ::17].sum()

    run = jax.jit(lambda ag: jax.lax.scan(step, ag, None, length=steps)[1])
    return agents.n_envs * agents.n_agents * steps / _best(run, (agents,), repeats, cpu)


def wall_scaling(n_walls=(100, 500, 2000), n_envs: int = 64, res: int = 256, steps: int = 16,
                 repeats: int = 3, cpu: bool = False, key=None):
    """Render frames/s with n walls in a 40 m hall, agents at random: through the grid (the
    camera sweep), every line, the default ("auto": the grid from kGridMinLines static lines
    up), and the grid one ray at a time (the "rays" DDA)."""
    rows = []
    for n in n_walls:
        one = scene.scenery([hall(n)], n_agents=1, key=key)
        s = jax.tree_util.tree_map(
            lambda x: jnp.repeat(x, n_envs, 0) if x.shape[:1] == (1,) else x, one)
        rng = np.random.default_rng(n)
        agents = core.init_agents(n_envs, 1).replace(
            positions=jnp.asarray(rng.uniform(1.5, 39.5, (n_envs, 1, 2)), jnp.float32),
            angles=jnp.asarray(rng.uniform(-180, 180, (n_envs, 1)), jnp.float32))
        grid = render_rate(s, agents, res, steps, repeats, cpu, traversal="grid")
        brute = render_rate(s.without_grid(), agents, res, steps, repeats, cpu)
        auto = render_rate(s, agents, res, steps, repeats, cpu)
        rays = render_rate(s, agents, res, steps, repeats, cpu, traversal="rays")
        rows.append((n, tuple(np.asarray(one.grid_dims[0]).tolist()), grid, brute, auto, rays))
    return rows


def env_bare_kernels(name: str, n_envs: int, steps: int, repeats: int, cpu: bool, key):
    """(default traversal, every line) frames/s of benchmarks/envs.py's bare kernels (physics + render of
    every env in its own procedural plan, through the env's scene runtime)."""
    import envs as env_bench  # benchmarks/envs.py, next to this file

    env = env_bench.make(name, "kernel", None, "floorplans", None, 8)
    state = jax.jit(env_bench.Batched(env, n_envs).reset)(key, env.default_params)[1]
    grid = env_bench.bare_kernels(env, state, steps, repeats, key, cpu)
    pool = env.scene.pool
    env.scene.pool = pool.replace(scenery=pool.scenery.without_grid())
    brute = env_bench.bare_kernels(env, state, steps, repeats, key, cpu)
    env.scene.pool = pool
    return grid, brute


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small batches, for a smoke run")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--only", default="backends,walls,envs",
                   help="comma-separated tables: backends (kernel vs reference), walls (render "
                        "cost against wall count), envs (Explorer and Deathmatch bare kernels)")
    p.add_argument("--cpu-time", action="store_true",
                   help="frames per CPU-second of this process (all threads): steadier on a shared machine")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    only = set(args.only.split(","))
    key = jax.random.key(0)
    unit = "frames per CPU-second" if args.cpu_time else "frames/s"
    print(f"# {platform.node()} {platform.processor() or platform.machine()}, "
          f"{jax.device_count()} {jax.default_backend()} device(s), jax {jax.__version__}; {unit}")
    if "backends" in only:
        cases = [("box", 4096, 64), ("300 walls", 256, 256), ("floorplans", 256, 256)]
        if args.quick:
            cases = [("box", 256, 64), ("300 walls", 16, 256)]
        print(f"{'scene':<14}{'envs':>6}{'res':>5}{'walls':>7}{'kernel fps':>12}{'ref fps':>11}{'ratio':>7}"
              f"{'kernel /cpu-s':>15}{'ref /cpu-s':>12}{'ratio':>7}")
        for name, n_envs, res in cases:
            s, agents, n_walls = scene_for(name, n_envs, key)
            fk, ck = measure(s, agents, res, "kernel", args.steps, args.repeats, key)
            fr, cr = measure(s, agents, res, "reference", args.steps, args.repeats, key)
            print(f"{name:<14}{n_envs:>6}{res:>5}{n_walls:>7.0f}{fk:>12,.0f}{fr:>11,.0f}{fk / fr:>6.1f}x"
                  f"{ck:>15,.0f}{cr:>12,.0f}{ck / cr:>6.1f}x", flush=True)
    if "walls" in only:
        n_envs = 16 if args.quick else 64
        print(f"\n# render only, random walls in a 40 m hall, {n_envs} envs, res 256 ({unit})")
        print(f"{'walls':>6}{'grid cells':>12}{'grid':>12}{'every line':>12}{'speed-up':>9}"
              f"{'grid cost vs 100':>18}{'default':>12}{'default cost vs 100':>21}{'per ray':>12}"
              f"{'per ray cost vs 100':>21}")
        rows = wall_scaling(n_envs=n_envs, steps=args.steps * 2, repeats=args.repeats,
                            cpu=args.cpu_time, key=key)
        for n, dims, grid, brute, auto, rays in rows:
            print(f"{n:>6}{dims[0]:>6}x{dims[1]:<5}{grid:>12,.0f}{brute:>12,.0f}{grid / brute:>8.2f}x"
                  f"{rows[0][2] / grid:>17.2f}x{auto:>12,.0f}{rows[0][4] / auto:>20.2f}x"
                  f"{rays:>12,.0f}{rows[0][5] / rays:>20.2f}x", flush=True)
    if "envs" in only:
        print(f"\n# bare kernels (physics + render) on 8 procedural floorplans, as benchmarks/envs.py ({unit})")
        print(f"{'env':<11}{'envs':>6}{'agents':>7}{'res':>5}{'default':>12}{'every line':>12}{'speed-up':>9}")
        for name, n_envs, agents, res in (("explorer", 1024, 1, 256), ("deathmatch", 256, 4, 512)):
            n_envs = 64 if args.quick else n_envs
            grid, brute = env_bare_kernels(name, n_envs, args.steps * 2, args.repeats, args.cpu_time, key)
            print(f"{name:<11}{n_envs:>6}{agents:>7}{res:>5}{grid:>12,.0f}{brute:>12,.0f}{grid / brute:>8.2f}x",
                  flush=True)


if __name__ == "__main__":
    main()
