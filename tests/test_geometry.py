"""geometry: coordinates, masks, validation and display."""
import zlib

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import LineCollection, PathCollection  # noqa: E402

from megastep_jax import floorplans, geometry as geom, toys  # noqa: E402


def test_cyclic_pairs():
    xs = np.array([[0, 0], [1, 0], [1, 1]])
    np.testing.assert_array_equal(geom.cyclic_pairs(xs)[-1], [[1, 1], [0, 0]])


def test_centers_and_indices_round_trip():
    shape, res = (30, 40), 0.2
    ij = np.stack(np.meshgrid(np.arange(30), np.arange(40), indexing="ij"), -1).reshape(-1, 2)
    np.testing.assert_array_equal(geom.indices(geom.centers(ij, shape, res), shape, res), ij)
    # Row 0 is the top of the plan.
    assert geom.centers(np.array([0, 0]), shape, res)[1] == pytest.approx((30 - 0.5) * res)


def test_indices_are_clipped_to_the_mask():
    shape, res = (10, 20), 0.5
    ij = geom.indices(np.array([[-3.0, 100.0], [100.0, -3.0], [0.0, 5.0], [9.99, 0.01]]), shape, res)
    np.testing.assert_array_equal(ij, [[0, 0], [9, 19], [0, 0], [9, 19]])


def test_mask_shape_is_megastep_rule():
    # int(extent / res) + 1 over the largest coordinates plus the margin
    assert geom.mask_shape(np.array([[6.0, 6.0]]), 0.2) == (36, 36)
    assert geom.mask_shape(np.array([[2.0, 3.05]]), 0.2) == (21, 16)


def _random_scene(seed):
    rng = np.random.default_rng(seed)
    walls = rng.uniform(1, 7, (12, 2, 2))
    spaces = []
    for _ in range(3):
        c, r = rng.uniform(2, 6, 2), rng.uniform(0.5, 2)
        a = np.sort(rng.uniform(0, 2 * np.pi, 6))
        spaces.append(c + r * np.stack([np.cos(a), np.sin(a)], -1))
    return walls, spaces


@pytest.mark.parametrize("seed, shape, crc, counts", [
    (0, (41, 40), 2013495511, {-1: 227, 0: 1256, 1: 84, 2: 15, 3: 58}),
    (1, (40, 39), 3511103189, {-1: 208, 0: 1118, 1: 13, 2: 72, 3: 149}),
    (2, (38, 40), 616645550, {-1: 218, 0: 1141, 1: 103, 2: 18, 3: 40}),
])
def test_masks_match_megastep(seed, shape, crc, counts):
    """Golden masks from megastep's own rule (rasterio, all_touched, walls buffered 1 cm),
    computed once on random scenes of slanted walls and overlapping hexagonal rooms."""
    m = geom.masks(*_random_scene(seed))
    assert m.shape == shape
    assert dict(zip(*np.unique(m, return_counts=True))) == counts
    assert zlib.crc32(m.astype(np.int16).tobytes()) == crc


def test_masks_rooms_take_touched_cells_walls_buffered():
    # A room whose edge runs through a column of cells takes the whole column; one that
    # only meets a cell's edge does not take it.
    square = np.array([[1.1, 1.1], [2.0, 1.1], [2.0, 2.0], [1.1, 2.0]])
    m = geom.masks(np.zeros((0, 2, 2)), [square], 0.2)
    (a, b), (c, d) = geom.indices(np.array([[1.05, 1.5], [2.1, 1.5]]), m.shape, 0.2)
    assert m[a, b] == 1 and m[c, d] == 0
    # A wall 5 mm short of a cell edge marks the cell past that edge too (1 cm buffer).
    m = geom.masks(np.array([[[1.395, 0.5], [1.395, 2.5]]]), [], 0.2)
    i, _ = geom.indices(np.array([1.5, 1.5]), m.shape, 0.2)
    assert np.all(m[:, 5] == 0) and m[i, 6] == -1 and m[i, 7] == -1 and np.all(m[:, 8] == 0)


