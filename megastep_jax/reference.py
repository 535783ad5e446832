"""The kernels in plain jax.numpy: the specification in code.

Same signatures and outputs as :mod:`megastep_jax.kernels`, and the same maths as
``csrc/megastep.h``, operation for operation, so the two agree to float rounding. Every
kernel test compares against these; users without a compiler can select them with
``backend="reference"`` in :mod:`megastep_jax.core`.

Loops over lines are ``lax.scan``s that mirror the kernels' sequential rules (the nearer
of two coincident lines must be nearer by 1e-4 to replace the first one found).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from .state import Agents, Render, Scenery

AMBIENT = 0.1
LUMINANCE = 2.0
SHADOW_REACH = 0.999
SHADOW_PARALLEL = 1e-4
SHADOW_FROM = float(np.float32(1) - np.float32(SHADOW_REACH))  # as the kernel computes it in float32
PARALLEL = 1e-3
TIE_BREAK = 1e-4
DOT_EPS = 1e-6
FILTER_EPS = 1e-3
CONTACT_SCALE = 1.001
BACKOFF = 0.99
APPROACH = 1e-5  # slide, bounce: a contact counts where the motion heads into it by more than this x |m|
MODEL_LINES = 8
MAX_CONTACTS = 8  # contacts per agent per step under slide and bounce (csrc: kMaxContacts)
GRID_PAD = 1e-3  # a wall is listed in every grid cell it comes within this many cells of
GRID_MIN_LINES = 256  # traversal "auto" takes the grid from this many static lines up
COLLISIONS = {"stop": 0, "slide": 1, "bounce": 2}

__all__ = ["render", "physics", "physics_trace", "bake", "seen"]


def _cross(a, b):
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def _dot(a, b):
    return a[..., 0] * b[..., 0] + a[..., 1] * b[..., 1]


def _norm(a):
    return jnp.sqrt(_dot(a, a))


def _unit(v):
    n = _norm(v)
    safe = jnp.where(n > 0, n, 1.0)
    return jnp.where((n > 0)[..., None], (1.0 / safe)[..., None] * v, 0.0)


def draw_agents(model, positions, angles):
    """Places the model at every agent's pose.

    Args:
        model: (8, 2, 2) model lines in the agent frame.
        positions: (..., A, 2).
        angles: (..., A) degrees.

    Returns:
        (..., A*8, 2, 2) lines.
    """
    rad = angles * (jnp.pi / 180.0)
    c, s = jnp.cos(rad)[..., None, None], jnp.sin(rad)[..., None, None]
    x, y = model[..., 0], model[..., 1]
    px, py = positions[..., 0][..., None, None], positions[..., 1][..., None, None]
    drawn = jnp.stack([c * x - s * y + px, s * x + c * y + py], -1)
    return drawn.reshape(*drawn.shape[:-4], -1, 2, 2)


def _intensity(points, lines, first_static, n_lines, lights, n_lights):
    """Lighting at points: ambient + unobstructed lights, capped at 1.

    Args:
        points: (P, 2) for one env.
        lines: (L, 2, 2); lines [first_static, n_lines) cast shadows.
        lights: (NL, 3); the first n_lights are real.

    Returns:
        (P,) intensities.
    """
    light_xy = lights[:, :2]  # (NL, 2)
    v = points[:, None, :] - light_xy[None]  # (P, NL, 2): light -> point
    w0 = -light_xy  # a - light, with a added per line

    def body(blocked, j):
        a, b = lines[j, 0], lines[j, 1]
        d = b - a
        w = a + w0  # (NL, 2)
        denom = _cross(v, d)
        s = _cross(w[None], d) / denom
        t = _cross(w[None], v) / denom
        # nearly parallel: no shadow (the fractions would be rounding noise)
        crossing = jnp.abs(denom) > SHADOW_PARALLEL * (_norm(v) * _norm(d))
        hit = crossing & (t > 0) & (t < 1) & (s > SHADOW_FROM) & (s < SHADOW_REACH)
        real = (j >= first_static) & (j < n_lines)
        return blocked | (hit & real), None

    blocked0 = jnp.zeros(v.shape[:2], bool)
    blocked, _ = jax.lax.scan(body, blocked0, jnp.arange(lines.shape[0]))
    r = light_xy[None] - points[:, None, :]
    contrib = LUMINANCE * lights[None, :, 2] / jnp.maximum(_dot(r, r), 1.0)
    real_light = jnp.arange(lights.shape[0]) < n_lights
    contrib = jnp.where(~blocked & real_light[None], contrib, 0.0)
    return jnp.minimum(AMBIENT + jnp.sum(contrib, -1), 1.0)


def _texture_filter(t, w):
    wf = w.astype(jnp.float32)
    y = jnp.minimum(t * (wf + 1), wf - 1)
    left = jnp.maximum(y - 1, 0.0).astype(jnp.int32)
    right = jnp.minimum(y, wf - 1).astype(jnp.int32)
    dl = jnp.abs(y - (left + 1).astype(jnp.float32)) + FILTER_EPS
    dr = jnp.abs(y - (right + 1).astype(jnp.float32)) + FILTER_EPS
    hi = jnp.maximum(w - 1, 0)
    return jnp.clip(left, 0, hi), jnp.clip(right, 0, hi), dr / (dl + dr), dl / (dl + dr)


def _cast_env(lines, n_lines, positions, u, near):
    """Nearest hit of every ray of one env: (A, R) index, s and t."""
    p = positions[:, None, :]

    def body(best, j):
        best_s, best_i, best_t = best
        a, b = lines[j, 0], lines[j, 1]
        d = b - a
        w = a - p
        denom = _cross(u, d)
        s = _cross(w, d) / denom
        t = _cross(w, u) / denom
        hit = ((jnp.abs(denom) >= PARALLEL) & (t >= 0) & (t <= 1) & (s > near)
               & (s < best_s - TIE_BREAK) & (j < n_lines))
        return (jnp.where(hit, s, best_s), jnp.where(hit, j, best_i), jnp.where(hit, t, best_t)), None

    shape = u.shape[:-1]
    init = (jnp.full(shape, jnp.inf, jnp.float32), jnp.full(shape, -1, jnp.int32),
            jnp.zeros(shape, jnp.float32))
    (s, i, t), _ = jax.lax.scan(body, init, jnp.arange(lines.shape[0]))
    return i, s, t


@functools.partial(jax.jit, static_argnums=(2,))
def render(scenery: Scenery, agents: Agents, res: int, fov, radius) -> Render:
    """Renders every agent's view; see :func:`megastep_jax.core.render`."""
    A = agents.angles.shape[-1]
    n_agent_lines = A * MODEL_LINES
    drawn = draw_agents(scenery.model, agents.positions, agents.angles)
    lines = scenery.lines.at[:, :n_agent_lines].set(drawn)
    n_lines = jnp.clip(scenery.n_lines, n_agent_lines, lines.shape[1])
    fov = jnp.asarray(fov, jnp.float32)
    radius = jnp.asarray(radius, jnp.float32)

    R = res
    tan_half = jnp.tan(fov * (jnp.pi / 360.0))
    slope = (R - 2 * jnp.arange(R, dtype=jnp.float32) - 1) / jnp.float32(R) * tan_half  # (R,)
    rad = agents.angles * (jnp.pi / 180.0)
    c, sn = jnp.cos(rad)[..., None], jnp.sin(rad)[..., None]
    u = jnp.stack([c - sn * slope, sn + c * slope], -1)  # (E, A, R, 2)
    ulen = _norm(u)
    near = radius / ulen

    idx, s, t = jax.vmap(_cast_env)(lines, n_lines, agents.positions, u, near)
    hit = idx >= 0
    j = jnp.maximum(idx, 0)
    line = jnp.take_along_axis(lines, j.reshape(j.shape[0], -1)[..., None, None], 1).reshape(*j.shape, 2, 2)
    d = line[..., 1, :] - line[..., 0, :]
    dots = _dot(u, d) / (ulen * _norm(d) + DOT_EPS)
    distances = s * ulen

    take = lambda x: jnp.take_along_axis(x, j.reshape(j.shape[0], -1), 1).reshape(j.shape)
    w, start = take(scenery.texel_widths), take(scenery.texel_starts)
    T = scenery.textures.shape[1]
    textured = hit & (w >= 1) & (start >= 0) & (start <= T - w)
    left, right, wl, wr = _texture_filter(t, w)
    li = jnp.clip(start + left, 0, T - 1)
    ri = jnp.clip(start + right, 0, T - 1)
    gather = lambda x, i: jnp.take_along_axis(x, i.reshape(i.shape[0], -1), 1).reshape(i.shape)
    static_light = wl * gather(scenery.baked, li) + wr * gather(scenery.baked, ri)

    on_agent = hit & (idx < n_agent_lines)
    hit_points = line[..., 0, :] + t[..., None] * d

    def dynamic(_):
        flat = hit_points.reshape(hit_points.shape[0], -1, 2)
        out = jax.vmap(lambda pts, ls, nl, lt, nlt: _intensity(pts, ls, n_agent_lines, nl, lt, nlt))(
            flat, lines, n_lines, scenery.lights, scenery.n_lights)
        return out.reshape(t.shape)

    # Agent texels are lit per hit; skip that work when no pixel sees an agent.
    agent_light = jax.lax.cond(jnp.any(on_agent), dynamic, lambda _: jnp.zeros_like(t), None)
    light = jnp.where(on_agent, agent_light, static_light)
    shade = (1.0 - dots * dots) * light
    tex = lambda i: jnp.take_along_axis(
        scenery.textures, i.reshape(i.shape[0], -1)[..., None], 1).reshape(*i.shape, 3)
    rgb = shade[..., None] * (wl[..., None] * tex(li) + wr[..., None] * tex(ri))

    valid = (fov > 0) & (fov < 180) & (radius >= 0)
    nan = jnp.float32(jnp.nan)
    screen = jnp.where(textured[..., None], rgb, 0.0)
    return Render(
        indices=jnp.where(valid, idx, -1).astype(jnp.int32),
        locations=jnp.where(valid, jnp.where(hit, t, 0.0), nan),
        dots=jnp.where(valid, jnp.where(hit, dots, 0.0), nan),
        distances=jnp.where(valid, jnp.where(hit, distances, jnp.inf), nan),
        screen=jnp.where(valid, screen, nan),
    )


