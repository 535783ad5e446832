"""The dynamics of one video in jnp: drawing its random settings, and stepping its symbols.

Coordinates are the frame's pixels, x right and y down, origin at the top-left corner; a
positive angle turns a symbol clockwise on screen; angles are kept unwrapped in the state.

One step (a frame) of every symbol:

- rotation and scale are kinematic: ``angle += angular_velocity``; the scale follows its
  scale function of time; contacts never change them.
- the frame's edges: the hitbox's extents from its centre at the current angle and scale
  give the box the centre may occupy (its bounds). A centre leaving its box while moving
  out is mirrored back in with that velocity component reversed (an elastic bounce at
  the instant the hitbox touches the edge); a hitbox that grows or turns into an edge is
  pushed back inside. A wall contact *begins* at a bounce, or where a hitbox comes within
  ``TOUCH`` pixels of an edge it was not touching; ``hits`` holds the contacts that began
  during the step.
- with ``interacting_symbols``, the step is taken in ``fidelity`` sub-steps (the
  original's physics iterations per frame, 10 by default), moving the symbols with the
  pose (angle and scale) of the frame's end. After each, every pair of hitboxes (convex
  polygons) that overlaps is separated along its minimum translation vector (the
  separating-axis normal of least penetration), each moved half the depth plus
  ``SEPARATION``, and, where approaching along that normal, the two exchange their
  velocity components along it (an elastic collision of equal masses with no rotation,
  as the original's). More rounds of this end each frame, so no two hitboxes overlap in
  any frame (see docs/moving_symbols.md for the jammed exception). With the pose fixed
  within a frame, a pair's separating-axis test is precomputed once per frame
  (:func:`pair_geometry`) and costs O(V) per sub-step.
"""
from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from .bank import Bank

__all__ = ["Video", "SymbolStates", "Dynamics", "scale_at", "transform", "bounds", "overlaps",
           "penetration", "WALL_LABELS", "TOUCH", "SEPARATION"]

WALL_LABELS = ("left", "right", "top", "bottom")
TOUCH = 0.01
"""Pixels: a hitbox nearer an edge than this touches it."""
SEPARATION = 0.01
"""Pixels left between two hitboxes separated after a contact."""
PLACEMENT_TRIES = 64
FINAL_ROUNDS = 2
INIT_ROUNDS = 8  # where no placement try kept the hitboxes apart
SUBSTEP_ROUNDS = 1


@struct.dataclass
class Video:
    """What is drawn once per video."""

    sprite: jax.Array       # (S,) int32, index into the bank's images
    label: jax.Array        # (S,) int32, index into symbol_labels
    background: jax.Array   # () int32, index into the backgrounds, -1 for black
    period: jax.Array       # (S,) float32, frames per scale cycle
    offset: jax.Array       # (S,) float32, the scale function's shift in frames
    scale_const: jax.Array  # (S,) float32, the scale of "constant" symbols
    scale_lo: jax.Array     # (S,) float32
    scale_hi: jax.Array     # (S,) float32


@struct.dataclass
class SymbolStates:
    """Every symbol's state at one frame; stacked over frames and videos by generate."""

    step: jax.Array              # () int32, frame number
    position: jax.Array          # (S, 2) float32, centre (x, y) in pixels, y down
    velocity: jax.Array          # (S, 2) float32, pixels per frame
    angle: jax.Array             # (S,) float32, radians, clockwise on screen, unwrapped
    angular_velocity: jax.Array  # (S,) float32, radians per frame, clockwise
    scale: jax.Array             # (S,) float32
    scale_velocity: jax.Array    # (S,) float32, d scale / d frame
    touching: jax.Array          # (S, 4) bool, hitbox touching the left, right, top, bottom edge
    hits: jax.Array              # (S, 4) bool, a contact with that edge began during the step
    overlaps: jax.Array          # (S, S) bool, hitboxes overlapping (symmetric, False diagonal)


