"""Geometries: the static floorplan of one environment, on the host in numpy.

A geometry is a :class:`~megastep_jax.arrdict.dotdict` with

- ``id``: an int naming the plan;
- ``walls``: (M, 2, 2) float32, wall endpoints as (x, y) in metres, all strictly positive;
- ``lights``: (N, 2) float32, light positions, strictly positive;
- ``masks``: (H, W) int32, -1 in cells within 1 cm of a wall, k > 0 in cells room k touches,
  0 elsewhere (megastep's rule, see :func:`masks`).
  Row 0 is the top of the plan (largest y), so ``imshow(masks)`` shows the plan upright;
- ``res``: float, the side of a mask cell in metres.

Extra keys may be added by users; every function here reads only these five.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import shapely

from . import validation
from .arrdict import dotdict

MARGIN = 1.0
"""Clearance in metres between the origin and the plan's lower-left corner."""
MASK_RES = 0.2
"""Side of a mask cell in metres."""


def cyclic_pairs(xs: np.ndarray) -> np.ndarray:
    """Returns pairs ``(xs[i], xs[i+1])``, the last wrapping round to the first.

    Args:
        xs: (N, ...) array, e.g. the (N, 2) corners of a polygon.

    Returns:
        (N, 2, ...) array; with corners, the polygon's edges as walls.
    """
    xs = np.asarray(xs)
    return np.stack([xs, np.roll(xs, -1, axis=0)], axis=1)


WALL_BUFFER = 0.01
"""Metres: walls are widened by this before rasterising, so a cell within 1 cm of a wall is a
wall cell (megastep's ``masks``). A spawn at the centre of any other cell is then at least
``res/2 + WALL_BUFFER`` = 0.11 m from every wall, more than the agent radius."""


def mask_shape(points: np.ndarray, res: float = MASK_RES) -> tuple[int, int]:
    """(H, W) of a mask covering the points plus the margin on the top and right.

    megastep's rule: with (r, t) the largest x and y of the points plus :data:`MARGIN`,
    ``H = int(t / res) + 1`` and ``W = int(r / res) + 1``, so the 5 m box toy (walls at 1 and
    6 m) has a 36 x 36 mask.

    Args:
        points: (..., 2) points, e.g. wall ends and room corners.
        res: side of a cell in metres.

    Returns:
        (H, W) ints.
    """
    top_right = np.asarray(points, np.float64).reshape(-1, 2).max(0) + MARGIN
    return int(top_right[1] / res) + 1, int(top_right[0] / res) + 1


def centers(indices: np.ndarray, shape: Sequence[int], res: float) -> np.ndarray:
    """Converts mask (i, j) indices to the (x, y) coordinates of the cells' centres.

    Args:
        indices: (..., 2) integer array of (row, column) indices.
        shape: (H, W) of the mask.
        res: side of a cell in metres.

    Returns:
        (..., 2) float array of (x, y) coordinates.
    """
    indices = np.asarray(indices)
    i, j = indices[..., 0], indices[..., 1]
    return np.stack([(j + 0.5) * res, (shape[0] - i - 0.5) * res], -1)


def indices(coords: np.ndarray, shape: Sequence[int], res: float) -> np.ndarray:
    """Converts (x, y) coordinates to the (i, j) indices of the cells containing them.

    As megastep's, indices are clipped to the mask: a point beyond the mask's edge maps to
    the nearest edge cell, so the result always indexes the mask.

    Args:
        coords: (..., 2) float array of (x, y) coordinates.
        shape: (H, W) of the mask.
        res: side of a cell in metres.

    Returns:
        (..., 2) int array of (row, column) indices, rows in [0, H), columns in [0, W).
    """
    coords = np.asarray(coords, np.float64)
    i = np.clip(np.floor(shape[0] - coords[..., 1] / res), 0, shape[0] - 1)
    j = np.clip(np.floor(coords[..., 0] / res), 0, shape[1] - 1)
    return np.stack([i, j], -1).astype(int)


def masks(walls: np.ndarray, spaces: Sequence[np.ndarray], res: float = MASK_RES) -> np.ndarray:
    """Rasterises walls and rooms into a mask, as megastep's ``geometry.masks`` does.

    The mask's shape follows :func:`mask_shape` over the wall ends and room corners. Every
    cell that room k touches (any overlap with the cell's interior, not only a cell whose
    centre is inside) gets k, later rooms overwriting earlier ones; then every cell that a
    wall widened by :data:`WALL_BUFFER` touches gets -1.

    Args:
        walls: (M, 2, 2) wall endpoints in metres.
        spaces: room outlines, each a (V, 2) array of polygon corners (or a shapely
            polygon). Room k (1-based) is ``spaces[k-1]``.
        res: side of a cell in metres, > 0.

    Returns:
        (H, W) int32 array: -1 where a cell is within 1 cm of a wall, k in cells room k
        touches, else 0.

    Raises:
        ValueError: if ``res`` is not positive or the walls are not (M, 2, 2).
    """
    res = validation.scalar_in_range("res", res, 0.0)
    walls = np.asarray(walls, dtype=np.float64)
    if walls.size and (walls.ndim != 3 or walls.shape[1:] != (2, 2)):
        raise ValueError(f"walls: expected shape (M, 2, 2), got {walls.shape}")
    walls = walls.reshape(-1, 2, 2)
    # megastep repairs room outlines with buffer(0); shapely geometries are taken as they are.
    polys = [s if isinstance(s, shapely.Geometry) else shapely.Polygon(np.asarray(s, np.float64)).buffer(0)
             for s in spaces]
    # The mask covers the walls and the rooms: a room may reach past the walls (a terrace).
    corners = [walls.reshape(-1, 2)] + [np.asarray(shapely.get_coordinates(p)) for p in polys]
    corners = np.concatenate(corners)
    shape = mask_shape(corners, res) if len(corners) else (1, 1)
    ii, jj = np.indices(shape)
    lo = centers(np.stack([ii, jj], -1), shape, res).reshape(-1, 2) - res / 2
    eps = 1e-9 * max(res, 1.0)
    cells = shapely.box(lo[:, 0] + eps, lo[:, 1] + eps, lo[:, 0] + res - eps, lo[:, 1] + res - eps)
    tree = shapely.STRtree(cells)
    out = np.zeros(shape, np.int32).reshape(-1)
    rooms = [(k, p) for k, p in enumerate(polys, start=1) if not p.is_empty]
    # The cells are shrunk by a hair, so a shape that only meets a cell's edge does not touch it.
    for k, poly in rooms:
        out[tree.query(poly, predicate="intersects")] = k
    if len(walls):
        _, hit = tree.query(shapely.buffer(shapely.linestrings(walls), WALL_BUFFER), predicate="intersects")
        out[hit] = -1
    return out.reshape(shape)


