"""Property tests (hypothesis) of the physics and render kernels on random, degenerate worlds.

Worlds: random segments including zero-length, coincident, collinear-overlapping, very
short (1e-4 m) and very long (~45 m) walls, walls through an agent, no walls, no lights;
several agents at non-overlapping random positions with random angles and velocities up
to 1000 m/s. Properties: progress in [0, 1] and every output finite; no agent's swept disc
crosses or newly enters a wall during a step; agents that start apart do not end a step overlapping; render
indices in range, distances finite and positive exactly where a ray hits, screen in
[0, 1]; kernel and reference agree.

Shapes are fixed (sceneries padded to common sizes) so each jitted function compiles once.
Examples are derandomised and not shrunk by default, so CI is reproducible and short;
set ``HYPOTHESIS_PROFILE=explore`` to search afresh (and shrink). The geometric checks here are also used by
``benchmarks/soak.py``.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from megastep_jax import core, geometry, scene

settings.register_profile(
    "ci", max_examples=30, deadline=None, derandomize=True, print_blob=True,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # no shrinking: keep CI short
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile(
    "explore", max_examples=200, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

R = core.AGENT_RADIUS
N_ENVS, N_AGENTS = 2, 3
MAX_WALLS = 16   # per env, padded with zero-length walls far from every agent
MAX_LIGHTS = 3
MAX_TEXELS = 8192
RES = 24
# Tolerances of the geometric checks, in metres: float32 positions near 10 m round at
# ~1e-6; megastep's contact radius is 1.001 R and it stops at 99% of the way.
WALL_TOLERANCE = 1e-4
OVERLAP_TOLERANCE = 1e-4


# ---------------------------------------------------------------------------------------
# Geometric checks (float64 numpy), shared with benchmarks/soak.py

def _cross(u, v):
    return u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]


def point_segment_distance(q, a, b):
    """Distance from points q (..., 2) to segments a-b (..., 2), broadcast."""
    d = b - a
    dd = np.sum(d * d, -1)
    t = np.where(dd > 0, np.sum((q - a) * d, -1) / np.where(dd > 0, dd, 1.0), 0.0).clip(0, 1)
    return np.linalg.norm(q - (a + t[..., None] * d), axis=-1)


def segment_distance(p0, p1, a, b):
    """Least distance between segments p0-p1 and a-b, and whether they properly cross.

    Returns:
        (distance, crosses), each broadcast over the leading axes.
    """
    o1, o2 = _cross(p1 - p0, a - p0), _cross(p1 - p0, b - p0)
    o3, o4 = _cross(b - a, p0 - a), _cross(b - a, p1 - a)
    crosses = (o1 * o2 < 0) & (o3 * o4 < 0)
    d = np.minimum.reduce([point_segment_distance(p0, a, b), point_segment_distance(p1, a, b),
                           point_segment_distance(a, p0, p1), point_segment_distance(b, p0, p1)])
    return np.where(crosses, 0.0, d), crosses


def wall_violations(start, end, walls, radius=R, tol=WALL_TOLERANCE):
    """Counts the ways one env's agents went through its walls in one step.

    Args:
        start, end: (A, 2) agent centres before and after the step.
        walls: (M, 2, 2).

    Returns:
        (crossings, penetrations): crossings, the centre's path properly crossing a wall;
        penetrations, the swept disc coming within radius - tol of a wall it started
        clear of (>= radius away).
    """
    start, end, walls = (np.asarray(x, np.float64) for x in (start, end, walls))
    if len(walls) == 0:
        return 0, 0
    a, b = walls[None, :, 0], walls[None, :, 1]
    d0 = point_segment_distance(start[:, None], a, b)
    d, crosses = segment_distance(start[:, None], end[:, None], a, b)
    return int(crosses.sum()), int(((d0 >= radius) & (d < radius - tol)).sum())


def overlaps(start, end, radius=R, tol=OVERLAP_TOLERANCE):
    """Pairs of one env's agents that end closer than 2 radius - tol having started apart."""
    start, end = np.asarray(start, np.float64), np.asarray(end, np.float64)
    A = len(start)
    iu = np.triu_indices(A, 1)
    d0 = np.linalg.norm(start[:, None] - start[None], axis=-1)[iu]
    d1 = np.linalg.norm(end[:, None] - end[None], axis=-1)[iu]
    return int(((d0 >= 2 * radius) & (d1 < 2 * radius - tol)).sum())


