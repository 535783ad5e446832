"""Toy geometries: simple plans for tests, tutorials and benchmarks."""
from __future__ import annotations

import numpy as np
import shapely

from . import floorplans, geometry as geom, validation

__all__ = ["box", "column", "room_with_column", "maze"]


def _rectangle(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """Corners of an axis-aligned rectangle in megastep's order: top right, top left, bottom
    left, bottom right (counter-clockwise from 45 degrees), so ``cyclic_pairs`` lists its
    sides top, left, bottom, right."""
    return np.array([[x1, y1], [x0, y1], [x0, y0], [x1, y0]], dtype=np.float32)


def _size(name: str, x) -> float:
    """A positive finite length, as a float."""
    validation.scalar_in_range(name, x, 0.0)
    return float(x)


def box(width: float = 5.0, height: float | None = None, res: float = geom.MASK_RES):
    """A single rectangular room with one light in the middle: megastep's ``toys.box``.

    The walls are listed top, left, bottom, right (megastep's corners at 45, 135, 225 and
    315 degrees, joined by ``cyclic_pairs``), so the wall palette colours them in that order.
    With the defaults the walls lie at x, y = 1 and 6 (the margin is 1 m), the light at
    (3.5, 3.5) and the mask is 36 x 36.

    Args:
        width: inner width in metres, > 0.
        height: inner height in metres, > 0; by default ``width`` (megastep's box is square).
        res: mask resolution in metres.

    Returns:
        A geometry dotdict with id 0.

    Raises:
        ValueError: naming ``width`` or ``height`` where it is not a positive finite number.
    """
    width = _size("width", width)
    height = width if height is None else _size("height", height)
    m = geom.MARGIN
    corners = _rectangle(m, m, m + width, m + height)
    walls = geom.cyclic_pairs(corners)
    lights = np.array([[m + width / 2, m + height / 2]], np.float32)
    return geom.geometry(walls, lights, geom.masks(walls, [corners], res), res, id=0)


def column(width: float = 5.0, column_width: float = 0.1, res: float = geom.MASK_RES):
    """megastep's ``toys.column``: a thin square pillar in an open room, lit from four sides.

    The pillar (side ``column_width``, walls listed top, left, bottom, right) stands in the
    middle of a ``width``-wide square room that has **no outer walls**: the room is only a
    mask (where agents spawn), so agents and rays can leave it. Four lights sit at
    (+-1, +-1) m from the middle, on the diagonals at 45, 135, 225 and 315 degrees. For a walled room with a
    wide column in it, see :func:`room_with_column`.

    Args:
        width: side of the (unwalled) room in metres, > 0.
        column_width: side of the pillar in metres, in (0, width).
        res: mask resolution in metres.

    Returns:
        A geometry dotdict with 4 walls, 4 lights and id 1.

    Raises:
        ValueError: naming ``width`` or ``column_width`` where out of range.
    """
    width = _size("width", width)
    column_width = float(validation.scalar_in_range("column_width", column_width, 0.0, width))
    m, mid = geom.MARGIN, geom.MARGIN + width / 2
    pillar = _rectangle(mid - column_width / 2, mid - column_width / 2,
                        mid + column_width / 2, mid + column_width / 2)
    room = _rectangle(m, m, m + width, m + width)
    lights = _rectangle(mid - 1.0, mid - 1.0, mid + 1.0, mid + 1.0)
    walls = geom.cyclic_pairs(pillar)
    return geom.geometry(walls, lights, geom.masks(walls, [room], res), res, id=1)


def room_with_column(width: float = 5.0, height: float = 5.0, side: float = 1.0, res: float = geom.MASK_RES):
    """A walled rectangular room with a square column of side ``side`` in the middle.

    Not one of megastep's toys (its :func:`column` is a thin pillar with no outer walls):
    this one keeps agents inside, and its column casts wide shadows. Two lights sit halfway
    between the column and the left and right walls.

    Args:
        width, height: inner size of the room in metres, each more than ``side + 0.5``.
        side: side of the column in metres, > 0.
        res: mask resolution in metres.

    Returns:
        A geometry dotdict with 8 walls (the room's, then the column's, each listed top,
        left, bottom, right), 2 lights and id 2.

    Raises:
        ValueError: naming the sizes when the column does not fit.
    """
    side = _size("side", side)
    width, height = _size("width", width), _size("height", height)
    if not width > side + 0.5 or not height > side + 0.5:
        raise ValueError(
            f"width, height, side: expected a column narrower than the room by 0.5 m, got "
            f"{width}, {height}, {side}"
        )
    m = geom.MARGIN
    outer = _rectangle(m, m, m + width, m + height)
    cx, cy = m + width / 2, m + height / 2
    inner = _rectangle(cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
    walls = np.concatenate([geom.cyclic_pairs(outer), geom.cyclic_pairs(inner)])
    lights = np.array([[(m + cx - side / 2) / 2, cy], [(m + width + cx + side / 2) / 2, cy]], np.float32)
    room = shapely.Polygon(outer, holes=[inner])
    return geom.geometry(walls, lights, geom.masks(walls, [room], res), res, id=2)


def _merge_runs(edges: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs of consecutive True entries in a 1D bool array, as (start, stop) pairs."""
    padded = np.concatenate([[False], edges, [False]]).astype(np.int8)
    change = np.flatnonzero(np.diff(padded))
    return list(zip(change[::2].tolist(), change[1::2].tolist()))


def maze(key, size=8, cell: float = 1.0, res: float = geom.MASK_RES):
    """A perfect maze: a grid of cells joined by exactly one path between any two cells.

    The passages are carved by a randomised depth-first search (a random spanning tree of
    the grid). Walls are single segments, collinear neighbours merged; the outer wall is
    closed. The whole maze is one room, with a light in the middle of every cell.

    Args:
        key: a ``jax.random`` key or a non-negative int seed; the same key gives the same maze.
        size: cells per side, an int in [1, 64], or a (rows, columns) pair.
        cell: side of a cell in metres, >= 0.5 (three agent widths fit through).
        res: mask resolution in metres.

    Returns:
        A geometry dotdict whose id is derived from the key.
    """
    try:
        id = floorplans._seed(key)
    except ValueError:
        raise ValueError(f"key: expected a jax.random key or a non-negative int seed, got {key!r}") from None
    rows, cols = (size, size) if np.ndim(size) == 0 else tuple(size)
    if not all(isinstance(n, (int, np.integer)) and 1 <= n <= 64 for n in (rows, cols)):
        raise ValueError(f"size: expected an int or (rows, columns) of ints in [1, 64], got {size!r}")
    validation.scalar_in_range("cell", cell, 0.5, lo_open=False)  # three agent widths fit through
    rng = np.random.default_rng([id, 0x6D617A65])

    # right[r, c]: wall between (r, c) and (r, c+1); up[r, c]: between (r, c) and (r+1, c).
    right = np.ones((rows, cols - 1), bool)
    up = np.ones((rows - 1, cols), bool)
    visited = np.zeros((rows, cols), bool)
    stack = [(int(rng.integers(rows)), int(rng.integers(cols)))]
    visited[stack[0]] = True
    while stack:
        r, c = stack[-1]
        options = [(r + dr, c + dc) for dr, dc in ((0, 1), (0, -1), (1, 0), (-1, 0))
                   if 0 <= r + dr < rows and 0 <= c + dc < cols and not visited[r + dr, c + dc]]
        if not options:
            stack.pop()
            continue
        nr, nc = options[int(rng.integers(len(options)))]
        if nr == r:
            right[r, min(c, nc)] = False
        else:
            up[min(r, nr), c] = False
        visited[nr, nc] = True
        stack.append((nr, nc))

    m = geom.MARGIN
    walls = []
    for c in range(cols - 1):  # vertical walls at x = m + (c+1)*cell
        walls += [[[m + (c + 1) * cell, m + a * cell], [m + (c + 1) * cell, m + b * cell]]
                  for a, b in _merge_runs(right[:, c])]
    for r in range(rows - 1):  # horizontal walls at y = m + (r+1)*cell
        walls += [[[m + a * cell, m + (r + 1) * cell], [m + b * cell, m + (r + 1) * cell]]
                  for a, b in _merge_runs(up[r, :])]
    corners = _rectangle(m, m, m + cols * cell, m + rows * cell)
    walls = np.concatenate([geom.cyclic_pairs(corners), np.array(walls, np.float32).reshape(-1, 2, 2)])

    centres = (np.stack(np.meshgrid(np.arange(cols), np.arange(rows)), -1).reshape(-1, 2) + 0.5) * cell + m
    return geom.geometry(walls, centres, geom.masks(walls, [corners], res), res, id=id)