@jax.jit
def bake(scenery: Scenery) -> Scenery:
    """Fills ``baked`` with the lighting of every static texel; see core.bake."""
    n_agent_lines = scenery.n_agents * MODEL_LINES

    def one(lines, n_lines, lights, n_lights, starts, widths):
        L, T = lines.shape[0], scenery.textures.shape[1]
        n_lines = jnp.clip(n_lines, n_agent_lines, L)
        k = jnp.arange(T)
        j = jnp.arange(L)
        ok = (j >= n_agent_lines) & (j < n_lines) & (widths >= 1) & (starts >= 0) & (starts <= T - widths)
        owns = ok[None] & (k[:, None] >= starts[None]) & (k[:, None] < (starts + widths)[None])  # (T, L)
        owned = jnp.any(owns, 1)
        owner = jnp.argmax(owns, 1)
        a, b = lines[owner, 0], lines[owner, 1]
        f = ((k - starts[owner]).astype(jnp.float32) + 0.5) / widths[owner].astype(jnp.float32)
        centres = a + f[:, None] * (b - a)
        lit = _intensity(centres, lines, n_agent_lines, n_lines, lights, n_lights)
        return jnp.where(owned, lit, 1.0)

    baked = jax.vmap(one)(scenery.lines, scenery.n_lines, scenery.lights, scenery.n_lights,
                          scenery.texel_starts, scenery.texel_widths)
    return scenery.replace(baked=baked.astype(jnp.float32))


