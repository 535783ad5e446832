"""Ragged arrays: the concepts seed's examples, both backends, jit, and errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from megastep_jax import scene, toys
from megastep_jax.ragged import Ragged, RaggedJax, RaggedNumpy

VALS = np.array([0., 1., 2., 3., 4., 5.])
WIDTHS = np.array([3, 1, 2])


@pytest.mark.parametrize("lib", [np, jnp])
def test_seed_example(lib):
    r = Ragged(lib.asarray(VALS), lib.asarray(WIDTHS))
    assert isinstance(r, RaggedNumpy if lib is np else RaggedJax)
    np.testing.assert_array_equal(r[0], [0, 1, 2])
    np.testing.assert_array_equal(r[1], [3])
    np.testing.assert_array_equal(r[2], [4, 5])
    np.testing.assert_array_equal(r[-1], [4, 5])
    np.testing.assert_array_equal(r.starts, [0, 3, 4])
    np.testing.assert_array_equal(r.ends, [3, 4, 6])
    np.testing.assert_array_equal(r.inverse, [0, 0, 0, 1, 2, 2])
    head = r[:2]
    np.testing.assert_array_equal(head.widths, [3, 1])
    np.testing.assert_array_equal(head.vals, [0, 1, 2, 3])
    tail = r[1:]
    np.testing.assert_array_equal(tail[1], [4, 5])
    assert len(r[2:2]) == 0 and len(r) == 3
    assert repr(r[:2]).endswith("([3 1])")


def test_conversions_round_trip():
    r = Ragged(VALS, WIDTHS)
    back = r.jaxify().numpyify()
    np.testing.assert_array_equal(back.vals, VALS)
    np.testing.assert_array_equal(back.inverse, r.inverse)


def test_jax_ragged_is_a_pytree_and_works_under_jit():
    r = Ragged(jnp.asarray(VALS), jnp.asarray(WIDTHS))
    sums = jax.jit(lambda r: jax.ops.segment_sum(r.vals, r.inverse, num_segments=3))(r)
    np.testing.assert_allclose(sums, [3, 3, 9])
    leaves = jax.tree_util.tree_leaves(r)
    assert len(leaves) == 2   # vals and widths; starts, ends and inverse are derived
    doubled = jax.vmap(lambda v: r.replace(vals=v * 2).vals.sum())(jnp.stack([r.vals, r.vals]))
    np.testing.assert_allclose(doubled, [30, 30])
    with pytest.raises(ValueError, match="concrete"):
        jax.jit(lambda r: r[0])(r)


@pytest.mark.parametrize("vals,widths,name", [
    (VALS, np.array([3, 1, 1]), "widths"),          # does not sum to len(vals)
    (VALS, np.array([3, -1, 4]), "widths"),         # negative
    (VALS, np.array([3., 1., 2.]), "widths"),       # not integers
    (np.float32(1.0), np.array([1]), "vals"),        # no leading axis
])
def test_bad_input(vals, widths, name):
    with pytest.raises(ValueError, match=name):
        Ragged(vals, widths)
    with pytest.raises(ValueError, match=name):
        Ragged(jnp.asarray(vals), jnp.asarray(widths))


def test_bad_index():
    r = Ragged(VALS, WIDTHS)
    with pytest.raises(IndexError):
        r[3]
    with pytest.raises(ValueError, match="index"):
        r[::2]
    with pytest.raises(ValueError, match="index"):
        r["a"]


def test_scenery_texels_are_a_ragged_over_lines():
    s = scene.scenery([toys.box()], n_agents=1, key=jax.random.key(0))
    r = scene.texels(s, 0)
    assert len(r) == int(s.n_lines[0])
    np.testing.assert_array_equal(r.starts, np.asarray(s.texel_starts[0, :len(r)]))
    wall = r[8]  # the first wall: 5 m of 5 cm texels
    assert wall.shape == (100, 3)
