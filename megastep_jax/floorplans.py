"""Procedural apartment floorplans: the default geometry source, no download needed.

:func:`generate` builds one plan from a seed (or a ``jax.random`` key):

1. a bounding rectangle 8-20 m a side is cut by recursive binary space partition
   into rectangular cells, split positions snapped to earlier walls so walls line up;
2. one or two cells on the boundary may be dropped, so the outline becomes an L, a U,
   a T or a stepped shape rather than always a rectangle; the rest are the 4-15 rooms;
3. a random spanning tree of the rooms' adjacency graph, plus a few extra edges for
   loops, gets doorways (0.8-1.1 m, sometimes a wide opening) on the shared walls, so
   every room is reachable and the plan has no door to the outside;
4. walls are thick, as in Cubicasa5k: the outline and the room boundaries are buffered
   into a solid (exterior walls thicker than interior ones, with small piers on their
   inner face every few metres), doorways are cut out of it,
   and the outline of what remains gives the wall segments, so every wall has two faces;
5. lights sit at room centroids, masks hold the room ids.

:func:`sample` mirrors :func:`megastep_jax.cubicasa.sample`: the same arguments give the
same plans, and the ``'test'`` split never shares a plan with the ``'training'`` split
(a plan's split is fixed by a hash of its id, whatever the seed).
"""
from __future__ import annotations

import numbers
from typing import Sequence

import jax
import numpy as np
import shapely

from . import geometry as geom, validation
from .arrdict import dotdict

__all__ = ["generate", "sample", "split_of", "MIN_DOOR_WIDTH"]

AGENT_WIDTH = 0.15
"""Metres; matches megastep_jax.core.AGENT_WIDTH (not imported, to keep this module host-only)."""
MIN_DOOR_WIDTH = 3 * AGENT_WIDTH
"""Doorways are never narrower than three agent widths."""
SNAP = 0.4
"""Metres: a new wall this close to an existing parallel wall line is moved onto it."""
GRID = 0.05
"""Metres: split positions are rounded to this grid."""
ID_LIMIT = 2**31
"""Plan ids drawn by :func:`sample` lie in [0, ID_LIMIT)."""
TEST_FRACTION = 10
"""One plan id in TEST_FRACTION (by hash) belongs to the test split."""


# --------------------------------------------------------------------------- seeds and splits


def _mix(x: int) -> int:
    """splitmix64 finaliser: a fixed, well-spread hash of a non-negative int."""
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


def split_of(id: int) -> str:
    """``'test'`` or ``'training'``: the split plan ``id`` belongs to (fixed, about 10% test)."""
    return "test" if _mix(int(id)) % TEST_FRACTION == 0 else "training"


def _seed(key_or_seed) -> int:
    """A non-negative int plan id from an int seed or a ``jax.random`` key."""
    if isinstance(key_or_seed, (numbers.Integral, np.integer)) and not isinstance(key_or_seed, bool):
        if key_or_seed < 0:
            raise ValueError(f"key_or_seed: expected a non-negative int seed, got {key_or_seed}")
        return int(key_or_seed)
    try:
        data = np.asarray(jax.random.key_data(key_or_seed)) if jax.dtypes.issubdtype(
            getattr(key_or_seed, "dtype", None), jax.dtypes.prng_key) else np.asarray(key_or_seed)
    except Exception:  # anything that is not a key
        data = None
    if data is None or data.dtype != np.uint32 or data.ndim != 1:
        raise ValueError(
            f"key_or_seed: expected a non-negative int or a single jax.random key, got {key_or_seed!r}"
        )
    id = 0
    for word in data.tolist():
        id = _mix(id ^ word)
    return id % ID_LIMIT


# --------------------------------------------------------------------------- layout


