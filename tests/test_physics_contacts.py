"""Physics against an independent brute-force oracle: first contacts along the paths taken.

The oracle knows nothing of the kernels' candidate formulas. In float64 it samples time
finely (``N_SAMPLES`` per step) and measures distances: each agent's path, continued at its
own velocity, against every wall segment and against every other agent *where that agent
actually is* at the same time (its output progress for stop; the recorded segments of
:func:`megastep_jax.reference.physics_trace` for slide and bounce). From that:

- stopped short: an agent whose progress is more than 2% of its motion (plus one sample)
  before the first sampled time its continued path comes within megastep's contact
  distances (1.001 R of a wall, 1.001 * 2R of an agent) of a wall or another agent;
- passing: at some sampled time an agent is closer than R (minus 1e-4 m) to a wall or
  2R (minus 1e-4 m) to another agent, having started clear.

Scenes: boxes with 10 random interior walls, 2-8 agents spawned clear of walls and each
other, speeds up to 40 m/s (4 m per step at 10 fps, 16 radii), half of them aimed at
another agent so agent-agent contacts are common.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from megastep_jax import core, reference, scene, toys
from megastep_jax.state import Scenery, init_agents

R = core.AGENT_RADIUS
FPS = 10.0
N_SAMPLES = 400          # sampled times per step
WALL_CONTACT = 1.001 * R  # megastep's contact distances: stopping there is by design
AGENT_CONTACT = 1.001 * 2 * R
TOL = 1e-4
SIZE = 10.0
N_WALLS = 10


# ---------------------------------------------------------------------------------------
# Scenes

@functools.lru_cache(maxsize=None)
def _model():
    return np.asarray(scene.scenery([toys.box()], n_agents=1, key=jax.random.key(0)).model)


def scenery_of(walls: np.ndarray, n_agents: int) -> Scenery:
    """A physics-only Scenery (no lights, no texels) of walls (E, M, 2, 2) for n_agents."""
    E, M = walls.shape[:2]
    L = 8 * n_agents + M
    lines = np.zeros((E, L, 2, 2), np.float32)
    lines[:, 8 * n_agents:] = walls
    f32 = lambda *shape: jnp.zeros(shape, jnp.float32)
    return Scenery(lines=jnp.asarray(lines), n_lines=jnp.full((E,), L, jnp.int32), lights=f32(E, 1, 3),
                   n_lights=jnp.zeros((E,), jnp.int32), textures=f32(E, 1, 3),
                   texel_starts=jnp.zeros((E, L), jnp.int32), texel_widths=jnp.zeros((E, L), jnp.int32),
                   baked=jnp.ones((E, 1), jnp.float32), model=jnp.asarray(_model()), n_agents=n_agents)


def segment_distance(q, a, b):
    """Distance (float64) from points q (..., 2) to segments a-b (..., 2), broadcast."""
    d = b - a
    dd = np.sum(d * d, -1)
    t = np.clip(np.sum((q - a) * d, -1) / np.where(dd > 0, dd, 1.0), 0.0, 1.0)
    return np.linalg.norm(q - (a + t[..., None] * d), axis=-1)


def random_scenes(rng, n_envs: int, n_agents: int, size: float = SIZE, n_walls: int = N_WALLS,
                  max_speed: float = 40.0):
    """(walls (E, 4 + n_walls, 2, 2), positions (E, A, 2), velocities (E, A, 2)), float64.

    A box [0.5, size - 0.5]^2 with n_walls random walls (0.5-4 m); agents at least 2 cm
    beyond contact range of every wall and each other; speeds uniform in [0, max_speed],
    half aimed at another agent.
    """
    lo, hi = 0.5, size - 0.5
    box = np.array([[[lo, lo], [hi, lo]], [[hi, lo], [hi, hi]], [[hi, hi], [lo, hi]], [[lo, hi], [lo, lo]]])
    walls = np.zeros((n_envs, 4 + n_walls, 2, 2))
    positions = np.zeros((n_envs, n_agents, 2))
    for e in range(n_envs):
        centre = rng.uniform(lo + 0.5, hi - 0.5, (n_walls, 2))
        angle = rng.uniform(0, np.pi, n_walls)
        half = rng.uniform(0.25, 2.0, n_walls)[:, None] * np.stack([np.cos(angle), np.sin(angle)], -1)
        walls[e] = np.concatenate([box, np.stack([centre - half, centre + half], 1).clip(lo, hi)])
        chosen = []
        while len(chosen) < n_agents:
            p = rng.uniform(lo + R + 0.1, hi - R - 0.1, 2)
            if segment_distance(p, walls[e, :, 0], walls[e, :, 1]).min() < WALL_CONTACT + 0.02:
                continue
            if any(np.linalg.norm(p - q) < AGENT_CONTACT + 0.02 for q in chosen):
                continue
            chosen.append(p)
        positions[e] = chosen
    speed = rng.uniform(0, max_speed, (n_envs, n_agents))
    angle = rng.uniform(-np.pi, np.pi, (n_envs, n_agents))
    direction = np.stack([np.cos(angle), np.sin(angle)], -1)
    target = positions[np.arange(n_envs)[:, None], rng.integers(0, n_agents, (n_envs, n_agents))]
    towards = target - positions
    norm = np.linalg.norm(towards, axis=-1, keepdims=True)
    aimed = (rng.uniform(size=(n_envs, n_agents, 1)) < 0.5) & (norm > 0)
    direction = np.where(aimed, towards / np.where(norm > 0, norm, 1.0), direction)
    return walls, positions, speed[..., None] * direction


def agents_of(positions, velocities):
    E, A = positions.shape[:2]
    return init_agents(E, A).replace(positions=jnp.asarray(positions, jnp.float32),
                                     velocity=jnp.asarray(velocities, jnp.float32))


# ---------------------------------------------------------------------------------------
# The oracle (float64, sampled)

TIMES = np.linspace(0.0, 1.0, N_SAMPLES + 1)


def stop_paths(p, m, progress):
    """(E, T, A, 2) positions at TIMES of agents that move uniformly until their progress."""
    t = np.minimum(TIMES[None, :, None], progress[:, None, :])
    return p[:, None] + t[..., None] * m[:, None]


def traced_paths(trace, fps=FPS):
    """(E, T, A, 2) positions at TIMES from a reference.physics_trace trace."""
    times = np.asarray(trace["times"], np.float64)  # (E, K)
    k = np.sum(times[:, None, :] <= TIMES[None, :, None], -1) - 1  # (E, T): state in force
    take = lambda x: np.take_along_axis(np.asarray(x, np.float64), k.reshape(k.shape + (1,) * (x.ndim - 2)), 1)
    p0, t0, v = take(trace["p0"]), take(trace["t0"]), take(trace["velocity"])
    live = take(trace["contacts"]) < reference.MAX_CONTACTS
    m = np.where(live[..., None], v / fps, 0.0)
    return p0 + (TIMES[None, :, None] - t0)[..., None] * m


def positions_at(trace, t, fps=FPS):
    """(E, A, A, 2): [e, i] every agent of env e at time t[e, i], from a physics_trace trace."""
    times = np.asarray(trace["times"], np.float64)  # (E, K)
    k = np.sum(times[:, None, :] <= t[:, :, None], -1) - 1  # (E, A)
    E, A = t.shape
    e = np.arange(E)[:, None]
    p0, t0 = np.asarray(trace["p0"], np.float64)[e, k], np.asarray(trace["t0"], np.float64)[e, k]
    v = np.asarray(trace["velocity"], np.float64)[e, k]
    live = np.asarray(trace["contacts"])[e, k] < reference.MAX_CONTACTS
    m = np.where(live[..., None], v / fps, 0.0)  # (E, A, A, 2)
    return p0 + (t[:, :, None] - t0)[..., None] * m


def wall_gaps(paths, walls):
    """(E, T, A) distance of every sampled centre to its nearest wall."""
    out = np.full(paths.shape[:-1], np.inf)
    for w in range(walls.shape[1]):
        a, b = walls[:, None, None, w, 0], walls[:, None, None, w, 1]
        out = np.minimum(out, segment_distance(paths, a, b))
    return out


def agent_gaps(paths_a, paths_b):
    """(E, T, A, A): [.., i, j] distance from agent i's path a to agent j's path b; inf on i == j."""
    A = paths_a.shape[2]
    gap = np.linalg.norm(paths_a[:, :, :, None] - paths_b[:, :, None], axis=-1)
    return np.where(np.eye(A, dtype=bool), np.inf, gap)


def agent_near(paths_a, paths_b, distance, chunk=40):
    """(E, T, A, A) bool: agent_gaps(paths_a, paths_b) < distance, a few times at a time."""
    return np.concatenate([agent_gaps(paths_a[:, t:t + chunk], paths_b[:, t:t + chunk]) < distance
                           for t in range(0, paths_a.shape[1], chunk)], 1)


def first_contacts(p, m, paths, walls):
    """(E, A) first sampled time each agent's continued path meets a wall or an actual path.

    Also returns (E, A) bool: whether that first contact is with another agent.
    """
    free = p[:, None] + TIMES[None, :, None, None] * m[:, None]  # continued, unobstructed
    wall = wall_gaps(free, walls) < WALL_CONTACT                   # (E, T, A)
    agent = np.any(agent_near(free, paths, AGENT_CONTACT), -1)      # (E, T, A)
    touch = wall | agent
    hit = touch.any(1)
    first = np.argmax(touch, 1)
    t = np.where(hit, TIMES[first], np.inf)
    by_agent = hit & np.take_along_axis(agent, first[:, None], 1)[:, 0]
    return t, by_agent


def passes(p, paths, walls):
    """Counts of (wall passes, agent passes): sampled times closer than R / 2R (less TOL)."""
    start_wall = wall_gaps(p[:, None], walls)[:, 0]  # (E, A)
    wall = (wall_gaps(paths, walls) < R - TOL) & (start_wall >= R)[:, None]
    start_pair = agent_gaps(p[:, None], p[:, None])[:, 0]
    pair = agent_near(paths, paths, 2 * R - TOL) & (start_pair >= 2 * R)[:, None]
    return int(wall.any(1).sum()), int(pair.any(1).sum()) // 2


def check_stop(walls, p, v, progress, positions, chunk=100):
    """Oracle figures of one batch of stop-mode steps; every count must be 0."""
    m = v / FPS
    out = dict(agents=0, stopped=0, by_agent=0, short=0, wall_passes=0, agent_passes=0, moved_wrong=0)
    for lo in range(0, len(p), chunk):
        sl = slice(lo, lo + chunk)
        x = progress[sl]
        paths = stop_paths(p[sl], m[sl], x)
        c, by_agent = first_contacts(p[sl], m[sl], paths, walls[sl])
        short = (x < 1) & (x < np.minimum(c, 1.0) - 0.02 - 1.0 / N_SAMPLES)
        wp, ap = passes(p[sl], paths, walls[sl])
        out["agents"] += x.size
        out["stopped"] += int((x < 1).sum())
        out["by_agent"] += int(((x < 1) & by_agent).sum())
        out["short"] += int(short.sum())
        out["wall_passes"] += wp
        out["agent_passes"] += ap
        expected = p[sl] + x[..., None] * m[sl]
        out["moved_wrong"] += int((np.linalg.norm(positions[sl] - expected, axis=-1) > 1e-4 + 1e-6 * np.linalg.norm(m[sl], axis=-1)).sum())
    return out


# ---------------------------------------------------------------------------------------
# Tests

_kernel = {c: jax.jit(lambda s, a, c=c: core.physics(s, a, fps=FPS, collision=c, restitution=0.8))
           for c in core.COLLISIONS}
_reference = {c: jax.jit(lambda s, a, c=c: core.physics(s, a, fps=FPS, collision=c, restitution=0.8,
                                                        backend="reference"))
              for c in core.COLLISIONS}
_reference_trace = {c: jax.jit(lambda s, a, c=c: reference.physics_trace(s, a, FPS, R, c, 0.8))
                    for c in core.COLLISIONS}


def _stop_batch(backend, n_envs, n_agents, seed):
    rng = np.random.default_rng(seed)
    walls, p, v = random_scenes(rng, n_envs, n_agents)
    s, a = scenery_of(walls, n_agents), agents_of(p, v)
    run = _kernel if backend == "kernel" else _reference
    moved, progress = run["stop"](s, a)
    p32, v32 = np.asarray(a.positions, np.float64), np.asarray(a.velocity, np.float64)
    return check_stop(walls, p32, v32, np.asarray(progress, np.float64),
                      np.asarray(moved.positions, np.float64))


@pytest.mark.parametrize("n_agents,n_envs", [(2, 600), (3, 500), (4, 400), (6, 300), (8, 300)])
def test_stop_reaches_the_first_real_contact_and_never_passes(n_agents, n_envs):
    # 2,100 scenes in all
    figures = _stop_batch("kernel", n_envs, n_agents, seed=n_agents)
    assert figures["short"] == 0, figures
    assert figures["wall_passes"] == 0 and figures["agent_passes"] == 0, figures
    assert figures["moved_wrong"] == 0, figures
    # not vacuous: many agents stop, and many of those on another agent
    assert figures["stopped"] > 0.3 * figures["agents"], figures
    assert figures["by_agent"] > 0.02 * figures["agents"], figures


def test_stop_reference_reaches_the_first_real_contact_and_never_passes():
    figures = _stop_batch("reference", 100, 6, seed=100)
    assert figures["short"] == 0 and figures["wall_passes"] == 0 and figures["agent_passes"] == 0, figures
    assert figures["by_agent"] > 0, figures


@pytest.mark.parametrize("collision", ["slide", "bounce"])
def test_slide_and_bounce_paths_never_pass_and_first_contacts_are_real(collision):
    rng = np.random.default_rng(7 if collision == "slide" else 8)
    n_agents = 6
    walls, p, v = random_scenes(rng, 150, n_agents)
    s, a = scenery_of(walls, n_agents), agents_of(p, v)
    moved, progress, trace = _reference_trace[collision](s, a)
    p64, v64 = np.asarray(a.positions, np.float64), np.asarray(a.velocity, np.float64)
    paths = traced_paths(trace)
    # the traced paths end where the step puts the agents, and start where they were
    np.testing.assert_allclose(paths[:, -1], np.asarray(moved.positions), atol=1e-4)
    np.testing.assert_allclose(paths[:, 0], p64, atol=1e-6)
    assert passes(p64, paths, walls) == (0, 0)
    # progress is the first contact: up to it the agent ran free, and then it was within
    # its contact distance of a wall or of where another agent then was (plus the 1%
    # back-off of the closing motion, and rounding)
    x = np.asarray(progress, np.float64)
    m = v64 / FPS
    free = p64[:, None] + TIMES[None, :, None, None] * m[:, None]
    before = TIMES[None, :, None] < x[:, None]
    assert np.all(np.where(before, np.linalg.norm(paths - free, axis=-1), 0.0) < 1e-4)
    at = positions_at(trace, x)  # (E, A, A, 2): [e, i] everyone at agent i's first contact
    E, A = x.shape
    own = at[:, np.arange(A), np.arange(A)]  # (E, A, 2)
    wall_gap = wall_gaps(own[:, None], walls)[:, 0] - WALL_CONTACT
    pair_gap = np.linalg.norm(own[:, :, None] - at, axis=-1) + np.where(np.eye(A, dtype=bool), np.inf, 0.0)
    speed = np.linalg.norm(m, axis=-1)
    agent_slack = 0.02 * (speed[:, :, None] + speed[:, None, :]) - (pair_gap - AGENT_CONTACT)
    real = (wall_gap <= 0.02 * speed + 1e-4) | np.any(agent_slack >= -1e-4, -1)
    assert np.all(real | (x == 1)), np.argwhere(~real & (x < 1))
    events = np.isfinite(np.asarray(trace["times"])).sum(-1) - 1
    assert (events > n_agents).any()  # several contacts per agent in some steps
    # the kernel agrees (see _agree for the envs where an agent reached its contact bound)
    moved_k, progress_k = _kernel[collision](s, a)
    _agree(moved_k, progress_k, moved, progress, trace, collision)


def _agree(mk, pk, mr, pr, trace, collision):
    """Kernel (mk, pk) == reference (mr, pr, with its trace), env by env.

    Under slide and bounce, envs where an agent reached MAX_CONTACTS in the reference are
    left out: there a cluster of discs pressed together (one pushing another into a wall
    under slide, a disc in a sharp wedge of walls) makes ever quicker contacts, and the
    contact at which the bound cuts the sequence, so the velocities then kept, depend on
    float rounding. At these speeds (up to 4 m, 16 radii, per step among 14 walls) they
    are a minority.
    """
    bound = np.zeros(np.asarray(pk).shape[0], bool)
    if collision != "stop":  # (under stop, every agent that stops is at its bound)
        bound = np.any(np.asarray(trace["contacts"]).max(1) >= reference.MAX_CONTACTS, -1)
    assert bound.mean() <= 0.25, bound.mean()
    # chains of contacts amplify float rounding a little
    np.testing.assert_allclose(np.asarray(pk)[~bound], np.asarray(pr)[~bound], atol=1e-4)
    for name in ("positions", "velocity", "angles", "angvelocity"):
        np.testing.assert_allclose(np.asarray(getattr(mk, name))[~bound],
                                   np.asarray(getattr(mr, name))[~bound], atol=1e-2, rtol=1e-3,
                                   err_msg=name)


@pytest.mark.parametrize("collision", ["stop", "slide", "bounce"])
def test_kernel_matches_reference_on_random_multi_agent_scenes(collision):
    rng = np.random.default_rng(11)
    for n_agents, n_envs in ((6, 80),):
        walls, p, v = random_scenes(rng, n_envs, n_agents)
        s, a = scenery_of(walls, n_agents), agents_of(p, v)
        mk, pk = _kernel[collision](s, a)
        mr, pr, trace = _reference_trace[collision](s, a)
        _agree(mk, pk, mr, pr, trace, collision)
        assert (np.asarray(pk) < 1).mean() > 0.3


@pytest.mark.parametrize("n_agents", [1, 2, 8, 64, 256])
def test_any_number_of_agents(n_agents):
    # a sparse crowd in a box of 8 x 8 m per 16 agents, everyone moving fast
    size = max(10.0, 2.0 * np.sqrt(n_agents) + 2)
    rng = np.random.default_rng(n_agents)
    walls, p, v = random_scenes(rng, 2, n_agents, size=size, n_walls=4, max_speed=20.0)
    s, a = scenery_of(walls, n_agents), agents_of(p, v)
    mk, pk = _kernel["stop"](s, a)
    p64, v64 = np.asarray(a.positions, np.float64), np.asarray(a.velocity, np.float64)
    figures = check_stop(walls, p64, v64, np.asarray(pk, np.float64), np.asarray(mk.positions, np.float64),
                         chunk=1)
    assert figures["short"] == 0 and figures["wall_passes"] == 0 and figures["agent_passes"] == 0, figures
    if n_agents >= 64:
        assert figures["by_agent"] > 0, figures
    if n_agents <= 64:  # (256: test_256_agents_kernel_matches_reference, slow)
        mr, pr = _reference["stop"](s, a)
        np.testing.assert_allclose(pk, pr, atol=1e-4)
        np.testing.assert_allclose(mk.positions, mr.positions, atol=1e-3)
    for collision in ("slide", "bounce"):
        mk, _ = _kernel[collision](s, a)
        end = np.asarray(mk.positions, np.float64)
        assert passes(p64, end[:, None], walls) == (0, 0), collision


@pytest.mark.slow
def test_256_agents_kernel_matches_reference():
    rng = np.random.default_rng(256)
    walls, p, v = random_scenes(rng, 1, 256, size=34.0, n_walls=4, max_speed=20.0)
    s, a = scenery_of(walls, 256), agents_of(p, v)
    for collision in ("stop", "slide", "bounce"):
        mk, pk = _kernel[collision](s, a)
        mr, pr = _reference[collision](s, a)
        np.testing.assert_allclose(pk, pr, atol=1e-4)
        np.testing.assert_allclose(mk.positions, mr.positions, atol=1e-2, rtol=1e-3)


# ---------------------------------------------------------------------------------------
# Energy and momentum under bounce

def _box_discs(rng, n_envs, n_agents, size, speed):
    walls, p, _ = random_scenes(rng, n_envs, n_agents, size=size, n_walls=0)
    angle = rng.uniform(-np.pi, np.pi, (n_envs, n_agents))
    v = rng.uniform(*speed, (n_envs, n_agents))[..., None] * np.stack([np.cos(angle), np.sin(angle)], -1)
    return walls, p, v


@pytest.mark.parametrize("n_agents,size", [(2, 4.0), (8, 5.0), (32, 9.0)])
def test_elastic_bounces_keep_kinetic_energy_over_1000_steps(n_agents, size):
    rng = np.random.default_rng(n_agents)
    walls, p, v = _box_discs(rng, 2, n_agents, size, speed=(3.0, 5.0))
    s, a = scenery_of(walls, n_agents), agents_of(p, v)

    @jax.jit
    def run(a):
        def step(a, _):
            a, progress = core.physics(s, a, fps=FPS, collision="bounce", restitution=1.0)
            return a, (jnp.sum(a.velocity ** 2, (-1, -2)), jnp.sum(progress < 1), a.positions)
        return jax.lax.scan(step, a, None, length=1000)[1]

    energy, contacts, positions = (np.asarray(x, np.float64) for x in run(a))
    energy0 = np.sum(v.astype(np.float32).astype(np.float64) ** 2, (-1, -2))
    np.testing.assert_allclose(energy, np.broadcast_to(energy0, energy.shape), rtol=1e-3)
    assert contacts.sum() > 50 * n_agents
    # at every step's end: inside the box, no two discs closer than 2R
    lo, hi = 0.5 + R - TOL, size - 0.5 - R + TOL
    assert positions.min() >= lo and positions.max() <= hi
    gaps = np.linalg.norm(positions[:, :, :, None] - positions[:, :, None], axis=-1) + 9 * np.eye(n_agents)
    assert gaps.min() >= 2 * R - TOL


@pytest.mark.parametrize("n_agents", [2, 8, 32])
@pytest.mark.parametrize("collision,restitution", [("bounce", 1.0), ("bounce", 0.5), ("slide", 1.0)])
def test_disc_contacts_conserve_momentum(n_agents, collision, restitution):
    # discs in the middle of a 40 m box, too slow to reach a wall within the step: every
    # contact is disc-disc, so total momentum is kept (and energy too where elastic)
    rng = np.random.default_rng(n_agents)
    n_envs = 20
    walls = np.tile(np.array([[[0.5, 0.5], [39.5, 0.5]], [[39.5, 0.5], [39.5, 39.5]],
                              [[39.5, 39.5], [0.5, 39.5]], [[0.5, 39.5], [0.5, 0.5]]]), (n_envs, 1, 1, 1))
    side = int(np.ceil(np.sqrt(n_agents)))
    grid = np.stack(np.meshgrid(np.arange(side), np.arange(side)), -1).reshape(-1, 2)[:n_agents]
    p = 17.0 + 0.7 * grid[None] + rng.uniform(-0.05, 0.05, (n_envs, n_agents, 2))
    # ~0.6 m per step, towards the crowd's middle: many contacts
    towards = p.mean(1, keepdims=True) - p
    v = 6.0 * towards / np.linalg.norm(towards, axis=-1, keepdims=True) + rng.normal(0, 2.0, p.shape)
    s, a = scenery_of(walls, n_agents), agents_of(p, v)
    for backend in core.BACKENDS if n_agents <= 8 else ("kernel",):
        moved, progress = core.physics(s, a, fps=FPS, collision=collision, restitution=restitution,
                                       backend=backend)
        v0, v1 = np.asarray(a.velocity, np.float64), np.asarray(moved.velocity, np.float64)
        assert (np.asarray(progress) < 1).sum() > n_envs, backend
        scale = np.abs(v0).sum((-1, -2))[:, None]
        np.testing.assert_allclose(v1.sum(1) / scale, v0.sum(1) / scale, atol=1e-5, err_msg=backend)
        e0, e1 = (v0 ** 2).sum((-1, -2)), (v1 ** 2).sum((-1, -2))
        if collision == "bounce" and restitution == 1.0:
            np.testing.assert_allclose(e1, e0, rtol=1e-5, err_msg=backend)
        else:
            assert np.all(e1 <= e0 * (1 + 1e-5)), backend