def test_box_masks():
    g = toys.box()
    assert set(np.unique(g.masks)) == {-1, 0, 1}
    i, j = geom.indices(np.array([3.5, 3.5]), g.masks.shape, g.res)
    assert g.masks[i, j] == 1
    i, j = geom.indices(np.array([1.0 + 1e-3, 3.5]), g.masks.shape, g.res)
    assert g.masks[i, j] == -1


@pytest.mark.parametrize("field, bad", [
    ("walls", np.zeros((2, 2))), ("walls", -np.ones((1, 2, 2))), ("lights", np.full((1, 2), np.nan)),
    ("masks", np.zeros((3,), int)), ("res", 0.0),
])
def test_validate_names_the_field(field, bad):
    g = dict(toys.box())
    g[field] = bad
    with pytest.raises(ValueError, match=field):
        geom.validate(g)


def test_display_box():
    g = toys.box()
    fig = geom.display(g)
    ax = fig.axes[0]
    lines = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert len(lines) == 1 and len(lines[0].get_segments()) == len(g.walls)
    points = [c for c in ax.collections if isinstance(c, PathCollection)]
    np.testing.assert_allclose(points[0].get_offsets(), g.lights)
    # The image covers the mask in metres, upright, one colour per mask value.
    image = ax.images[0]
    h, w = g.masks.shape
    np.testing.assert_allclose(image.get_extent(), [0, w * g.res, 0, h * g.res])
    np.testing.assert_array_equal(image.get_array(), g.masks)
    bar = fig.axes[1]
    np.testing.assert_array_equal(bar.get_yticks(), [-1, 0, 1])
    assert ax.get_title() == "0"
    plt.close(fig)


def test_display_floorplan_room_colours():
    g = floorplans.generate(0)
    fig = geom.display(g, title="plan")
    ax = fig.axes[0]
    image = ax.images[0]
    n = g.masks.max()
    # Distinct colours for the wall, free and room values (tab20 holds 20).
    colours = {tuple(image.cmap(image.norm(v))) for v in range(-1, n + 1)}
    assert len(colours) == min(n + 2, 20)
    assert list(fig.axes[1].get_yticks()) == list(range(-1, n + 1))
    assert ax.get_title() == "plan"
    plt.close(fig)


def test_display_onto_given_axes():
    fig, ax = plt.subplots()
    assert geom.display(toys.room_with_column(), ax=ax) is fig
    assert len(ax.images) == 1
    plt.close(fig)


def test_display_bad_input():
    with pytest.raises(ValueError, match="geometry"):
        geom.display([1, 2, 3])


@pytest.mark.parametrize("make", [toys.box, toys.column, toys.room_with_column, lambda: toys.maze(2, 4),
                                  lambda: floorplans.generate(3)])
def test_spawn_cells_clear_of_walls(make):
    """Every room cell's centre (where RandomSpawns puts agents) is more than an agent radius
    from every wall: cells within 1 cm of a wall are -1, so a centre is >= res/2 + 1 cm away."""
    import shapely

    from megastep_jax import core

    g = make()
    centres = geom.centers(np.argwhere(g.masks > 0), g.masks.shape, g.res)
    walls = shapely.union_all(shapely.linestrings(g.walls.astype(np.float64)))
    distance = shapely.distance(shapely.points(centres), walls)
    assert distance.min() >= g.res / 2 + geom.WALL_BUFFER - 1e-6 > core.AGENT_RADIUS


def test_plan_bounds_cover_the_plan_and_its_margin():
    """Deathmatch's 'outside' bounds come from the mask's extent: (W, H) * res covers every
    wall plus the 1 m margin, x against the width (megastep's own slip compared x to H)."""
    from megastep_jax.envs.runtime import plan_bounds

    plans = [toys.box(2.0, 4.0), floorplans.generate(5)]
    bounds = plan_bounds(plans)
    for g, b in zip(plans, bounds):
        top_right = g.walls.reshape(-1, 2).max(0) + geom.MARGIN
        assert np.all(b >= top_right - 1e-6) and np.all(b < top_right + g.res + 1e-6)
    np.testing.assert_allclose(bounds[0], [21 * 0.2, 31 * 0.2], rtol=1e-6)