def _sensibilise(p):
    return jnp.where(jnp.isnan(p), 0.0, jnp.clip(BACKOFF * p, 0.0, 1.0))


def _approach(p, m, q, r):
    """Progress at which p + x*m first comes within r of q; inf if it never does."""
    mm = _dot(m, m)
    s = _dot(q - p, m) / mm
    off = p + s[..., None] * m - q
    d2 = _dot(off, off)
    cand = s - jnp.sqrt(r * r - d2) / jnp.sqrt(mm)
    return jnp.where((s > 0) & (d2 < r * r), cand, jnp.inf)


def _clip01(x):
    return jnp.minimum(jnp.maximum(x, 0.0), 1.0)


def _wall_contact(lines, static, p, m, radius, approaching):
    """Earliest wall contact of discs at p (A, 2) moving by m (A, 2): as ``wall_contact``.

    Returns:
        (progress (A,), sensibilised, 1 for none; normal (A, 2) towards the disc).
    """
    A, L = p.shape[0], lines.shape[0]
    r = CONTACT_SCALE * radius
    a, b = lines[None, :, 0], lines[None, :, 1]  # (1, L, 2)
    d = b - a
    dd = _dot(d, d)
    dlen = jnp.sqrt(dd)
    P = p[:, None, :]
    M = m[:, None, :]
    dp = jnp.abs(_cross(P - a, d)) / dlen
    n = _unit(jnp.stack([-d[..., 1], d[..., 0]], -1))
    n = jnp.broadcast_to(n, (A, L, 2))
    n = jnp.where((_dot(P - a, n) < 0)[..., None], -1.0 * n, n)

    denom = _cross(M, d)
    s = _cross(a - P, d) / denom
    t = _cross(a - P, M) / denom
    xs = (1 - r / dp) * s
    ts = _dot(P + jnp.maximum(xs, 0.0)[..., None] * M - a, d) / dd  # foot where it meets the line
    crossing = jnp.where((s > 0) & (s < 1) & (t > 0) & (t < 1) & (ts >= 0) & (ts <= 1), xs, jnp.inf)

    moving = (_norm(m) > 0)[:, None]
    end_a = jnp.where(moving, _approach(P, M, a, r), jnp.inf)
    end_b = jnp.where(moving, _approach(P, M, b, r), jnp.inf)
    normal_a = _unit(P + _clip01(end_a)[..., None] * M - a)
    normal_b = _unit(P + _clip01(end_b)[..., None] * M - b)

    Q = P + M
    tq = _dot(Q - a, d) / dd
    foot = a + tq[..., None] * d
    dq = _norm(Q - foot)
    xq = (dp - r) / (dp - dq)
    tx = _dot(P + jnp.maximum(xq, 0.0)[..., None] * M - a, d) / dd
    side = jnp.where((tq > 0) & (tq < 1) & (dq < r) & (tx >= 0) & (tx <= 1), xq, jnp.inf)

    # Entering the band within r of the line where the segment is alongside (the crossing
    # and side rules test only the feet of the crossing and end points). Moving towards
    # the line from within the band gives a candidate <= 0.
    sq = _dot(Q - a, n)
    xc = (dp - r) / (dp - sq)
    tc = _dot(P + jnp.maximum(xc, 0.0)[..., None] * M - a, d) / dd
    band = jnp.where((sq < r) & (sq < dp) & (tc >= 0) & (tc <= 1), xc, jnp.inf)

    raw = jnp.stack([crossing, end_a, end_b, side, band], -1)  # (A, L, 5)
    raw = jnp.where(static[None, :, None], raw, jnp.inf)
    normals = jnp.stack([n, normal_a, normal_b, n, n], -2)  # (A, L, 5, 2)
    cand = jnp.where(raw == jnp.inf, 1.0, _sensibilise(raw))
    if approaching:
        into = -np.float32(APPROACH) * jnp.sqrt(_dot(M, M))[:, :, None]
        cand = jnp.where(_dot(M[:, :, None, :], normals) < into, cand, 1.0)
    cand = jnp.concatenate([jnp.ones((A, 1)), cand.reshape(A, -1)], 1)
    normals = jnp.concatenate([jnp.zeros((A, 1, 2)), normals.reshape(A, -1, 2)], 1)
    first = jnp.argmin(cand, 1)
    return (jnp.take_along_axis(cand, first[:, None], 1)[:, 0],
            jnp.take_along_axis(normals, first[:, None, None], 1)[:, 0])


