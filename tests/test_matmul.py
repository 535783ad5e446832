"""agents.matmul: the dense product whose weight gradient is a plain matrix product."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import matmul


def _plain_grads(x, w, g):
    return jax.vjp(lambda x, w: x @ w, x, w)[1](g)


@pytest.mark.parametrize("x_shape,w_shape", [((512, 64), (64, 192)),     # x the narrower
                                             ((4, 128, 32), (32, 8)),    # g the narrower, 3D x
                                             ((3, 5, 7), (7, 7)),        # a tie
                                             ((1, 1), (1, 3))])
def test_value_and_gradients_equal_the_plain_product(x_shape, w_shape):
    kx, kw, kg = jax.random.split(jax.random.PRNGKey(0), 3)
    x, w = jax.random.normal(kx, x_shape), jax.random.normal(kw, w_shape)
    g = jax.random.normal(kg, (*x_shape[:-1], w_shape[1]))
    y, vjp = jax.vjp(matmul.matmul, x, w)
    np.testing.assert_array_equal(y, x @ w)
    for ours, plain in zip(vjp(g), _plain_grads(x, w, g)):
        assert ours.shape == plain.shape and ours.dtype == plain.dtype
        np.testing.assert_allclose(ours, plain, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(matmul.weight_grad(x, g), _plain_grads(x, w, g)[1], rtol=2e-5, atol=2e-5)


def test_forward_mode_equals_the_plain_product():
    kx, kw, kt = jax.random.split(jax.random.PRNGKey(4), 3)
    for x_shape, w_shape in (((64, 5), (5, 12)), ((64, 12), (12, 5)), ((64, 12), (12, 1))):
        x, w = jax.random.normal(kx, x_shape), jax.random.normal(kw, w_shape)
        tx, tw = jax.random.normal(kt, x_shape), jax.random.normal(kt, w_shape)
        ours = jax.jvp(matmul.matmul, (x, w), (tx, tw))
        plain = jax.jvp(lambda x, w: x @ w, (x, w), (tx, tw))
        for a, b in zip(ours, plain):
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5)
    hessian = jax.hessian(lambda w: jnp.sum(jnp.tanh(matmul.matmul(x, w))))(w)
    np.testing.assert_allclose(hessian, jax.hessian(lambda w: jnp.sum(jnp.tanh(x @ w)))(w),
                               rtol=1e-4, atol=1e-5)


def test_jitted_and_vmapped_over_weights():
    kx, kw, kg = jax.random.split(jax.random.PRNGKey(1), 3)
    x, w = jax.random.normal(kx, (6, 10, 5)), jax.random.normal(kw, (3, 5, 4))  # 3 members' weights
    loss = lambda f: lambda w: jnp.sum(jnp.sin(f(x, w)))
    ours = jax.jit(jax.vmap(jax.grad(loss(matmul.matmul))))(w)
    plain = jax.vmap(jax.grad(loss(lambda x, w: x @ w)))(w)
    np.testing.assert_allclose(ours, plain, rtol=2e-5, atol=2e-5)


def test_dot_general_routes_only_a_dense_contraction():
    x, w = jnp.ones((2, 3, 4)), jnp.ones((4, 5))
    dense = (((2,), (0,)), ((), ()))
    assert "custom_jvp" in str(jax.make_jaxpr(lambda x, w: matmul.dot_general(x, w, dense))(x, w))
    # another contraction, a precision or an element type: lax.dot_general itself
    other = (((1,), (0,)), ((), ()))
    v = jnp.ones((3, 5))
    for call in (lambda: matmul.dot_general(x, v, other),
                 lambda: matmul.dot_general(x, w, dense, precision=jax.lax.Precision.HIGHEST),
                 lambda: matmul.dot_general(x, w, dense, preferred_element_type=jnp.float32)):
        assert "custom_jvp" not in str(jax.make_jaxpr(call)())
    np.testing.assert_array_equal(matmul.dot_general(x, v, other),
                                  jax.lax.dot_general(x, v, other))


def test_a_dense_layer_with_it_has_flax_parameters_and_gradients():
    x = jax.random.normal(jax.random.PRNGKey(2), (8, 6))
    ours, plain = nn.Dense(3, dot_general=matmul.dot_general), nn.Dense(3)
    params = plain.init(jax.random.PRNGKey(3), x)
    assert jax.tree_util.tree_structure(ours.init(jax.random.PRNGKey(3), x)) == \
        jax.tree_util.tree_structure(params)
    loss = lambda m: lambda p: jnp.sum(jnp.tanh(m.apply(p, x)))
    g_ours, g_plain = jax.grad(loss(ours))(params), jax.grad(loss(plain))(params)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6),
                           g_ours, g_plain)