# ---------------------------------------------------------------------------------------
# Worlds

def padded_scenery(geoms, n_agents, key):
    """scene.scenery, then padded to MAX_WALLS walls, MAX_LIGHTS lights, MAX_TEXELS texels."""
    s = scene.scenery(geoms, n_agents=n_agents, key=key)
    L = 8 * n_agents + MAX_WALLS
    T = MAX_TEXELS
    pad = lambda x, n, axis, v=0: jnp.pad(
        x, [(0, 0)] * axis + [(0, n - x.shape[axis])] + [(0, 0)] * (x.ndim - axis - 1),
        constant_values=v)
    assert s.textures.shape[1] <= T and s.lines.shape[1] <= L
    # The grid's sizes vary with the walls: padded to the next power of two, so the jitted
    # kernels see a handful of shapes, not one per example. Cells past nx * ny repeat the
    # last offset (empty) and entries past the last offset are never read.
    bucket = lambda n: 1 << max(6, (n - 1).bit_length())
    C, K = bucket(s.grid_cells.shape[1]), bucket(s.grid_lines.shape[1])
    cells = jnp.concatenate([s.grid_cells, jnp.repeat(s.grid_cells[:, -1:], C - s.grid_cells.shape[1], 1)], 1)
    return s.replace(lines=pad(s.lines, L, 1), texel_starts=pad(s.texel_starts, L, 1),
                     texel_widths=pad(s.texel_widths, L, 1), lights=pad(s.lights, MAX_LIGHTS, 1),
                     textures=pad(s.textures, T, 1), baked=pad(s.baked, T, 1, 1.0),
                     grid_cells=cells, grid_lines=pad(s.grid_lines, K, 1))


coord = st.floats(1.2, 8.8, allow_nan=False)
point = st.tuples(coord, coord)


@st.composite
def walls_strategy(draw, agent_positions):
    """Up to MAX_WALLS walls, degenerate ones included, as a (M, 2, 2) array."""
    kinds = draw(st.lists(st.sampled_from(
        ["random", "random", "random", "zero", "short", "long", "coincident", "collinear",
         "through_agent", "box"]), max_size=6))
    walls = []
    for kind in kinds:
        if kind == "random":
            walls.append([draw(point), draw(point)])
        elif kind == "zero":
            p = draw(point)
            walls.append([p, p])
        elif kind == "short":
            p = np.array(draw(point))
            walls.append([p, p + np.array([1e-4, draw(st.floats(-1e-4, 1e-4))])])
        elif kind == "long":
            y = draw(coord)
            walls.append([[1.01, y], [45.0, y + draw(st.floats(-0.5, 0.5))]])
        elif kind in ("coincident", "collinear") and walls:
            a, b = np.array(walls[-1], np.float64)
            if kind == "coincident":
                walls.append([a, b])
            else:  # an overlapping piece of the previous wall's line
                f0, f1 = draw(st.floats(-0.3, 0.7)), draw(st.floats(0.3, 1.3))
                walls.append([a + f0 * (b - a), a + f1 * (b - a)])
        elif kind == "through_agent":
            c = np.array(agent_positions[draw(st.integers(0, len(agent_positions) - 1))])
            angle = draw(st.floats(0, np.pi))
            u = np.array([np.cos(angle), np.sin(angle)]) * draw(st.floats(0.05, 1.0))
            off = draw(st.floats(-R, R)) * np.array([-u[1], u[0]]) / np.linalg.norm(u)
            walls.append([c + off - u, c + off + u])
        elif kind == "box":
            lo, hi = 1.05, draw(st.floats(3.0, 9.5))
            corners = np.array([[lo, lo], [hi, lo], [hi, hi], [lo, hi]])
            walls.extend(geometry.cyclic_pairs(corners).tolist())
    walls = np.clip(np.array(walls, np.float64).reshape(-1, 2, 2), 1e-3, None)[:MAX_WALLS - 1]
    # padding: zero-length walls at a far corner keep the line count fixed
    far = np.full((MAX_WALLS - len(walls), 2, 2), 0.05)
    return np.concatenate([walls, far]).astype(np.float32)