def _split_leaves(rng, width, height, n_leaves, min_side):
    """Recursive binary space partition of [0, width] x [0, height] into rectangles.

    Returns:
        (L, 4) float array of (x0, y0, x1, y1) per leaf.
    """
    leaves = [(0.0, 0.0, width, height)]
    lines = ([0.0, width], [0.0, height])  # existing wall coordinates along x and along y
    while len(leaves) < n_leaves:
        sizes = np.array([[x1 - x0, y1 - y0] for x0, y0, x1, y1 in leaves])
        splittable = sizes.max(1) >= 2 * min_side
        if not splittable.any():
            break
        areas = np.where(splittable, sizes.prod(1), 0.0)
        # Mostly split the biggest leaf, sometimes another, so room sizes vary.
        i = int(np.argmax(areas)) if rng.random() < 0.7 else int(rng.choice(np.flatnonzero(splittable)))
        x0, y0, x1, y1 = leaves[i]
        w, h = x1 - x0, y1 - y0
        can = [w >= 2 * min_side, h >= 2 * min_side]
        if all(can) and max(w, h) < 1.3 * min(w, h):
            axis = int(rng.integers(2))
        else:
            axis = 0 if (can[0] and (w >= h or not can[1])) else 1
        lo, hi = (x0, x1) if axis == 0 else (y0, y1)
        cut = rng.uniform(lo + min_side, hi - min_side)
        near = [c for c in lines[axis] if abs(c - cut) < SNAP and lo + min_side <= c <= hi - min_side]
        cut = min(near, key=lambda c: abs(c - cut)) if near else round(cut / GRID) * GRID
        if not lo + 0.5 * min_side < cut < hi - 0.5 * min_side:
            continue
        lines[axis].append(cut)
        leaves[i:i + 1] = ([(x0, y0, cut, y1), (cut, y0, x1, y1)] if axis == 0
                           else [(x0, y0, x1, cut), (x0, cut, x1, y1)])
    return np.array(leaves)


def _adjacency(leaves, tol=1e-6):
    """Shared edges between rectangles.

    Returns:
        A list of (i, j, axis, coordinate, lo, hi): leaves i and j share the segment at
        x = coordinate (axis 0) or y = coordinate (axis 1) from lo to hi along the other axis.
    """
    edges = []
    for i in range(len(leaves)):
        for j in range(i + 1, len(leaves)):
            a, b = leaves[i], leaves[j]
            for axis in (0, 1):
                other = 1 - axis
                for c in (a[axis + 2], a[axis]):
                    if abs(c - (b[axis] if c == a[axis + 2] else b[axis + 2])) < tol:
                        lo = max(a[other], b[other])
                        hi = min(a[other + 2], b[other + 2])
                        if hi - lo > tol:
                            edges.append((i, j, axis, float(c), float(lo), float(hi)))
    return edges


def _find(parent: list[int], i: int) -> int:
    """The root of ``i`` in the union-find forest ``parent``, halving the path on the way."""
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def _connected(n, edges) -> bool:
    parent = list(range(n))
    for i, j, *_ in edges:
        parent[_find(parent, i)] = _find(parent, j)
    return len({_find(parent, i) for i in range(n)}) == 1


def _drop_boundary_leaves(rng, leaves, n_drop, width, height):
    """Removes up to ``n_drop`` leaves touching the bounding box, keeping a simple, connected outline."""
    keep = np.ones(len(leaves), bool)
    for _ in range(n_drop):
        candidates = []
        for i in np.flatnonzero(keep):
            x0, y0, x1, y1 = leaves[i]
            on_boundary = x0 == 0 or y0 == 0 or x1 == width or y1 == height
            spans = (x0 == 0 and x1 == width) or (y0 == 0 and y1 == height)
            if on_boundary and not spans:
                candidates.append(i)
        rng.shuffle(candidates)
        for i in candidates:
            trial = keep.copy()
            trial[i] = False
            rest = leaves[trial]
            # The outline must keep its bounding box (8-20 m across by default), stay one polygon without
            # holes, and lose no more than 30% of its area.
            if not (np.isclose(rest[:, 0].min(), 0) and np.isclose(rest[:, 1].min(), 0)
                    and np.isclose(rest[:, 2].max(), width) and np.isclose(rest[:, 3].max(), height)):
                continue
            if ((rest[:, 2] - rest[:, 0]) * (rest[:, 3] - rest[:, 1])).sum() < 0.7 * width * height:
                continue
            outline = shapely.union_all(shapely.box(*rest.T))
            if outline.geom_type != "Polygon" or len(outline.interiors):
                continue
            keep = trial
            break
    return leaves[keep]


