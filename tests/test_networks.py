"""The unfold intake: convolutions as matrix products equal nn.Conv's, parameters shared."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import networks
from megastep_jax import spaces
from megastep_jax.arrdict import dotdict


@pytest.mark.parametrize("width,kernel,stride", [(64, 8, 4), (16, 4, 2), (13, 3, 2), (5, 8, 1), (7, 3, 3)])
def test_unfold_conv_equals_nn_conv(width, kernel, stride):
    x = jax.random.normal(jax.random.PRNGKey(0), (3, width, 5))
    conv = nn.Conv(6, (kernel,), strides=(stride,), padding="SAME")
    params = conv.init(jax.random.PRNGKey(1), x)
    params = jax.tree_util.tree_map(lambda p: p + 0.1, params)  # a nonzero bias too
    ours = networks.UnfoldConv1D(6, kernel, stride).apply(params, x)
    np.testing.assert_allclose(ours, conv.apply(params, x), rtol=1e-5, atol=1e-5)


def test_unfold_and_conv_networks_share_parameters_and_outputs():
    obs_space = dotdict(rgb=spaces.MultiImage(2, 3, 1, 32), imu=spaces.MultiVector(2, 3))
    act_space = dotdict(movement=spaces.MultiDiscrete(2, 7))
    kw = (("conv_features", (4, 8)), ("conv_kernels", (8, 4)), ("conv_strides", (4, 2)))
    nets = {k: networks.ActorCritic.from_spaces(obs_space, act_space, width=16, core="lstm",
                                                image_kwargs=kw, intake=k) for k in ("conv", "unfold")}
    obs = dict(rgb=jax.random.uniform(jax.random.PRNGKey(0), (3, 4, 2, 3, 1, 32)),
               imu=jax.random.normal(jax.random.PRNGKey(1), (3, 4, 2, 3)))
    reset = jnp.zeros((3, 4, 2), bool).at[0].set(True)
    carry = nets["conv"].initial_carry((4, 2))
    params = nets["conv"].init(jax.random.PRNGKey(2), carry, obs, reset)
    params_unfold = nets["unfold"].init(jax.random.PRNGKey(2), carry, obs, reset)
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(params_unfold)
    out_conv = nets["conv"].apply(params, carry, obs, reset)
    out_unfold = nets["unfold"].apply(params, carry, obs, reset)
    for a, b in zip(jax.tree_util.tree_leaves(out_conv), jax.tree_util.tree_leaves(out_unfold)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="intake"):
        networks.ActorCritic.from_spaces(obs_space, act_space, intake="fft")
