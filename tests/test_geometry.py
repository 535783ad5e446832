"""geometry: coordinates, masks, validation and display."""
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
    assert geom.display(toys.column(), ax=ax) is fig
    assert len(ax.images) == 1
    plt.close(fig)


def test_display_bad_input():
    with pytest.raises(ValueError, match="geometry"):
        geom.display([1, 2, 3])