def _doors(rng, n_rooms, edges, door_width, clearance, loops, openings):
    """Picks doorways: a random spanning tree of ``edges`` plus some extra edges.

    Returns:
        A list of (axis, coordinate, lo, hi) door openings.
    """
    usable = [e for e in edges if e[5] - e[4] >= door_width[0] + 2 * clearance]
    order = rng.permutation(len(usable))
    parent = list(range(n_rooms))
    chosen = []
    for k in order:
        i, j = usable[k][:2]
        if _find(parent, i) != _find(parent, j):
            parent[_find(parent, i)] = _find(parent, j)
            chosen.append(usable[k])
        elif rng.random() < loops:
            chosen.append(usable[k])
    if len({_find(parent, i) for i in range(n_rooms)}) != 1:
        return None
    doors = []
    for i, j, axis, c, lo, hi in chosen:
        room = hi - lo - 2 * clearance
        if rng.random() < openings and room > 2.0:
            width = rng.uniform(0.5 * room, room)  # open-plan: most of the wall is missing
        else:
            width = min(rng.uniform(*door_width), room)
        start = lo + clearance + rng.random() * max(room - width, 0.0)
        doors.append((axis, c, start, start + width))
    return doors


def _drop_collinear(ring: np.ndarray, tol: float = 1e-7) -> np.ndarray:
    """Corners of a closed ring without repeated points or straight-through vertices.

    Args:
        ring: (V, 2) ring coordinates, the first point possibly repeated at the end.
        tol: points closer than this are one point, and a vertex whose turn is smaller
            than ``tol`` radians is dropped.

    Returns:
        (V', 2) corners, the first not repeated.
    """
    pts = ring[:-1] if len(ring) > 1 and np.allclose(ring[0], ring[-1], atol=tol, rtol=0) else ring
    # Repeats first: a vertex next to its own copy would otherwise look straight-through.
    pts = pts[np.linalg.norm(pts - np.roll(pts, 1, 0), axis=1) > tol]
    while len(pts) > 3:
        a = pts - np.roll(pts, 1, 0)
        b = np.roll(pts, -1, 0) - pts
        sine = (a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        straight = (np.abs(sine) <= tol) & ((a * b).sum(1) > 0)
        if not straight.any():
            break
        # Neighbouring straight vertices all lie on one line, so dropping them together is safe.
        pts = pts[~straight]
    return pts


def _wall_segments(region) -> np.ndarray:
    segments = []
    for poly in shapely.get_parts(region):
        if poly.geom_type != "Polygon":
            continue
        for ring in [poly.exterior, *poly.interiors]:
            pts = _drop_collinear(np.asarray(ring.coords))
            segments.append(geom.cyclic_pairs(pts))
    return np.concatenate(segments)


def generate(
    key_or_seed,
    extent: Sequence[float] = (8.0, 20.0),
    rooms: Sequence[int] = (4, 15),
    room_area: Sequence[float] = (10.0, 22.0),
    door_width: Sequence[float] = (0.8, 1.1),
    exterior_wall: Sequence[float] = (0.2, 0.3),
    interior_wall: Sequence[float] = (0.1, 0.15),
    min_room_side: float = 1.8,
    res: float = geom.MASK_RES,
) -> dotdict:
    """Generates one procedural apartment floorplan.

    Args:
        key_or_seed: a non-negative int, or a ``jax.random`` key. The same value always
            gives the same plan; an int seed is also the plan's id.
        extent: (low, high) metres, the range of each side of the outline's bounding box.
            Within [4, 25].
        rooms: (low, high) number of rooms, within [1, 30].
        room_area: (low, high) square metres; the plan's area over a draw from this range
            sets its number of rooms (clipped to ``rooms``).
        door_width: (low, high) metres; doorways are drawn from this range, >= 0.45.
        exterior_wall: (low, high) thickness of the outer walls in metres.
        interior_wall: (low, high) thickness of the inner walls in metres.
        min_room_side: metres, the shortest side of a room.
        res: mask resolution in metres.

    Returns:
        A geometry dotdict: walls (M, 2, 2), lights (R, 2) at the R room centroids,
        masks (H, W) with rooms 1..R, res, and id (the seed, or a hash of the key).
        ``generate(g.id)`` rebuilds the same plan, with the same other arguments.

    Raises:
        ValueError: naming the argument that is out of range.
    """
    id = _seed(key_or_seed)
    _check_range("extent", extent, 4.0, 25.0)
    _check_range("rooms", rooms, 1, 30)
    _check_range("room_area", room_area, 1.0, 400.0)
    _check_range("door_width", door_width, MIN_DOOR_WIDTH, 5.0)
    _check_range("exterior_wall", exterior_wall, 0.02, 1.0)
    _check_range("interior_wall", interior_wall, 0.02, 1.0)
    if not 0.5 <= min_room_side <= extent[0] / 2:
        raise ValueError(f"min_room_side: expected a length in [0.5, extent[0]/2], got {min_room_side}")
    if door_width[0] + 2 * max(interior_wall[1], 0.1) > min_room_side:
        raise ValueError(f"door_width: {door_width} leaves no room for door frames in a {min_room_side} m room")
    validation.scalar_in_range("res", res, 0.0, 1.0, hi_open=False)

    rng = np.random.default_rng([id, 0x6D656761])
    for _ in range(100):
        plan = _try_generate(rng, extent, rooms, room_area, door_width, exterior_wall, interior_wall,
                             min_room_side)
        if plan is not None:
            break
    else:  # pragma: no cover - needs pathological arguments
        raise ValueError("extent, rooms, min_room_side: no plan satisfies these constraints")
    leaves, walls, spaces = plan

    # Put the outer face of the walls at (MARGIN, MARGIN), as cubicasa does.
    offset = geom.MARGIN - walls.reshape(-1, 2).min(0)
    walls = walls + offset
    spaces = shapely.transform(spaces, lambda xy: xy + offset)
    lights = (leaves[:, :2] + leaves[:, 2:]) / 2 + offset
    masks = geom.masks(walls, spaces, res)
    return geom.geometry(walls, lights, masks, res, id=id)


def _check_range(name, value, low, high):
    try:
        a, b = value
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a (low, high) pair, got {value!r}") from None
    if not (low <= a <= b <= high):
        raise ValueError(f"{name}: expected low <= high within [{low}, {high}], got {value!r}")


def _pilasters(rng, outline, leaves, t_ext, rate=0.25, keep_clear=1.0):
    """Small rectangular piers on the inner face of the outer walls, as real plans have.

    About ``rate`` per metre of outline, each at least ``keep_clear`` metres from every
    room corner (so from every wall junction and doorway) and from each other.

    Returns:
        A list of shapely boxes, to be merged into the wall solid.
    """
    ring = outline.exterior
    corners = np.unique(np.concatenate([leaves[:, [0, 1]], leaves[:, [2, 3]], leaves[:, [0, 3]],
                                        leaves[:, [2, 1]]]), axis=0)
    placed: list[np.ndarray] = []
    out = []
    for d in np.sort(rng.uniform(0, ring.length, rng.poisson(rate * ring.length))):
        p = np.asarray(ring.interpolate(d).coords[0])
        if np.abs(corners - p).max(1).min() < keep_clear or any(np.abs(q - p).max() < keep_clear for q in placed):
            continue
        ahead = np.asarray(ring.interpolate(min(d + 0.01, ring.length)).coords[0]) - p
        along = ahead / max(np.linalg.norm(ahead), 1e-12)
        normal = np.array([-along[1], along[0]])
        if not outline.contains(shapely.Point(p + 0.5 * normal)):
            normal = -normal
        half, depth = rng.uniform(0.15, 0.3), rng.uniform(0.15, 0.35)
        a = p - half * along
        b = p + half * along + (t_ext / 2 + depth) * normal
        out.append(shapely.box(min(a[0], b[0]), min(a[1], b[1]), max(a[0], b[0]), max(a[1], b[1])))
        placed.append(p)
    return out


def _try_generate(rng, extent, rooms, room_area, door_width, exterior_wall, interior_wall, min_side):
    """One attempt at a plan, or None if the draw failed.

    Returns:
        leaves (R, 4) room rectangles (x0, y0, x1, y1) on the wall centrelines, walls
        (M, 2, 2), and spaces (R,) shapely polygons, the rooms' floors.
    """
    width, height = (round(rng.uniform(*extent) / GRID) * GRID for _ in range(2))
    n_rooms = int(np.clip(round(width * height / rng.uniform(*room_area)), *rooms))
    # Draw a few spare leaves; dropping boundary ones gives a non-rectangular outline.
    n_drop = int(rng.choice([0, 1, 1, 2, 2])) if n_rooms + 2 <= 2 * rooms[1] else 0
    leaves = _split_leaves(rng, width, height, n_rooms + n_drop, min_side)
    leaves = _drop_boundary_leaves(rng, leaves, n_drop, width, height)
    if not rooms[0] <= len(leaves) <= rooms[1]:
        return None
    t_ext, t_int = rng.uniform(*exterior_wall), rng.uniform(*interior_wall)
    edges = _adjacency(leaves)
    if not _connected(len(leaves), edges):
        return None
    clearance = t_int + 0.05
    doors = _doors(rng, len(leaves), edges, door_width, clearance, loops=0.15, openings=0.08)
    if doors is None:
        return None

    outline = shapely.union_all(shapely.box(*leaves.T))
    if outline.geom_type != "Polygon" or len(outline.interiors):
        return None
    cells = shapely.buffer(shapely.boundary(shapely.box(*leaves.T)), t_int / 2, cap_style="square",
                           join_style="mitre")
    exterior = shapely.buffer(outline.exterior, t_ext / 2, join_style="mitre")
    solid = shapely.union_all([*cells, exterior, *_pilasters(rng, outline, leaves, t_ext)])
    cuts = []
    for axis, c, lo, hi in doors:
        # Reach through the whole wall but not past its far face into the next one.
        depth = t_int
        cuts.append(shapely.box(c - depth, lo, c + depth, hi) if axis == 0 else shapely.box(lo, c - depth, hi, c + depth))
    solid = shapely.difference(solid, shapely.union_all(cuts))
    walls = _wall_segments(solid)
    # Rooms are the cells minus the wall bodies, so no room cell hides inside a thick wall.
    spaces = shapely.difference(shapely.box(*leaves.T), solid)
    return leaves, walls, spaces


def sample(n: int, split: str = "training", seed: int = 1, **kwargs) -> list[dotdict]:
    """Returns ``n`` distinct procedural floorplans; the same arguments give the same list.

    Plan ids are drawn from a generator seeded with ``seed``, keeping those in the
    requested split. A plan's split depends only on its id (see :func:`split_of`), so the
    ``'test'`` plans of any seed are never ``'training'`` plans of any seed.

    Args:
        n: number of plans, >= 0.
        split: ``'training'`` (about 90% of ids), ``'test'`` (the other 10%) or ``'all'``.
        seed: a non-negative int choosing which plans.
        **kwargs: passed to :func:`generate`.

    Returns:
        A list of ``n`` geometry dotdicts.
    """
    validation.nonnegative_int("n", n)
    validation.one_of("split", split, ("training", "test", "all"))
    validation.nonnegative_int("seed", seed)
    return [generate(id, **kwargs) for id in _sample_ids(n, split, seed)]


def _sample_ids(n: int, split: str, seed: int) -> list[int]:
    """The ``n`` distinct plan ids :func:`sample` generates, in order."""
    rng = np.random.default_rng([int(seed), 0x73706C74])
    ids: list[int] = []
    seen: set[int] = set()
    while len(ids) < n:
        for id in rng.integers(0, ID_LIMIT, size=64).tolist():
            if id not in seen and (split == "all" or split_of(id) == split) and len(ids) < n:
                seen.add(id)
                ids.append(id)
    return ids
