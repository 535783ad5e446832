"""Soak test: many agent-steps of random actions, counting everything that must never happen.

Runs ``--agent-steps`` (default 10^6) agent-steps of random movement actions over random
procedural floorplans and toy plans (box, column, maze), several agents per env, with
speeds drawn log-uniformly up to 1000 m/s so agents slam into walls and each other. Every
step is checked on the host (float64):

- wall crossings: an agent's centre path properly crossing a wall;
- wall penetrations: a swept disc coming within radius - 1e-4 m of a wall it started
  clear of;
- overlaps: two agents that started apart ending closer than 2 radius - 1e-4 m;
- mid-step passes: two agents that started apart coming closer than 2 radius - 1e-4 m at
  any time within the step (exactly: under stop each agent moves uniformly from its start
  to its end over [0, progress] and then rests, so the pair's separation is piecewise
  linear in time, with pieces split at the two progresses);
- non-finite values in positions, velocities, angles, progress and every render output,
  and progress outside [0, 1].

All must be 0. Resident memory is read after the first chunk (compiled, warm) and at the
end: it must not grow. Prints the figures (and writes them as JSON with ``--json``).

    PYTHONPATH=. python benchmarks/soak.py                 # 10^6 agent-steps
    PYTHONPATH=. python benchmarks/soak.py --agent-steps 1e5 --backend reference
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
from test_properties import point_segment_distance, segment_distance  # noqa: E402

from megastep_jax import core, floorplans, modules, scene, toys  # noqa: E402
from megastep_jax.state import init_agents  # noqa: E402

R = core.AGENT_RADIUS
TOL = 1e-4


def rss_mb() -> float:
    """Resident set size of this process, in MB (from /proc)."""
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def plans(n: int, seed: int):
    """n geometries: mostly procedural floorplans, some boxes, columns and mazes."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        kind = rng.choice(["floorplan", "floorplan", "floorplan", "box", "column", "maze"])
        if kind == "floorplan":
            out.append(floorplans.generate(int(rng.integers(0, 2**31))))
        elif kind == "box":
            out.append(toys.box(float(rng.uniform(1, 6)), float(rng.uniform(1, 6))))
        elif kind == "column":
            out.append(toys.room_with_column())
        else:
            out.append(toys.maze(int(rng.integers(0, 2**31)), size=int(rng.integers(2, 8))))
    return out


def spawn(geometries, n_agents: int, seed: int) -> np.ndarray:
    """(E, A, 2) room-cell centres, agents pairwise at least 2R + 1 mm apart."""
    points = modules.random_empty_positions(geometries, n_agents, 64, seed)  # (E, A, P, 2)
    out = points[:, :, 0].copy()
    for e in range(len(geometries)):
        pool = points[e].reshape(-1, 2)
        chosen = []
        for p in pool:
            if all(np.linalg.norm(p - q) >= 2 * R + 1e-3 for q in chosen):
                chosen.append(p)
            if len(chosen) == n_agents:
                break
        if len(chosen) < n_agents:
            raise RuntimeError(f"geometry {e} has no room for {n_agents} agents")
        out[e] = chosen
    return out


def padded_walls(geometries) -> np.ndarray:
    """(E, M, 2, 2) walls padded with points far from every plan (they never trip a check)."""
    M = max(len(g.walls) for g in geometries)
    out = np.full((len(geometries), M, 2, 2), 1e6, np.float64)
    for e, g in enumerate(geometries):
        out[e, :len(g.walls)] = g.walls
    return out


def mid_step_passes(start, end, progress):
    """Pairs that started apart and came within 2R - TOL at some time of the step.

    start, end (K, E, A, 2), progress (K, E, A): each agent moves uniformly from start to
    end over [0, progress], then rests (stop mode).
    """
    A = start.shape[2]
    iu = np.triu_indices(A, 1)
    xi, xj = progress[..., iu[0]], progress[..., iu[1]]  # (K, E, P)
    lo, hi = np.minimum(xi, xj), np.maximum(xi, xj)

    def rel(t):  # (K, E, P, 2) separation of each pair at per-pair times t (K, E, P)
        pi = start[..., iu[0], :] + np.where(xi > 0, np.minimum(t, xi) / np.maximum(xi, 1e-30), 0.0)[..., None] * (end - start)[..., iu[0], :]
        pj = start[..., iu[1], :] + np.where(xj > 0, np.minimum(t, xj) / np.maximum(xj, 1e-30), 0.0)[..., None] * (end - start)[..., iu[1], :]
        return pi - pj

    zero = np.zeros(2)
    r0, rlo, rhi = rel(np.zeros_like(lo)), rel(lo), rel(hi)
    closest = np.minimum(point_segment_distance(zero, r0, rlo), point_segment_distance(zero, rlo, rhi))
    apart = np.linalg.norm(r0, axis=-1) >= 2 * R
    return int((apart & (closest < 2 * R - TOL)).sum())