def scale_at(kind: str, video: Video, t):
    """Scale and its derivative per frame at time t (frames) for every symbol: (S,), (S,).

    As the original: sine ``mid + amp sin(2 pi (t - offset) / period)``; triangle the
    triangle wave through ``mid`` at ``t = offset``, rising; constant ``scale_const``.
    """
    lo, hi = video.scale_lo, video.scale_hi
    t = jnp.asarray(t, jnp.float32)
    if kind == "constant":
        return video.scale_const, jnp.zeros_like(video.scale_const)
    mid, amp, p = (lo + hi) / 2, (hi - lo) / 2, video.period
    if kind == "sine":
        phase = 2 * jnp.pi * (t - video.offset) / p
        return mid + amp * jnp.sin(phase), amp * (2 * jnp.pi / p) * jnp.cos(phase)
    x = jnp.mod(t - video.offset + 0.75 * p, p)
    slope = 4 * amp / p
    return mid + slope * (jnp.abs(x - p / 2) - p / 4), slope * jnp.sign(x - p / 2)


def transform(vertices, position, angle, scale):
    """Hitbox vertices placed in the frame: (..., V, 2) from (..., V, 2), (..., 2), (...), (...)."""
    c, s = jnp.cos(angle)[..., None], jnp.sin(angle)[..., None]
    x, y = vertices[..., 0] * scale[..., None], vertices[..., 1] * scale[..., None]
    return jnp.stack([c * x - s * y, s * x + c * y], -1) + position[..., None, :]


def bounds(vertices, angle, scale, size):
    """Where each centre may be for its hitbox to lie in the frame: lo, hi (S, 2)."""
    placed = transform(vertices, jnp.zeros(angle.shape + (2,)), angle, scale)
    return -placed.min(-2), size - placed.max(-2)


def edge_normals(polygons):
    """Unit normals of a convex polygon's edges (..., V, 2), and (..., V) whether each edge
    has a length (padding repeats a vertex, giving empty edges)."""
    e = jnp.roll(polygons, -1, -2) - polygons
    n = jnp.stack([-e[..., 1], e[..., 0]], -1)
    length = jnp.sqrt(n[..., 0] ** 2 + n[..., 1] ** 2)
    valid = length > 1e-9
    return n / jnp.where(valid, length, 1.0)[..., None], valid


def _rotate(v, angle):
    c, s = jnp.cos(angle)[..., None], jnp.sin(angle)[..., None]
    return jnp.stack([c * v[..., 0] - s * v[..., 1], s * v[..., 0] + c * v[..., 1]], -1)


def penetration(a, b, normals_a=None, normals_b=None):
    """Separating-axis test of two convex polygons (V, 2) (padding repeats a vertex).

    Args:
        a, b: the placed polygons.
        normals_a, normals_b: optionally their :func:`edge_normals` (computed if None).

    Returns:
        (depth, normal): depth > 0 where they overlap (the least penetration over the
        edge normals of both), normal (2,) the unit axis along which moving ``b`` by
        ``depth`` (or ``a`` by ``-depth``) separates them.
    """
    na, va = edge_normals(a) if normals_a is None else normals_a
    nb, vb = edge_normals(b) if normals_b is None else normals_b
    axes, valid = jnp.concatenate([na, nb]), jnp.concatenate([va, vb])  # (2V, 2)
    # projections as products and sums (a (V, 2) @ (2, 2V) dot is slow on CPU)
    pa = a[:, None, 0] * axes[None, :, 0] + a[:, None, 1] * axes[None, :, 1]  # (V, 2V)
    pb = b[:, None, 0] * axes[None, :, 0] + b[:, None, 1] * axes[None, :, 1]
    forward = pa.max(0) - pb.min(0)   # b on the + side of a
    backward = pb.max(0) - pa.min(0)  # b on the - side
    overlap = jnp.where(valid, jnp.minimum(forward, backward), jnp.inf)
    k = jnp.argmin(overlap)
    sign = jnp.where(forward[k] <= backward[k], 1.0, -1.0)
    return overlap[k], axes[k] * sign


def overlaps(polygons):
    """(S, S) bool: the pairs of placed hitboxes (S, V, 2) that overlap."""
    S = polygons.shape[0]
    normals = edge_normals(polygons)
    out = jnp.zeros((S, S), bool)
    for i, j in itertools.combinations(range(S), 2):
        depth, _ = penetration(polygons[i], polygons[j], (normals[0][i], normals[1][i]),
                               (normals[0][j], normals[1][j]))
        out = out.at[i, j].set(depth > 0).at[j, i].set(depth > 0)
    return out