def _physics_env(lines, n_lines, positions, velocity, angles, angvelocity, fps, radius,
                 restitution, collision, record=False):
    """One env's step as the kernel's ``physics_env``: contact events in time order.

    State: each agent's segment start p0 (A, 2) and time t0, velocity v, contacts so far
    and first-event time. Each round finds the earliest event (wall events, then pair
    events i < j, scanned row by row as the kernel; ties go to the first) and resolves it;
    at most A * MAX_CONTACTS + 1 rounds. With ``record``, also returns the state after
    every event (see :func:`physics_trace`).
    """
    A = angles.shape[0]
    L = lines.shape[0]
    n_agent_lines = A * MODEL_LINES
    n_lines = jnp.clip(n_lines, n_agent_lines, L)
    static = (jnp.arange(L) >= n_agent_lines) & (jnp.arange(L) < n_lines)
    approaching = collision != 0
    r2 = CONTACT_SCALE * 2.0 * radius
    k = (1.0 + restitution) if collision == 2 else 1.0
    upper = jnp.arange(A)[:, None] < jnp.arange(A)[None, :]

    def motion(v, contacts):
        return jnp.where((contacts < MAX_CONTACTS)[:, None], v / fps, 0.0)

    def events(state):
        p0, v, t0, contacts, first = state
        live = contacts < MAX_CONTACTS
        m = motion(v, contacts)
        rest = 1.0 - t0
        wp, wn = _wall_contact(lines, static, p0, rest[:, None] * m, radius, approaching)
        wtime = jnp.where(live & (wp < 1), t0 + wp * rest, jnp.inf)
        tp = jnp.maximum(t0[:, None], t0[None, :])
        pi = p0[:, None, :] + (tp - t0[:, None])[..., None] * m[:, None, :]
        pj = p0[None, :, :] + (tp - t0[None, :])[..., None] * m[None, :, :]
        restp = 1.0 - tp
        rel = restp[..., None] * (m[:, None, :] - m[None, :, :])
        f = _approach(pi, rel, pj, r2)
        sp = _sensibilise(f)
        ok = upper & (live[:, None] | live[None, :]) & (f != jnp.inf) & (sp < 1)
        if approaching:  # heading into the other by more than APPROACH (as pair_event)
            gap = pj - pi
            ok = ok & (_dot(gap, rel) > np.float32(APPROACH) * jnp.sqrt(_dot(rel, rel))
                       * jnp.sqrt(_dot(gap, gap)))
        ptime = jnp.where(ok, tp + sp * restp, jnp.inf)
        pn = _unit(pi + _clip01(f)[..., None] * rel - pj)
        times = jnp.concatenate([wtime[:, None], ptime], 1).reshape(-1)  # row i: wall, pairs
        normals = jnp.concatenate([wn[:, None], pn], 1).reshape(-1, 2)
        best = jnp.argmin(times)
        i, col = best // (A + 1), best % (A + 1)
        return times[best], normals[best], i, col - 1  # j = -1: a wall

    def resolve_one(v, contacts, first, idx, n, time):
        first = first.at[idx].min(time)
        if collision == 0:
            return v.at[idx].set(0.0), contacts.at[idx].set(float(MAX_CONTACTS)), first
        vi = v[idx]
        vn = _dot(vi, n)
        return (v.at[idx].set(jnp.where(vn < 0, vi - (k * vn) * n, vi)),
                contacts.at[idx].add(1.0), first)

    def body(carry):
        it, _, state, trace = carry
        p0, v, t0, contacts, first = state
        time, n, i, j = events(state)
        found = time < jnp.inf
        pair = j >= 0
        jj = jnp.maximum(j, 0)
        live = contacts < MAX_CONTACTS
        li, lj = live[i], pair & live[jj]
        m = motion(v, contacts)

        def restart(p0, t0, idx):
            return p0.at[idx].set(p0[idx] + (time - t0[idx]) * m[idx]), t0.at[idx].set(time)

        p0n, t0n = restart(p0, t0, i)
        p0p, t0p = restart(p0n, t0n, jj)
        p0n = jnp.where(pair, p0p, p0n)
        t0n = jnp.where(pair, t0p, t0n)

        vw, cw, fw = va, ca, fa = resolve_one(v, contacts, first, i, n, time)  # i alone (a wall, a resting j)
        vb, cb, fb = resolve_one(v, contacts, first, jj, -1.0 * n, time) # j alone (a resting i)
        if collision == 0:  # the one heading faster into the other stops
            si = -_dot(m[i], n) >= _dot(m[jj], n)
            vc, cc, fc = (jnp.where(si, x, y) for x, y in zip((va, ca, fa), (vb, cb, fb)))
        else:
            vi, vj = v[i], v[jj]
            vn = _dot(vi - vj, n)
            impulse = (0.5 * k * vn) * n
            vc = v.at[i].set(jnp.where(vn < 0, vi - impulse, vi))
            vc = vc.at[jj].set(jnp.where(vn < 0, vj + impulse, vj))
            cc = contacts.at[i].add(1.0).at[jj].add(1.0)
            fc = first.at[i].min(time).at[jj].min(time)
        if collision != 0:  # meeting an agent at rest past its bound: rest too, velocity kept
            kk = jnp.where(li, i, jj)
            va = vb = v
            ca = cb = contacts.at[kk].set(float(MAX_CONTACTS))
            fa = fb = first.at[kk].min(time)
        wall_i = ~pair
        alone_i = pair & ~lj
        alone_j = pair & lj & ~li
        pick = lambda a, b, c, w: jnp.where(wall_i, w, jnp.where(alone_i, a, jnp.where(alone_j, b, c)))
        vn_, cn, firstn = pick(va, vb, vc, vw), pick(ca, cb, cc, cw), pick(fa, fb, fc, fw)
        new = (p0n, vn_, t0n, cn, firstn)
        state = jax.tree_util.tree_map(lambda a, b: jnp.where(found, a, b), new, state)
        if record:
            at = jnp.where(found, it + 1, n_events + 1)  # past the end: dropped
            trace = (trace[0].at[at].set(time, mode="drop"),
                     *(h.at[at].set(x, mode="drop") for h, x in zip(trace[1:], state[:4])))
        return it + 1, ~found, state, trace

    def cond(carry):
        it, done, _, _ = carry
        return ~done & (it < n_events + 1)

    n_events = A * MAX_CONTACTS
    zeros = jnp.zeros((A,), jnp.float32)
    state = (positions, velocity, zeros, zeros, jnp.ones((A,), jnp.float32))
    trace = ()
    if record:  # event times (+inf where unused) and the state after each, from the start's
        trace = (jnp.full((n_events + 1,), jnp.inf).at[0].set(0.0),
                 *(jnp.zeros((n_events + 1,) + x.shape, x.dtype).at[0].set(x) for x in state[:4]))
    _, _, (p0, v, t0, contacts, x), trace = jax.lax.while_loop(cond, body, (0, False, state, trace))
    new_positions = p0 + (1.0 - t0)[:, None] * motion(v, contacts)
    if collision == 0:
        out = (new_positions, v, _wrap(angles + x * angvelocity / fps),
               jnp.where(x < 1, 0.0, angvelocity), x)
    else:
        out = (new_positions, v, _wrap(angles + angvelocity / fps), angvelocity, x)
    return out + (trace,) if record else out