@st.composite
def agent_positions_strategy(draw, n_agents):
    """Positions in distinct cells of a 6x6 grid, jittered: pairwise >= 0.4 m apart."""
    cells = draw(st.lists(st.integers(0, 35), min_size=n_agents, max_size=n_agents, unique=True))
    jitter = draw(st.lists(st.tuples(st.floats(-0.4, 0.4), st.floats(-0.4, 0.4)),
                           min_size=n_agents, max_size=n_agents))
    return [(1.5 + 1.2 * (c % 6) + j[0], 1.5 + 1.2 * (c // 6) + j[1]) for c, j in zip(cells, jitter)]


speed = st.one_of(st.just(0.0), st.floats(1e-3, 1000.0), st.just(1000.0))
velocity = st.tuples(speed, st.floats(-np.pi, np.pi)).map(lambda x: (x[0] * np.cos(x[1]), x[0] * np.sin(x[1])))


@st.composite
def worlds(draw, n_envs=N_ENVS, n_agents=N_AGENTS):
    """(geometries, agents, velocities per step) for n_envs envs of n_agents agents."""
    geoms, positions = [], []
    for e in range(n_envs):
        pos = draw(agent_positions_strategy(n_agents))
        walls = draw(walls_strategy(pos))
        n_lights = draw(st.integers(0, MAX_LIGHTS))
        lights = np.array([draw(point) for _ in range(n_lights)], np.float32).reshape(-1, 2)
        geoms.append(geometry.geometry(walls, lights, np.zeros((4, 4), np.int32), id=e))
        positions.append(pos)
    angles = draw(st.lists(st.floats(-180, 180, exclude_max=True), min_size=n_envs * n_agents,
                           max_size=n_envs * n_agents))
    angvel = draw(st.lists(st.floats(-3600, 3600), min_size=n_envs * n_agents, max_size=n_envs * n_agents))
    steps = draw(st.integers(1, 3))
    vels = [draw(st.lists(velocity, min_size=n_envs * n_agents, max_size=n_envs * n_agents))
            for _ in range(steps)]
    agents = core.init_agents(n_envs, n_agents).replace(
        positions=jnp.asarray(positions, jnp.float32),
        angles=jnp.asarray(angles, jnp.float32).reshape(n_envs, n_agents),
        angvelocity=jnp.asarray(angvel, jnp.float32).reshape(n_envs, n_agents))
    vels = [np.asarray(v, np.float32).reshape(n_envs, n_agents, 2) for v in vels]
    return geoms, agents, vels, draw(st.integers(0, 2**31 - 1))


# Shared jitted entry points: one compile each for the fixed shapes above.
_physics = {b: jax.jit(lambda s, a, b=b: core.physics(s, a, fps=10.0, backend=b)) for b in core.BACKENDS}
_render = {b: jax.jit(lambda s, a, fov, b=b: core.render(s, a, res=RES, fov=fov, backend=b))
           for b in core.BACKENDS}


def _in_contact(agents, geoms, slack=1e-3):
    """(E, A) bool: agents starting within contact range (plus slack) of a wall or an agent."""
    from megastep_jax.reference import CONTACT_SCALE

    P = np.asarray(agents.positions, np.float64)
    out = np.zeros(P.shape[:2], bool)
    for e, g in enumerate(geoms):
        w = np.asarray(g.walls, np.float64)
        d = point_segment_distance(P[e][:, None], w[None, :, 0], w[None, :, 1]).min(1)
        gap = np.linalg.norm(P[e][:, None] - P[e][None], axis=-1) + np.eye(len(P[e])) * 1e9
        out[e] = (d < CONTACT_SCALE * R + slack) | (gap.min(1) < 2 * CONTACT_SCALE * R + slack)
    return out


def _touching_loose(loose, progress, progress_ref, moved, moved_ref, slack=2e-3):
    """Widens ``loose`` (E, A) to the agents stopped in contact with a loose agent, transitively.

    An agent counts when its progress is < 1 in either backend and, in that backend, it
    ends within contact range (plus slack) of a loose agent. Agents that made their full
    motion are never added.
    """
    from megastep_jax.reference import CONTACT_SCALE

    loose = loose.copy()
    A = loose.shape[1]
    near = []
    for x, m in ((progress, moved), (progress_ref, moved_ref)):
        P = np.asarray(m.positions, np.float64)
        gap = np.linalg.norm(P[:, :, None] - P[:, None], axis=-1) + np.eye(A) * 1e9
        near.append((gap < 2 * CONTACT_SCALE * R + slack) & (np.asarray(x) < 1)[:, :, None])
    near = near[0] | near[1]  # [e, i, j]: i stopped and ends in contact with j
    for _ in range(A):
        loose = loose | np.any(near & loose[:, None, :], -1)
    return loose


def _finite_agents(a):
    return all(np.isfinite(np.asarray(x)).all() for x in (a.positions, a.velocity, a.angles, a.angvelocity))


# ---------------------------------------------------------------------------------------
# Properties

@given(worlds())
def test_physics_never_crosses_walls_and_matches_reference(world):
    geoms, agents, vels, seed = world
    s = padded_scenery(geoms, N_AGENTS, jax.random.key(seed))
    for v in vels:
        a = agents.replace(velocity=jnp.asarray(v))
        moved, progress = _physics["kernel"](s, a)
        moved_ref, progress_ref = _physics["reference"](s, a)
        progress = np.asarray(progress)
        assert np.all((progress >= 0) & (progress <= 1)), progress
        assert _finite_agents(moved)
        assert np.all(np.asarray(moved.angles) >= -180) and np.all(np.asarray(moved.angles) < 180)
        for e, g in enumerate(geoms):
            start, end = np.asarray(a.positions[e]), np.asarray(moved.positions[e])
            crossings, penetrations = wall_violations(start, end, g.walls)
            assert crossings == 0 and penetrations == 0, (e, start, end, v[e])
            assert overlaps(start, end) == 0
        # kernel vs reference: same maths, float rounding apart. An agent that starts in
        # contact (or centred on a wall's line) sits on a discontinuity: whether it may
        # move is decided by the sign of rounding errors, which differ with the compiler's
        # FMA contraction. So is every agent whose contact was with such an agent (ends
        # within contact range of it, having been stopped), and so on down the chain.
        loose = _in_contact(a, geoms)
        loose = _touching_loose(loose, progress, np.asarray(progress_ref), moved, moved_ref)
        close = np.isclose(progress, progress_ref, atol=2e-3)
        assert np.all(close | loose), (progress, progress_ref)
        step = np.linalg.norm(v, axis=-1) / 10.0
        err = np.linalg.norm(np.asarray(moved.positions) - np.asarray(moved_ref.positions), axis=-1)
        assert np.all((err <= 2e-3 * np.maximum(step, 1.0)) | loose), err
        for e, g in enumerate(geoms):  # the reference keeps the same guarantees
            start, end = np.asarray(a.positions[e]), np.asarray(moved_ref.positions[e])
            assert wall_violations(start, end, g.walls) == (0, 0) and overlaps(start, end) == 0
        agents = moved


@pytest.mark.slow
@settings(max_examples=40)
@given(worlds(n_envs=2, n_agents=5))
def test_agents_never_overlap(world):
    geoms, agents, vels, seed = world
    s = padded_scenery(geoms, 5, jax.random.key(seed))
    for v in vels:
        # crowd them: everyone heads for the middle of the plan, some fast
        towards = 5.0 - np.asarray(agents.positions)
        v = v + 10.0 * towards
        a = agents.replace(velocity=jnp.asarray(v, jnp.float32))
        for backend in core.BACKENDS:
            moved, _ = _physics[backend](s, a)
            for e in range(len(geoms)):
                assert overlaps(np.asarray(a.positions[e]), np.asarray(moved.positions[e])) == 0, backend
        agents = moved


@pytest.mark.parametrize("backend", core.BACKENDS)
def test_agent_stopped_by_a_wall_is_not_run_into(backend):
    # agent 1 runs into the wall at x = 6 and stops; agent 0, right behind at the same
    # speed, has no relative motion to it, so megastep's rule alone would let it run on
    # into agent 1. It stops at its first contact with agent 1's resting disc instead.
    from megastep_jax import toys

    s = scene.scenery([toys.box()], n_agents=2, key=jax.random.key(0))
    a = core.init_agents(1, 2).replace(positions=jnp.array([[[4.5, 3.0], [5.0, 3.0]]]),
                                       velocity=jnp.array([[[20.0, 0.0], [20.0, 0.0]]]))
    moved, progress = core.physics(s, a, fps=10.0, backend=backend)
    gap = float(jnp.linalg.norm(moved.positions[0, 0] - moved.positions[0, 1]))
    # within the 1% back-off (of its 2 m motion) of touching, never closer
    assert 2 * 1.001 * R <= gap <= 2 * 1.001 * R + 0.01 * 2.0
    assert float(progress[0, 1]) < float(progress[0, 0]) < 1


@given(worlds(), st.floats(1.0, 179.0))
def test_render_outputs_in_range_and_match_reference(world, fov):
    geoms, agents, _, seed = world
    s = padded_scenery(geoms, N_AGENTS, jax.random.key(seed))
    rk, rr = _render["kernel"](s, agents, fov), _render["reference"](s, agents, fov)
    n_lines = np.asarray(s.n_lines)[:, None, None]
    for r in (rk, rr):
        idx = np.asarray(r.indices)
        hit = idx >= 0
        assert np.all((idx >= -1) & (idx < n_lines))
        dist, loc, dots, screen = (np.asarray(x) for x in (r.distances, r.locations, r.dots, r.screen))
        assert np.all(np.isfinite(dist[hit]) & (dist[hit] > 0))
        assert np.all(np.isinf(dist[~hit])) and np.all(loc[~hit] == 0) and np.all(screen[~hit] == 0)
        assert np.all((loc[hit] >= 0) & (loc[hit] <= 1))
        assert np.all(np.abs(dots[hit]) <= 1 + 1e-5)
        assert np.all(np.isfinite(screen)) and screen.min() >= 0 and screen.max() <= 1
        # no pixel sees its own agent's model: it is inside the near plane
        own = (idx >= 8 * np.arange(N_AGENTS)[None, :, None]) & (idx < 8 * np.arange(1, N_AGENTS + 1)[None, :, None])
        assert not own.any()
    agree = np.asarray(rk.indices) == np.asarray(rr.indices)
    # disagreements only between near-equal hits (ties within float rounding)
    dk, dr = np.asarray(rk.distances), np.asarray(rr.distances)
    both = np.isfinite(dk) & np.isfinite(dr)
    assert np.all(agree | (both & np.isclose(dk, dr, atol=2e-3, rtol=1e-4)) | _grazing(rk, rr))
    np.testing.assert_allclose(dk[agree & both], dr[agree & both], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(rk.screen)[agree], np.asarray(rr.screen)[agree], atol=1e-3)


def _grazing(rk, rr):
    """Pixels where one backend hits a line end-on or at a grazing angle and the other misses."""
    dots = np.maximum(np.abs(np.asarray(rk.dots)), np.abs(np.asarray(rr.dots)))
    loc = np.where(np.asarray(rk.indices) >= 0, np.asarray(rk.locations), np.asarray(rr.locations))
    return (dots > 0.999) | (loc < 1e-3) | (loc > 1 - 1e-3)


@given(worlds())
def test_bake_in_range_and_matches_reference(world):
    geoms, _, _, seed = world
    s = padded_scenery(geoms, N_AGENTS, jax.random.key(seed))
    bk, br = np.asarray(core.bake(s).baked), np.asarray(core.bake(s, backend="reference").baked)
    assert np.all(np.isfinite(bk)) and bk.min() >= core.AMBIENT - 1e-6 and bk.max() <= 1
    np.testing.assert_allclose(bk, br, atol=1e-5)


@pytest.mark.slow
@settings(max_examples=150)
@given(worlds(n_envs=2, n_agents=3))
def test_physics_never_crosses_walls_many_examples(world):
    test_physics_never_crosses_walls_and_matches_reference.hypothesis.inner_test(world)