@struct.dataclass
class Posed:
    """A video's hitboxes turned and scaled about their centres, with their edge normals
    and their own extents along them: the separating-axis test then projects only the
    other polygon (V x V products per pair instead of V x 2V)."""

    shapes: jax.Array   # (S, V, 2) vertices relative to the centres
    axes: jax.Array     # (S, V, 2) unit edge normals
    valid: jax.Array    # (S, V) bool, edges with a length
    lo: jax.Array       # (S, V) own smallest projection on each normal (relative to the centre)
    hi: jax.Array       # (S, V) own largest


def body_hulls(vertices):
    """(normals (S, V, 2), valid (S, V), lo (S, V), hi (S, V)) of unturned, unscaled hulls."""
    normals, valid = edge_normals(vertices)
    proj = jnp.einsum("svd,swd->svw", normals, vertices)  # normal v, vertex w
    return normals, valid, proj.min(-1), proj.max(-1)


def posed(vertices, body, angle, scale) -> Posed:
    normals, valid, lo, hi = body
    shapes = transform(vertices, jnp.zeros(angle.shape + (2,)), angle, scale)
    s = scale[:, None]
    return Posed(shapes=shapes, axes=_rotate(normals, angle), valid=valid, lo=lo * s, hi=hi * s)


def _project(points, axes):
    """(min, max) over points (P, 2) of their projections on axes (A, 2): (A,), (A,)."""
    p = points[:, None, 0] * axes[None, :, 0] + points[:, None, 1] * axes[None, :, 1]
    return p.min(0), p.max(0)


def posed_penetration(p: Posed, i: int, j: int, pos_i, pos_j):
    """:func:`penetration` of hitboxes i and j of ``p`` centred at pos_i and pos_j."""
    ai, aj = p.axes[i], p.axes[j]
    off_i = ai[:, 0] * pos_i[0] + ai[:, 1] * pos_i[1]
    off_j = aj[:, 0] * pos_j[0] + aj[:, 1] * pos_j[1]
    bmin, bmax = _project(p.shapes[j] + pos_j, ai)  # j on i's normals
    amin, amax = _project(p.shapes[i] + pos_i, aj)  # i on j's normals
    forward = jnp.concatenate([p.hi[i] + off_i - bmin, amax - (p.lo[j] + off_j)])
    backward = jnp.concatenate([bmax - (p.lo[i] + off_i), p.hi[j] + off_j - amin])
    valid = jnp.concatenate([p.valid[i], p.valid[j]])
    axes = jnp.concatenate([ai, aj])
    overlap = jnp.where(valid, jnp.minimum(forward, backward), jnp.inf)
    k = jnp.argmin(overlap)
    sign = jnp.where(forward[k] <= backward[k], 1.0, -1.0)
    return overlap[k], axes[k] * sign


def pair_geometry(p: Posed, i: int, j: int):
    """The separating-axis test of hitboxes i and j as a function of d = pos_j - pos_i.

    With the poses fixed, each polygon's extent along any axis only shifts with its
    centre, so the overlap along axis a is ``min(f - d.a, b + d.a)`` with f and b
    computed once: each test after that is O(V) instead of O(V^2).

    Returns:
        (axes (2V, 2), valid (2V,), f (2V,), b (2V,)).
    """
    ai, aj = p.axes[i], p.axes[j]
    bmin, bmax = _project(p.shapes[j], ai)  # j on i's normals, relative to the centres
    amin, amax = _project(p.shapes[i], aj)  # i on j's normals
    f = jnp.concatenate([p.hi[i] - bmin, amax - p.lo[j]])
    b = jnp.concatenate([bmax - p.lo[i], p.hi[j] - amin])
    return jnp.concatenate([ai, aj]), jnp.concatenate([p.valid[i], p.valid[j]]), f, b


