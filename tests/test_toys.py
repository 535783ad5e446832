"""Toy geometries: box, column and maze."""
import collections

import jax
import numpy as np
import pytest
import shapely

from megastep_jax import geometry as geom, toys


def test_box_is_megastep_box():
    """megastep's toys.box(): corners at 45, 135, 225, 315 degrees joined cyclically."""
    g = toys.box()
    corners = [(np.cos(t), np.sin(t)) for t in np.arange(np.pi / 4, 2 * np.pi, np.pi / 2)]
    corners = 5 / 2**.5 * np.array(corners) + 5 / 2 + 1
    np.testing.assert_allclose(g.walls, geom.cyclic_pairs(corners), atol=1e-6)
    # top, left, bottom, right: the wall palette and Minimal's views follow this order
    np.testing.assert_allclose(g.walls, [[[6, 6], [1, 6]], [[1, 6], [1, 1]], [[1, 1], [6, 1]], [[6, 1], [6, 6]]])
    np.testing.assert_allclose(g.lights, [[3.5, 3.5]])
    assert g.id == 0 and g.res == 0.2
    # megastep's mask: 36 x 36, row 0 at the top; columns 4-5 and 29-30, rows 5-6 and 30-31
    # hold the walls (1 cm either side of x, y = 1 and 6), the 23 x 23 cells between are the
    # room, the rest is free.
    assert g.masks.shape == (36, 36)
    counts = dict(zip(*np.unique(g.masks, return_counts=True)))
    assert counts == {-1: 200, 0: 567, 1: 529}
    assert np.all(g.masks[7:30, 6:29] == 1)
    assert np.all(g.masks[5:32][:, [4, 5, 29, 30]] == -1) and np.all(g.masks[[5, 6, 30, 31], 4:31] == -1)


def test_box_rectangle_keeps_the_order():
    g = toys.box(2.0, 3.0)
    np.testing.assert_allclose(g.walls, [[[3, 4], [1, 4]], [[1, 4], [1, 1]], [[1, 1], [3, 1]], [[3, 1], [3, 4]]])
    assert g.masks.shape == (int(5 / .2) + 1, int(4 / .2) + 1)
    np.testing.assert_allclose(toys.box(3.0).walls.reshape(-1, 2).max(0), [4, 4])  # square by default


def test_column_is_megastep_column():
    """megastep's toys.column(): a 0.1 m pillar, no outer walls, four lights round it."""
    g = toys.column()
    np.testing.assert_allclose(
        g.walls, [[[3.55, 3.55], [3.45, 3.55]], [[3.45, 3.55], [3.45, 3.45]],
                  [[3.45, 3.45], [3.55, 3.45]], [[3.55, 3.45], [3.55, 3.55]]], atol=1e-6)
    np.testing.assert_allclose(g.lights, [[4.5, 4.5], [2.5, 4.5], [2.5, 2.5], [4.5, 2.5]], atol=1e-6)
    # The unwalled 5 m room is the mask: 25 x 25 cells, less the one the pillar stands in.
    assert g.masks.shape == (36, 36)
    assert dict(zip(*np.unique(g.masks, return_counts=True))) == {-1: 1, 0: 671, 1: 624}
    i, j = geom.indices(np.array([3.5, 3.5]), g.masks.shape, g.res)
    assert g.masks[i, j] == -1
    assert np.all(g.masks[6:31, 5:30][g.masks[6:31, 5:30] != -1] == 1)


def test_room_with_column_has_a_hole():
    g = toys.room_with_column()
    assert len(g.walls) == 8 and len(g.lights) == 2 and g.id == 2
    i, j = geom.indices(np.array([3.5, 3.5]), g.masks.shape, g.res)
    assert g.masks[i, j] == 0  # inside the column: not room
    np.testing.assert_allclose(g.walls[:4], toys.box().walls)


@pytest.mark.parametrize("fn, bad, name", [
    (toys.box, dict(width=0), "width"), (toys.box, dict(height=-1), "height"),
    (toys.column, dict(column_width=0.0), "column_width"), (toys.column, dict(width=-1.0), "width"),
    (toys.room_with_column, dict(side=4.8), "width, height, side"),
])
def test_toys_bad(fn, bad, name):
    with pytest.raises(ValueError, match=name):
        fn(**bad)


# --------------------------------------------------------------------------- maze