def check(start, end, walls):
    """Counts (crossings, penetrations, overlaps) of K steps: start, end (K, E, A, 2)."""
    a = walls[None, :, None, :, 0]  # (1, E, 1, M, 2)
    b = walls[None, :, None, :, 1]
    p0, p1 = start[..., None, :], end[..., None, :]  # (K, E, A, 1, 2)
    d0 = point_segment_distance(p0, a, b)
    d, crosses = segment_distance(p0, p1, a, b)
    crossings = int(crosses.sum())
    penetrations = int(((d0 >= R) & (d < R - TOL)).sum())
    A = start.shape[2]
    iu = np.triu_indices(A, 1)
    g0 = np.linalg.norm(start[:, :, :, None] - start[:, :, None], axis=-1)[..., iu[0], iu[1]]
    g1 = np.linalg.norm(end[:, :, :, None] - end[:, :, None], axis=-1)[..., iu[0], iu[1]]
    overlaps = int(((g0 >= 2 * R) & (g1 < 2 * R - TOL)).sum())
    return crossings, penetrations, overlaps


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agent-steps", type=float, default=1e6)
    parser.add_argument("--envs", type=int, default=48)
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--chunk", type=int, default=50, help="steps per compiled call")
    parser.add_argument("--res", type=int, default=16, help="render resolution checked each step")
    parser.add_argument("--max-speed", type=float, default=1000.0, help="m/s")
    parser.add_argument("--backend", default="kernel", choices=core.BACKENDS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args(argv)

    t0 = time.time()
    geometries = plans(args.envs, args.seed)
    E, A = args.envs, args.agents
    s = scene.scenery(geometries, n_agents=A, key=jax.random.PRNGKey(args.seed), backend=args.backend)
    walls = padded_walls(geometries)
    agents = init_agents(E, A).replace(positions=jnp.asarray(spawn(geometries, A, args.seed)))
    movement = modules.SimpleMovement(A)
    fps = 10.0
    log_lo, log_hi = np.log(0.1), np.log(args.max_speed)

    @jax.jit
    def run(agents, key):
        def step(agents, k):
            k_act, k_speed = jax.random.split(k)
            actions = jax.random.randint(k_act, (E, A), 0, 7)
            # velocity = speed/fps * row, so speed = fps * |velocity|
            speed = fps * jnp.exp(jax.random.uniform(k_speed, (E, A, 1), minval=log_lo, maxval=log_hi))
            moved = movement.apply(agents, actions, fps, speed=speed)
            after, progress = core.physics(s, moved, fps=fps, backend=args.backend)
            r = core.render(s, after, res=args.res, backend=args.backend)
            hit = r.indices >= 0
            render_bad = (jnp.sum(hit & ~jnp.isfinite(r.distances)) + jnp.sum(~jnp.isfinite(r.screen))
                          + jnp.sum(~jnp.isfinite(r.dots)) + jnp.sum(~jnp.isfinite(r.locations))
                          + jnp.sum((r.screen < 0) | (r.screen > 1))
                          + jnp.sum((r.indices < -1) | (r.indices >= s.n_lines[:, None, None])))
            state_bad = sum(jnp.sum(~jnp.isfinite(x)) for x in
                            (after.positions, after.velocity, after.angles, after.angvelocity, progress))
            progress_bad = jnp.sum((progress < 0) | (progress > 1))
            return after, (agents.positions, after.positions, progress, render_bad, state_bad,
                           progress_bad, jnp.mean(progress < 1))

        return jax.lax.scan(step, agents, jax.random.split(key, args.chunk))

    per_chunk = E * A * args.chunk
    n_chunks = max(1, int(np.ceil(args.agent_steps / per_chunk)))
    totals = dict(crossings=0, penetrations=0, overlaps=0, mid_step_passes=0, nonfinite_render=0,
                  nonfinite_state=0, progress_out_of_range=0)
    collided = []
    key = jax.random.PRNGKey(args.seed + 1)
    rss_start = None
    t_run = time.time()
    for c in range(n_chunks):
        key, k = jax.random.split(key)
        agents, (start, end, progress, render_bad, state_bad, progress_bad, hit_rate) = run(agents, k)
        start, end = np.asarray(start, np.float64), np.asarray(end, np.float64)
        cr, pe, ov = check(start, end, walls)
        totals["mid_step_passes"] += mid_step_passes(start, end, np.asarray(progress, np.float64))
        totals["crossings"] += cr
        totals["penetrations"] += pe
        totals["overlaps"] += ov
        totals["nonfinite_render"] += int(np.sum(render_bad))
        totals["nonfinite_state"] += int(np.sum(state_bad))
        totals["progress_out_of_range"] += int(np.sum(progress_bad))
        collided.append(float(np.mean(hit_rate)))
        if c == 0:
            rss_start = rss_mb()
            t_run = time.time()
        if (c + 1) % 10 == 0 or c == n_chunks - 1:
            print(f"  chunk {c + 1}/{n_chunks}: {totals} rss {rss_mb():.0f} MB", flush=True)
    rss_end = rss_mb()
    steps_done = n_chunks * per_chunk
    out = dict(agent_steps=steps_done, envs=E, agents_per_env=A, backend=args.backend,
               max_speed=args.max_speed, plans=sorted({str(g.get("id")) for g in geometries})[:3] + ["..."],
               collision_rate=float(np.mean(collided)), rss_start_mb=round(rss_start, 1),
               rss_end_mb=round(rss_end, 1), rss_growth_mb=round(rss_end - rss_start, 1),
               seconds=round(time.time() - t0, 1),
               agent_steps_per_second=round((n_chunks - 1) * per_chunk / max(time.time() - t_run, 1e-9)),
               **totals)
    print(json.dumps(out, indent=1))
    bad = sum(totals.values())
    print("soak:", "PASS (all counts 0)" if bad == 0 else f"FAIL ({bad} violations)")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    result = main()
    sys.exit(0 if sum(result[k] for k in ("crossings", "penetrations", "overlaps", "mid_step_passes",
                                          "nonfinite_render",
                                          "nonfinite_state", "progress_out_of_range")) == 0 else 1)