def pair_penetration(geometry, d):
    """(depth, normal) as :func:`penetration`, from :func:`pair_geometry` and d (2,)."""
    axes, valid, f, b = geometry
    along = axes[:, 0] * d[0] + axes[:, 1] * d[1]
    forward, backward = f - along, b + along
    overlap = jnp.where(valid, jnp.minimum(forward, backward), jnp.inf)
    k = jnp.argmin(overlap)
    sign = jnp.where(forward[k] <= backward[k], 1.0, -1.0)
    return overlap[k], axes[k] * sign


def _edges(position, lo, hi):
    """(S, 4) distances of each hitbox to the left, right, top and bottom edges."""
    return jnp.stack([position[:, 0] - lo[:, 0], hi[:, 0] - position[:, 0],
                      position[:, 1] - lo[:, 1], hi[:, 1] - position[:, 1]], -1)


class Dynamics:
    """The pure functions of one video, closed over the static parameters.

    Hashable by those parameters, so instances with equal ones share compiled code.
    """

    def __init__(self, p: dict, ranges: dict[str, np.ndarray], fidelity: int, draw_backend: str):
        self.S = int(p["num_symbols"])
        self.W, self.H = (int(v) for v in p["video_size"])
        self.interacting = bool(p["interacting_symbols"])
        self.kind = p["scale_function_type"]
        self.rotate_at_start = bool(p["rotate_at_start"])
        self.rescale_at_start = bool(p["rescale_at_start"])
        self.lateral = bool(p["lateral_motion_at_start"])
        self.color = bool(p["color_output"])
        self.fidelity = int(fidelity)
        self.draw_backend = draw_backend
        self._ranges = {k: np.asarray(v, np.float32) for k, v in ranges.items()}
        self._config = (self.S, self.W, self.H, self.interacting, self.kind, self.rotate_at_start,
                        self.rescale_at_start, self.lateral, self.color, self.fidelity, draw_backend,
                        tuple((k, v.shape, v.tobytes()) for k, v in sorted(self._ranges.items())))
        self._hash = hash(self._config)

    def __hash__(self):
        return self._hash

    def __eq__(self, other):
        return isinstance(other, Dynamics) and self._config == other._config

    @property
    def size(self):
        return jnp.array([self.W, self.H], jnp.float32)

    # -- a video's random settings and first state ------------------------------------
    def init(self, bank: Bank, key) -> tuple[Video, SymbolStates]:
        S = self.S
        names = ("label", "image", "scale_pick", "period_pick", "rotation_pick", "speed_pick",
                 "scale_u", "period_u", "rotation_u", "speed_u", "sign", "phase", "shift", "angle",
                 "dir_x", "dir_y")
        # one draw of every uniform number the video needs (each jax.random call compiles
        # its own threefry)
        n = len(names) * S
        u = jax.random.uniform(key, (n + 2 + PLACEMENT_TRIES * S * 2,))
        k = {name: u[i * S:(i + 1) * S] for i, name in enumerate(names)}
        u_bg, u_place = u[n:n + 2], u[n + 2:].reshape(PLACEMENT_TRIES, S, 2)

        def pick(u_idx, u_val, table):
            r = jnp.asarray(self._ranges[table])
            i = jnp.minimum(jnp.floor(u_idx * r.shape[0]).astype(jnp.int32), r.shape[0] - 1)
            lo, hi = r[i, 0], r[i, 1]
            return lo + (hi - lo) * u_val, lo, hi

        n_labels = bank.label_starts.shape[0]
        label = jnp.minimum(jnp.floor(k["label"] * n_labels).astype(jnp.int32), n_labels - 1)
        within = jnp.floor(k["image"] * bank.label_counts[label]).astype(jnp.int32)
        sprite = bank.label_starts[label] + jnp.minimum(within, bank.label_counts[label] - 1)
        n_bg = bank.bg_label_starts.shape[0]
        if n_bg:
            bg_label = jnp.minimum(jnp.floor(u_bg[0] * n_bg).astype(jnp.int32), n_bg - 1)
            bg_within = jnp.floor(u_bg[1] * bank.bg_label_counts[bg_label]).astype(jnp.int32)
            background = bank.bg_label_starts[bg_label] + jnp.minimum(bg_within, bank.bg_label_counts[bg_label] - 1)
        else:
            background = jnp.int32(-1)

        scale_const, lo, hi = pick(k["scale_pick"], k["scale_u"], "scale_limits")
        period, _, _ = pick(k["period_pick"], k["period_u"], "scale_period_limits")
        offset = (k["phase"] * period if self.rescale_at_start else jnp.zeros(S))
        offset = offset + jnp.where(k["shift"] < 0.5, period / 2, 0.0)
        video = Video(sprite=sprite, label=label, background=background, period=period, offset=offset,
                      scale_const=scale_const, scale_lo=lo, scale_hi=hi)

        # the original's angles turn counter-clockwise on screen: ours are their negatives
        angle = -2 * jnp.pi * k["angle"] if self.rotate_at_start else jnp.zeros(S)
        speed_ccw, _, _ = pick(k["rotation_pick"], k["rotation_u"], "rotation_speed_limits")
        angular_velocity = -speed_ccw * jnp.where(k["sign"] < 0.5, 1.0, -1.0)
        # direction: a uniform point of the square [-1, 1]^2, normalised (y up, as drawn)
        d = jnp.stack([2 * k["dir_x"] - 1, 2 * k["dir_y"] - 1], -1)
        if self.lateral:
            deg = jnp.degrees(jnp.arctan2(d[:, 1], d[:, 0]))
            d = jnp.where(((deg >= -135) & (deg < -45))[:, None], jnp.array([0.0, -1.0]),
                jnp.where(((deg >= -45) & (deg < 45))[:, None], jnp.array([1.0, 0.0]),
                jnp.where(((deg >= 45) & (deg < 135))[:, None], jnp.array([0.0, 1.0]),
                          jnp.array([-1.0, 0.0]))))
        d = d / jnp.maximum(jnp.linalg.norm(d, axis=-1, keepdims=True), 1e-12)
        speed, _, _ = pick(k["speed_pick"], k["speed_u"], "position_speed_limits")
        velocity = speed[:, None] * d * jnp.array([1.0, -1.0])
        scale, scale_velocity = scale_at(self.kind, video, 0.0)

        vertices = bank.vertices[sprite]
        blo, bhi = bounds(vertices, angle, scale, self.size)
        # as the original: uniform at least one margin (half the image's diagonal at the
        # largest scale, plus a pixel) from every edge; then into the hitbox's bounds
        margin = (bank.half_diagonals[sprite] * hi)[:, None] + 1
        tries = margin + (self.size - 2 * margin) * u_place  # (tries, S, 2)
        tries = jnp.clip(tries, blo, bhi)
        if self.interacting and S > 1:
            # each symbol in turn: the first try whose hitbox overlaps no placed one
            chosen = []
            for i in range(S):
                cand = transform(vertices[i], tries[:, i], angle[i], scale[i])  # (tries, V, 2)
                ok = jnp.ones(PLACEMENT_TRIES, bool)
                for j, pj in enumerate(chosen):
                    placed = transform(vertices[j], pj, angle[j], scale[j])
                    depth = jax.vmap(lambda c: penetration(c, placed)[0])(cand)
                    ok = ok & (depth <= 0)
                chosen.append(tries[jnp.where(jnp.any(ok), jnp.argmax(ok), PLACEMENT_TRIES - 1), i])
            position = jnp.stack(chosen)
            pairs, _, _ = self._pairs(vertices, angle, scale)
            position, velocity = self._separate(position, velocity, pairs, blo, bhi, INIT_ROUNDS)
        else:
            position = tries[0]
        touching = _edges(position, blo, bhi) < TOUCH
        state = SymbolStates(step=jnp.int32(0), position=position, velocity=velocity, angle=angle,
                             angular_velocity=angular_velocity, scale=scale, scale_velocity=scale_velocity,
                             touching=touching, hits=jnp.zeros_like(touching),
                             overlaps=overlaps(transform(vertices, position, angle, scale)))
        return video, jax.tree_util.tree_map(jnp.asarray, state)

    # -- contacts ----------------------------------------------------------------------
    def _separate(self, position, velocity, pairs: dict, lo, hi, rounds: int):
        """Separates overlapping hitbox pairs and bounces approaching ones; see the module doc.

        Args:
            pairs: (i, j) -> :func:`pair_geometry` of the hitboxes' current poses.
            lo, hi: (S, 2) the bounds of the centres (the frame's edges).
        """
        for _ in range(rounds):
            for (i, j), geometry in pairs.items():
                depth, n = pair_penetration(geometry, position[j] - position[i])
                hit = depth > 0
                push = jnp.where(hit, depth / 2 + SEPARATION, 0.0) * n
                position = position.at[i].add(-push).at[j].add(push)
                rel = ((velocity[j] - velocity[i]) * n).sum()
                dv = jnp.where(hit & (rel < 0), rel, 0.0) * n
                velocity = velocity.at[i].add(dv).at[j].add(-dv)
            position = jnp.clip(position, lo, hi)
        return position, velocity

    def _pairs(self, vertices, angle, scale) -> tuple[dict, jax.Array, jax.Array]:
        """(pair geometries, lo, hi) of the hitboxes at one pose."""
        p = posed(vertices, body_hulls(vertices), angle, scale)
        pairs = {(i, j): pair_geometry(p, i, j) for i, j in itertools.combinations(range(self.S), 2)}
        return pairs, -p.shapes.min(-2), self.size - p.shapes.max(-2)

    # -- one frame to the next ---------------------------------------------------------
    def step(self, bank: Bank, video: Video, state: SymbolStates) -> SymbolStates:
        """The next frame's state. Sub-steps move the symbols with the pose (angle and
        scale) of the frame's end, which is where the frame's contacts are resolved."""
        K = self.fidelity if self.interacting and self.S > 1 else 1
        vertices = bank.vertices[video.sprite]
        t = state.step + 1
        angle = state.angle + state.angular_velocity
        scale, scale_velocity = scale_at(self.kind, video, t)
        pairs, lo, hi = self._pairs(vertices, angle, scale)

        def sub(carry, _):
            position, velocity, touching, hits = carry
            position = position + velocity / K
            out_lo = (position < lo) & (velocity < 0)
            out_hi = (position > hi) & (velocity > 0)
            position = jnp.where(out_lo, 2 * lo - position, jnp.where(out_hi, 2 * hi - position, position))
            velocity = jnp.where(out_lo | out_hi, -velocity, velocity)
            position = jnp.clip(position, lo, hi)
            if K > 1:
                position, velocity = self._separate(position, velocity, pairs, lo, hi, SUBSTEP_ROUNDS)
            bounced = jnp.stack([out_lo[:, 0], out_hi[:, 0], out_lo[:, 1], out_hi[:, 1]], -1)
            now = _edges(position, lo, hi) < TOUCH
            hits = hits | ((bounced | now) & ~touching)
            return (position, velocity, now, hits), None

        carry = (state.position, state.velocity, state.touching, jnp.zeros_like(state.hits))
        if K == 1:
            carry, _ = sub(carry, None)
        else:
            carry, _ = jax.lax.scan(sub, carry, None, length=K)
        position, velocity, touching, hits = carry
        if self.interacting and self.S > 1:
            position, velocity = self._separate(position, velocity, pairs, lo, hi, FINAL_ROUNDS)
        ov = jnp.zeros((self.S, self.S), bool)
        for (i, j), geometry in pairs.items():
            depth, _ = pair_penetration(geometry, position[j] - position[i])
            ov = ov.at[i, j].set(depth > 0).at[j, i].set(depth > 0)
        return SymbolStates(step=t, position=position, velocity=velocity, angle=angle,
                            angular_velocity=state.angular_velocity, scale=scale,
                            scale_velocity=scale_velocity, touching=touching, hits=hits, overlaps=ov)

    def states(self, bank: Bank, key, n_frames: int):
        """(Video, SymbolStates stacked over n_frames frames) of the video of ``key``."""
        video, s0 = self.init(bank, key)
        return (video,) + self.more_states(bank, video, s0, n_frames - 1, include_first=True)

    def more_states(self, bank: Bank, video: Video, state: SymbolStates, n: int, include_first: bool = False):
        """The next n states after ``state`` (with ``state`` first where include_first)."""
        def body(s, _):
            s1 = self.step(bank, video, s)
            return s1, s1

        _, rest = jax.lax.scan(body, state, None, length=n)
        if include_first:
            rest = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a[None], b]), state, rest)
        return (rest,)