def cell_graph(g, rows, cols, cell=1.0):
    """Which neighbouring maze cells are joined: no wall covers the edge between them."""
    lines = shapely.union_all(shapely.linestrings(g.walls.astype(np.float64)))
    m = geom.MARGIN
    edges = []
    for r in range(rows):
        for c in range(cols):
            if c + 1 < cols:
                x = m + (c + 1) * cell
                mid = shapely.Point(x, m + (r + 0.5) * cell)
                if lines.distance(mid) > 1e-6:
                    edges.append(((r, c), (r, c + 1)))
            if r + 1 < rows:
                y = m + (r + 1) * cell
                mid = shapely.Point(m + (c + 0.5) * cell, y)
                if lines.distance(mid) > 1e-6:
                    edges.append(((r, c), (r + 1, c)))
    return edges


@pytest.mark.parametrize("size", [1, 2, 5, (3, 7), 12])
def test_maze_is_perfect(size):
    rows, cols = (size, size) if np.ndim(size) == 0 else size
    g = toys.maze(3, size)
    edges = cell_graph(g, rows, cols)
    # A spanning tree: n - 1 passages and every cell reachable.
    assert len(edges) == rows * cols - 1
    adjacent = collections.defaultdict(list)
    for a, b in edges:
        adjacent[a].append(b)
        adjacent[b].append(a)
    seen, stack = {(0, 0)}, [(0, 0)]
    while stack:
        for nxt in adjacent[stack.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    assert len(seen) == rows * cols


def test_maze_format():
    g = toys.maze(jax.random.key(0), 6)
    geom.validate(g)
    lengths = np.linalg.norm(g.walls[:, 0] - g.walls[:, 1], axis=-1)
    assert lengths.min() >= 1.0 - 1e-6  # merged into whole cells, none zero-length
    keys = {tuple(sorted(map(tuple, np.round(w, 5).tolist()))) for w in g.walls}
    assert len(keys) == len(g.walls)  # no duplicates
    assert len(g.lights) == 36 and g.masks.max() == 1
    np.testing.assert_allclose(g.walls.reshape(-1, 2).min(0), [1, 1])
    np.testing.assert_allclose(g.walls.reshape(-1, 2).max(0), [7, 7])
    # Collinear neighbouring walls are merged: no two walls share an endpoint and a direction.
    d = g.walls[:, 1] - g.walls[:, 0]
    d = d / np.linalg.norm(d, axis=-1, keepdims=True)
    for i in range(len(g.walls)):
        for j in range(i + 1, len(g.walls)):
            touch = any(np.allclose(p, q) for p in g.walls[i] for q in g.walls[j])
            parallel = abs(d[i, 0] * d[j, 1] - d[i, 1] * d[j, 0]) < 1e-6
            assert not (touch and parallel and not np.allclose(g.walls[i], g.walls[j]))


def test_maze_deterministic_and_varied():
    a, b = toys.maze(5, 8), toys.maze(5, 8)
    np.testing.assert_array_equal(a.walls, b.walls)
    assert a.id == b.id == 5
    np.testing.assert_array_equal(toys.maze(jax.random.key(2), 8).walls, toys.maze(jax.random.key(2), 8).walls)
    c = toys.maze(6, 8)
    assert c.walls.shape != a.walls.shape or not np.array_equal(c.walls, a.walls)


def test_maze_mask_connected():
    g = toys.maze(1, 7, cell=0.8)
    free = g.masks == 1
    start = tuple(np.argwhere(free)[0])
    seen, queue = {start}, collections.deque([start])
    while queue:
        i, j = queue.popleft()
        for n in ((i + 1, j), (i - 1, j), (i, j + 1), (i, j - 1)):
            if 0 <= n[0] < free.shape[0] and 0 <= n[1] < free.shape[1] and free[n] and n not in seen:
                seen.add(n)
                queue.append(n)
    assert len(seen) == free.sum()


@pytest.mark.parametrize("kwargs, name", [
    (dict(size=0), "size"), (dict(size=(2, 100)), "size"), (dict(size=2.5), "size"),
    (dict(size=4, cell=0.2), "cell"),
])
def test_maze_bad(kwargs, name):
    with pytest.raises(ValueError, match=name):
        toys.maze(0, **kwargs)


def test_maze_bad_key():
    with pytest.raises(ValueError, match="^key: "):
        toys.maze("zero", 4)