def _wrap(a):
    w = jnp.fmod(a + 180.0, 360.0)
    w = jnp.where(w < 0, w + 360.0, w)
    return w - 180.0


@functools.partial(jax.jit, static_argnums=(4, 6))
def physics(scenery: Scenery, agents: Agents, fps, radius, collision: str = "stop",
            restitution=1.0, record: bool = False):
    """One physics step of every agent; see :func:`megastep_jax.core.physics`."""
    mode = COLLISIONS[collision]
    fps = jnp.asarray(fps, jnp.float32)
    radius = jnp.asarray(radius, jnp.float32)
    restitution = jnp.asarray(restitution, jnp.float32)
    out = jax.vmap(lambda *xs: _physics_env(*xs, fps, radius, restitution, mode, record))(
        scenery.lines, scenery.n_lines, agents.positions, agents.velocity, agents.angles,
        agents.angvelocity)
    pos, vel, ang, angv, progress = out[:5]
    moved = Agents(angles=ang, positions=pos, angvelocity=angv, velocity=vel)
    if not record:
        return moved, progress
    times, p0, v, t0, contacts = out[5]
    return moved, progress, dict(times=times, p0=p0, velocity=v, t0=t0, contacts=contacts)


def physics_trace(scenery: Scenery, agents: Agents, fps, radius, collision: str = "stop",
                  restitution=1.0):
    """:func:`physics` plus every agent's path within the step, for tests and plots.

    Returns:
        (agents, progress, trace). ``trace`` holds the state after each of up to
        K = A * MAX_CONTACTS contact events, index 0 the step's start: ``times`` (E, K+1),
        the event's time (+inf for unused entries, which hold zeros); and per agent
        ``p0`` (E, K+1, A, 2) and ``t0`` (E, K+1, A), the start of its current segment;
        ``velocity`` (E, K+1, A, 2); ``contacts`` (E, K+1, A). From ``times[k]`` to the
        next event, agent a is at ``p0 + (t - t0) * velocity / fps``, or at ``p0`` once
        its contacts reach MAX_CONTACTS (stop: after its first).
    """
    return physics(scenery, agents, fps, radius, collision, restitution, True)


