"""Checks shared by the floorplan and Cubicasa tests: reachability, room cells, rays."""
import collections

import numpy as np

from megastep_jax import geometry as geom


def reachable(masks: np.ndarray, start: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: cells reachable from ``start`` through 4-neighbours with mask != -1."""
    free = masks != -1
    seen = np.zeros_like(free)
    seen[start] = True
    queue = collections.deque([start])
    while queue:
        i, j = queue.popleft()
        for a, b in ((i + 1, j), (i - 1, j), (i, j + 1), (i, j - 1)):
            if 0 <= a < free.shape[0] and 0 <= b < free.shape[1] and free[a, b] and not seen[a, b]:
                seen[a, b] = True
                queue.append((a, b))
    return seen


def centroid_cell(g, k: int) -> tuple[int, int]:
    """The cell of room k nearest its light (the light's own cell when that is in room k)."""
    cells = np.argwhere(g.masks == k)
    target = geom.indices(g.lights[k - 1], g.masks.shape, g.res)
    return tuple(cells[np.argmin(((cells - target) ** 2).sum(1))])


def ray_distances(walls: np.ndarray, point: np.ndarray, n: int = 360) -> np.ndarray:
    """(n,) distance to the nearest wall along n rays spread over 360 degrees; inf if none."""
    angles = np.deg2rad(np.arange(n) * 360.0 / n)
    u = np.stack([np.cos(angles), np.sin(angles)], -1)[:, None]
    a, d = walls[None, :, 0].astype(np.float64), (walls[:, 1] - walls[:, 0])[None].astype(np.float64)
    cross = lambda x, y: x[..., 0] * y[..., 1] - x[..., 1] * y[..., 0]
    den = cross(u, d)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = cross(a - point, d) / den
        t = cross(a - point, u) / den
    hit = (np.abs(den) > 1e-12) & (t >= 0) & (t <= 1) & (s > 0)
    return np.where(hit, s, np.inf).min(1)
