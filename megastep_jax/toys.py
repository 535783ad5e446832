"""Toy geometries: simple plans for tests, tutorials and benchmarks."""
from __future__ import annotations

import numpy as np

from . import geometry as geom

__all__ = ["box", "column"]


def _rectangle(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float32)


def box(width: float = 5.0, height: float = 5.0, res: float = geom.MASK_RES):
    """A single rectangular room with one light in the middle.

    With the defaults the walls lie at x, y = 1 and 6 (the margin is 1 m).

    Args:
        width: inner width in metres, > 0.
        height: inner height in metres, > 0.
        res: mask resolution in metres.

    Returns:
        A geometry dotdict.
    """
    if not width > 0 or not height > 0:
        raise ValueError(f"width, height: expected positive sizes, got {width}, {height}")
    m = geom.MARGIN
    corners = _rectangle(m, m, m + width, m + height)
    walls = geom.cyclic_pairs(corners)
    lights = np.array([[m + width / 2, m + height / 2]], np.float32)
    return geom.geometry(walls, lights, geom.masks(walls, [corners], res), res, id=0)


def column(width: float = 5.0, height: float = 5.0, side: float = 1.0, res: float = geom.MASK_RES):
    """A rectangular room with a square column of side ``side`` in the middle.

    Two lights sit halfway between the column and the left and right walls, so the
    column casts shadows.

    Returns:
        A geometry dotdict.
    """
    if not width > side + 0.5 or not height > side + 0.5 or not side > 0:
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
    import shapely

    room = shapely.Polygon(outer, holes=[inner])
    return geom.geometry(walls, lights, geom.masks(walls, [room], res), res, id=1)
