"""The shared argument checks: messages name the argument and what was expected."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from megastep_jax import validation as v


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "3", None])
def test_positive_int_refuses(bad):
    with pytest.raises(ValueError, match=r"^n_envs: expected a positive int"):
        v.positive_int("n_envs", bad)


def test_positive_int_accepts_numpy_ints_and_none_where_allowed():
    assert v.positive_int("n", np.int64(3)) == 3 and isinstance(v.positive_int("n", np.int64(3)), int)
    assert v.positive_int("n", None, or_none=True) is None
    with pytest.raises(ValueError, match="or None"):
        v.positive_int("n", 0, or_none=True)


def test_scalar_in_range_bounds_and_tracers():
    v.scalar_in_range("fov", 90.0, 0.0, 180.0)
    for bad in (0.0, 180.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"fov: expected a value in \(0, 180\)"):
            v.scalar_in_range("fov", bad, 0.0, 180.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        v.scalar_in_range("restitution", 1.5, 0.0, 1.0, lo_open=False, hi_open=False)
    with pytest.raises(ValueError, match="expected a scalar"):
        v.scalar_in_range("fov", jnp.ones(2), 0.0, 180.0)
    # Under jit only the shape is known: no error for a traced value out of range.
    jax.jit(lambda x: v.scalar_in_range("fov", x, 0.0, 180.0))(jnp.float32(500.0))


def test_array_shape_and_finiteness():
    with pytest.raises(ValueError, match="x: expected a floating dtype, got int32"):
        v.array("x", jnp.zeros(3, jnp.int32), "f")
    with pytest.raises(ValueError, match="x: expected 2 dimensions"):
        v.array("x", jnp.zeros(3), "f", 2)
    with pytest.raises(ValueError, match=r"x: expected shape \(\*, 2\), got \(3, 3\)"):
        v.shape("x", np.zeros((3, 3)), (None, 2))
    with pytest.raises(ValueError, match="finite"):
        v.finite("x", np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="strictly positive"):
        v.finite_positive("x", np.array([1.0, 0.0]))
    with pytest.raises(ValueError, match=r"mode: expected one of \('a', 'b'\)"):
        v.one_of("mode", "c", ("a", "b"))
    with pytest.raises(ValueError, match=r"p: expected a number in \[0, 1\]"):
        v.fraction("p", 1.2)
