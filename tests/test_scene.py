"""Scenery construction: model, textures, lights, padding, determinism, errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from megastep_jax import core, geometry, scene, toys


def test_model_is_megasteps_octagon():
    m = scene.agent_model()
    assert m.shape == (8, 2, 2)
    np.testing.assert_allclose(m[0, 0], [-0.5 * 0.075, -0.075])
    np.testing.assert_allclose(m[:, 1], np.roll(m[:, 0], -1, axis=0))  # each corner joins the next
    # every corner lies within the collision disc, so the near plane hides an agent's own model
    assert np.linalg.norm(m.reshape(-1, 2), axis=1).max() < core.AGENT_RADIUS


def test_layout_padding_and_counts():
    geoms = [toys.box(), toys.room_with_column(), toys.box(2.0, 3.0)]
    s = scene.scenery(geoms, n_agents=2, key=jax.random.key(0))
    assert s.n_envs == 3 and s.n_agents == 2
    np.testing.assert_array_equal(s.n_lines, [16 + 4, 16 + 8, 16 + 4])
    np.testing.assert_array_equal(s.n_lights, [1, 2, 1])
    assert s.lines.shape == (3, 24, 2, 2)
    # walls follow the agent lines in order
    np.testing.assert_allclose(s.lines[1, 16:24], geoms[1].walls)
    # texels: ceil(length / 5 cm) per line, contiguous, padding lines have none
    widths = np.asarray(s.texel_widths)
    assert widths[0, 16] == 100 and widths[2, 16] == 40 and widths[2, 17] == 60
    assert np.all(widths[0, 20:] == 0)
    starts = np.asarray(s.texel_starts)
    np.testing.assert_array_equal(starts[0, 1:20], np.cumsum(widths[0, :19]))
    # light intensities in [0.5, 2]
    inten = np.asarray(s.lights[..., 2])[np.arange(2) < np.asarray(s.n_lights)[:, None]]
    assert np.all((inten >= 0.5) & (inten <= 2.0))


def test_textures_colours_and_pattern():
    s = scene.scenery([toys.box()], n_agents=1, key=jax.random.key(1))
    tex = np.asarray(s.textures[0])
    starts, widths = np.asarray(s.texel_starts[0]), np.asarray(s.texel_widths[0])
    # agent line 1 is green, line 3 red, pattern 1
    green = tex[starts[1]:starts[1] + widths[1]]
    np.testing.assert_allclose(green, np.tile([0, 0.5 ** 2.2, 0], (len(green), 1)), rtol=1e-5)  # megastep's 'g', decoded
    np.testing.assert_allclose(tex[starts[0]], [0.25 ** 2.2] * 3, rtol=1e-5)
    # wall 0 is the first palette colour, decoded, times a pattern in [0.5, 1)
    wall = tex[starts[8]:starts[8] + widths[8]]
    ratio = wall / core.gamma_decode(scene.WALL_PALETTE[0])
    assert np.all((ratio >= 0.5 - 1e-6) & (ratio < 1.0))
    assert np.allclose(ratio, ratio[:, :1], atol=1e-5)   # the pattern scales all channels alike


def test_same_key_same_scenery_different_key_differs():
    g = [toys.room_with_column(), toys.box()]
    a = scene.scenery(g, 1, jax.random.key(5))
    b = scene.scenery(g, 1, jax.random.key(5))
    c = scene.scenery(g, 1, jax.random.key(6))
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.textures, c.textures)
    # legacy uint32 keys work too
    scene.scenery(g, 1, jax.random.PRNGKey(5))


def test_baked_light_falls_off_and_shadows():
    column = toys.room_with_column()
    s = scene.scenery([column], n_agents=1, key=jax.random.key(0))
    baked = np.asarray(s.baked[0])
    starts = np.asarray(s.texel_starts[0])
    assert np.all(baked[:starts[8]] == 1.0)   # agent texels are lit at render time
    walls = baked[starts[8]:int(s.n_texels[0])]
    assert walls.min() >= core.AMBIENT - 1e-6 and walls.max() <= 1.0
    # The same room without the column, under the same lights: the column's shadow darkens
    # part of the outer walls and brightens none of them.
    room = geometry.geometry(column.walls[:4], column.lights, column.masks, column.res)
    open_room = scene.scenery([room], n_agents=1, key=jax.random.key(0))
    open_room = core.bake(open_room.replace(lights=s.lights))
    outer = slice(starts[8], starts[12])
    darkening = np.asarray(open_room.baked[0])[outer] - baked[outer]
    assert darkening.min() > -1e-6
    assert (darkening > 0.05).sum() > 20


@pytest.mark.parametrize("args,name", [
    (([], 1, jax.random.key(0)), "geometries"),
    (([toys.box()], 0, jax.random.key(0)), "n_agents"),
    (([toys.box()], 1, None), "key"),
    (([toys.box()], 1, 42), "key"),
    (([toys.box()], 1, jnp.zeros(3)), "key"),
    (([{"walls": np.zeros((1, 2, 2))}], 1, jax.random.key(0)), "geometries\\[0\\]"),
])
def test_bad_arguments(args, name):
    with pytest.raises(ValueError, match=name):
        scene.scenery(*args)


def test_geometry_validation():
    box = toys.box()
    with pytest.raises(ValueError, match="walls"):
        geometry.geometry(-box.walls, box.lights, box.masks)
    with pytest.raises(ValueError, match="walls"):
        geometry.geometry(box.walls[..., 0], box.lights, box.masks)
    with pytest.raises(ValueError, match="lights"):
        geometry.geometry(box.walls, box.lights * np.nan, box.masks)
    with pytest.raises(ValueError, match="res"):
        geometry.geometry(box.walls, box.lights, box.masks, res=0.0)
    with pytest.raises(ValueError, match="masks"):
        geometry.geometry(box.walls, box.lights, box.masks.astype(float))


def test_masks_and_coordinates():
    box = toys.box()
    m = box.masks
    assert m.shape == (36, 36)  # megastep's rule: int(7 m / 0.2) + 1
    ij = geometry.indices(np.array([[3.5, 3.5], [1.0, 3.0], [0.5, 0.5]]), m.shape, box.res)
    assert m[tuple(ij[0])] == 1 and m[tuple(ij[1])] == -1 and m[tuple(ij[2])] == 0
    np.testing.assert_allclose(geometry.centers(ij[0], m.shape, box.res), [3.5, 3.5], atol=box.res / 2)