def _check_points(name: str, x: np.ndarray, trailing: tuple[int, ...]) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind not in "fiu":
        raise ValueError(f"{name}: expected a real-valued array, got dtype {x.dtype}")
    validation.shape(name, x, (None,) + trailing)
    # strictly positive: the plan sits in the top-right quadrant
    validation.finite_positive(name, x)
    return x.astype(np.float32)


def geometry(walls, lights, masks, res: float = MASK_RES, id: int = 0, **extra) -> dotdict:
    """Builds a validated geometry.

    Args:
        walls: (M, 2, 2) wall endpoints in metres, strictly positive and finite.
        lights: (N, 2) light positions, strictly positive and finite.
        masks: (H, W) integer mask, see the module docstring.
        res: side of a mask cell in metres, > 0.
        id: an int naming the plan.
        **extra: further keys kept on the geometry.

    Returns:
        The geometry dotdict.

    Raises:
        ValueError: naming the argument that is malformed.
    """
    walls = _check_points("walls", walls, (2, 2))
    lights = _check_points("lights", lights, (2,))
    masks = np.asarray(masks)
    if masks.ndim != 2 or masks.dtype.kind not in "iu" or 0 in masks.shape:
        raise ValueError(f"masks: expected a non-empty 2D integer array, got {masks.dtype} {masks.shape}")
    validation.scalar_in_range("res", res, 0.0)
    validation.integer("id", id)
    return dotdict(id=int(id), walls=walls, lights=lights, masks=masks.astype(np.int32),
                   res=float(res), **extra)


def validate(g) -> dotdict:
    """Checks that ``g`` has the five geometry keys with valid values; returns it rebuilt.

    Raises:
        ValueError: naming the key that is missing or malformed.
    """
    if not isinstance(g, dict):
        raise ValueError(f"geometry: expected a dotdict with walls, lights, masks, res, id; got {type(g).__name__}")
    missing = [k for k in ("walls", "lights", "masks", "res") if k not in g]
    if missing:
        raise ValueError(f"geometry: missing keys {missing}")
    extra = {k: v for k, v in g.items() if k not in ("walls", "lights", "masks", "res", "id")}
    return geometry(g["walls"], g["lights"], g["masks"], g["res"], g.get("id", 0), **extra)


def display(g, ax=None, title: str | None = None):
    """Draws a geometry with matplotlib: the masks coloured by room, walls in white, lights in yellow.

    A colour bar names the mask values: -1 for cells touching a wall, 0 for free space
    outside any room, and k for room k.

    Args:
        g: a geometry dotdict (walls (M, 2, 2), lights (N, 2), masks (H, W), res, id).
        ax: matplotlib axes to draw on; by default a new figure.
        title: the axes' title; by default the geometry's id.

    Returns:
        The matplotlib figure.
    """
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection
    from matplotlib.colors import BoundaryNorm, ListedColormap

    g = validate(g)
    if ax is None:
        h, w = g.masks.shape
        fig, ax = plt.subplots(figsize=(min(12.0, 2.0 + 6.0 * w / max(h, w)), min(10.0, 1.0 + 6.0 * h / max(h, w))))
    fig = ax.figure

    # One colour per mask value, cycling through tab20 past 20 values; -1 and 0 keep
    # tab20's first two colours as in megastep's pictures.
    top = max(int(g.masks.max()), 1)
    palette = plt.get_cmap("tab20").colors
    cmap = ListedColormap([palette[i % len(palette)] for i in range(top + 2)])
    norm = BoundaryNorm(np.arange(-1.5, top + 1.0), cmap.N)
    height, width = g.res * np.array(g.masks.shape)
    image = ax.imshow(g.masks, extent=(0, width, 0, height), cmap=cmap, norm=norm, interpolation="nearest")
    ticks = np.arange(-1, top + 1)
    bar = fig.colorbar(image, ax=ax, ticks=ticks if len(ticks) <= 25 else None)
    bar.set_label("mask: -1 wall, 0 free, k room k")

    ax.add_collection(LineCollection(g.walls, colors="w", linewidths=2))
    if len(g.lights):
        ax.scatter(g.lights[:, 0], g.lights[:, 1], c="yellow", s=30, zorder=3)
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_aspect("equal")
    ax.set_title(str(g.get("id", 0)) if title is None else title)
    return fig