def _pixel_texel(idx, loc, starts, widths, n_agent_lines, n_bits):
    """csrc's pixel_texel: the wall texel under each pixel, -1 for none (int32, idx's shape)."""
    L = starts.shape[-1]
    j = jnp.clip(idx, 0, L - 1)
    w, start = widths[j], starts[j]
    f = jnp.floor(w.astype(jnp.float32) * loc)
    k = jnp.where(f <= 0, 0, jnp.where(f >= (w - 1).astype(jnp.float32), w - 1,
                                         jnp.where(jnp.isfinite(f), f, 0).astype(jnp.int32)))
    t = start + k
    ok = (idx >= n_agent_lines) & (idx < L) & (w >= 1) & ~jnp.isnan(loc) & (t >= 0) & (t < n_bits)
    return jnp.where(ok, t, -1)


def seen(seen_words, indices, locations, geometry, texel_starts, texel_widths, n_agents: int):
    """Marks the wall texels under rendered pixels in packed masks; see core.mark_seen.

    Args:
        seen_words: int32 (E, W). indices, locations: (E, A, R). geometry: int32 (E,).
        texel_starts, texel_widths: int32 (G, L). n_agents: static int.

    Returns:
        (int32 (E, W) masks, int32 (E,) texels newly marked).
    """
    E, W = seen_words.shape
    G, L = texel_starts.shape
    n_agent_lines = min(n_agents * MODEL_LINES, L)
    shifts = jnp.arange(32, dtype=jnp.uint32)

    def one(words, idx, loc, g):
        valid_g = (g >= 0) & (g < G)
        gg = jnp.clip(g, 0, G - 1)
        t = _pixel_texel(idx.reshape(-1), loc.reshape(-1), texel_starts[gg], texel_widths[gg],
                         n_agent_lines, 32 * W)
        t = jnp.where(valid_g, t, -1)
        ts = jax.lax.sort(t)
        distinct = jnp.concatenate([jnp.ones((1,), bool), ts[1:] != ts[:-1]])
        bits = jax.lax.bitcast_convert_type(words, jnp.uint32)
        safe = jnp.maximum(ts, 0)
        was = (bits[safe >> 5] >> (safe & 31).astype(jnp.uint32)) & 1
        new = jnp.sum(distinct & (ts >= 0) & (was == 0), dtype=jnp.int32)
        marks = jnp.zeros((32 * W,), bool).at[jnp.where(t >= 0, t, 32 * W)].set(True, mode="drop")
        add = jnp.sum(marks.reshape(W, 32).astype(jnp.uint32) << shifts, axis=1, dtype=jnp.uint32)
        return jax.lax.bitcast_convert_type(bits | add, jnp.int32), new

    return jax.vmap(one)(seen_words, indices, locations, geometry)
