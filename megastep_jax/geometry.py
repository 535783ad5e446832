"""Geometries: the static floorplan of one environment, on the host in numpy.

A geometry is a :class:`~megastep_jax.arrdict.dotdict` with

- ``id``: an int naming the plan;
- ``walls``: (M, 2, 2) float32, wall endpoints as (x, y) in metres, all strictly positive;
- ``lights``: (N, 2) float32, light positions, strictly positive;
- ``masks``: (H, W) int32, -1 in cells touching a wall, 0 in free space, k > 0 in room k.
  Row 0 is the top of the plan (largest y), so ``imshow(masks)`` shows the plan upright;
- ``res``: float, the side of a mask cell in metres.

Extra keys may be added by users; every function here reads only these five.
"""
from __future__ import annotations

import numbers
from typing import Sequence

import numpy as np
import shapely

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


def mask_shape(points: np.ndarray, res: float = MASK_RES) -> tuple[int, int]:
    """(H, W) of a mask covering the points (e.g. wall ends) plus the margin on the top and right."""
    top_right = np.asarray(points).reshape(-1, 2).max(0) + MARGIN
    return int(np.ceil(top_right[1] / res)), int(np.ceil(top_right[0] / res))


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

    Args:
        coords: (..., 2) float array of (x, y) coordinates.
        shape: (H, W) of the mask.
        res: side of a cell in metres.

    Returns:
        (..., 2) int array of (row, column) indices.
    """
    coords = np.asarray(coords)
    j = np.floor(coords[..., 0] / res).astype(int)
    i = np.floor(shape[0] - coords[..., 1] / res).astype(int)
    return np.stack([i, j], -1)


def masks(walls: np.ndarray, spaces: Sequence[np.ndarray], res: float = MASK_RES) -> np.ndarray:
    """Rasterises walls and rooms into a mask.

    Args:
        walls: (M, 2, 2) wall endpoints in metres.
        spaces: room outlines, each a (V, 2) array of polygon corners (or a shapely
            polygon). Room k (1-based) is ``spaces[k-1]``.
        res: side of a cell in metres.

    Returns:
        (H, W) int32 array: -1 where a cell touches a wall, k inside room k, else 0.
    """
    walls = np.asarray(walls, dtype=np.float64).reshape(-1, 2, 2)
    polys = [s if isinstance(s, shapely.Geometry) else shapely.Polygon(np.asarray(s)) for s in spaces]
    # The mask covers the walls and the rooms: a room may reach past the walls (a terrace).
    corners = [walls.reshape(-1, 2)] + [np.asarray(shapely.get_coordinates(p)) for p in polys]
    corners = np.concatenate(corners) if sum(len(c) for c in corners) else np.zeros((0, 2))
    shape = mask_shape(corners, res) if len(corners) else (1, 1)
    ii, jj = np.indices(shape)
    xy = centers(np.stack([ii, jj], -1), shape, res)
    out = np.zeros(shape, np.int32)
    for k, poly in enumerate(polys, start=1):
        out[shapely.contains_xy(poly, xy[..., 0], xy[..., 1])] = k
    if len(walls):
        # Cells grow by a hair so a wall lying exactly on a cell edge touches it despite
        # rounding in the cell coordinates (megastep widened the walls instead).
        lo = xy.reshape(-1, 2) - res / 2 - 1e-6
        cells = shapely.box(lo[:, 0], lo[:, 1], lo[:, 0] + res + 2e-6, lo[:, 1] + res + 2e-6)
        lines = shapely.linestrings(walls)
        _, hit = shapely.STRtree(cells).query(lines, predicate="intersects")
        out.reshape(-1)[np.unique(hit)] = -1
    return out


def _check_points(name: str, x: np.ndarray, trailing: tuple[int, ...]) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind not in "fiu":
        raise ValueError(f"{name}: expected a real-valued array, got dtype {x.dtype}")
    if x.ndim != 1 + len(trailing) or x.shape[1:] != trailing:
        want = "(n, " + ", ".join(map(str, trailing)) + ")"
        raise ValueError(f"{name}: expected shape {want}, got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name}: expected finite coordinates, found NaN or inf")
    if np.any(x <= 0):
        raise ValueError(
            f"{name}: expected strictly positive coordinates (the plan sits in the top-right "
            f"quadrant), smallest is {x.min():g}"
        )
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
    if not isinstance(res, numbers.Real) or not np.isfinite(res) or res <= 0:
        raise ValueError(f"res: expected a positive finite float, got {res!r}")
    if not isinstance(id, numbers.Integral):
        raise ValueError(f"id: expected an int, got {type(id).__name__}")
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
