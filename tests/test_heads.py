"""Heads built from spaces, their distributions, and the actor-critic's recurrent core."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import heads, networks
from megastep_jax import spaces
from megastep_jax.arrdict import arrdict, dotdict

A = 2
TINY_CONVS = (("conv_features", (4, 6)), ("conv_kernels", (4, 3)), ("conv_strides", (2, 2)))
OBS_SPACE = dotdict(rgb=spaces.MultiImage(A, 3, 1, 16), imu=spaces.MultiVector(A, 3))
ACTION_SPACE = dotdict(movement=spaces.MultiDiscrete(A, 7), fire=spaces.MultiDiscrete(A, 2))


def obs_of(batch, key=jax.random.PRNGKey(0)):
    k1, k2 = jax.random.split(key)
    return arrdict(rgb=jax.random.uniform(k1, (*batch, 3, 1, 16)),
                   imu=jax.random.normal(k2, (*batch, 3)))


def test_intake_of_a_dict_space_maps_any_batch_to_width():
    head = heads.intake(OBS_SPACE, 12, image_kwargs=TINY_CONVS)
    assert isinstance(head, heads.ConcatIntake)
    params = head.init(jax.random.PRNGKey(0), obs_of((1, A)))
    for batch in [(A,), (5, A), (3, 5, A)]:
        assert head.apply(params, obs_of(batch)).shape == (*batch, 12)


def test_image_intake_convolves_along_the_width_only():
    space = spaces.MultiImage(A, 3, 2, 16)
    head = heads.intake(space, 8, image_kwargs=TINY_CONVS)
    params = head.init(jax.random.PRNGKey(0), jnp.zeros((A, 3, 2, 16)))["params"]
    # 1D kernels: (kernel width, channels x height, features)
    assert params["Conv_0"]["kernel"].shape == (4, 6, 4)
    assert params["Conv_1"]["kernel"].shape == (3, 4, 6)
    # SAME padding, strides 2 and 2: 16 -> 8 -> 4 positions of 6 features
    assert params["Dense_0"]["kernel"].shape == (4 * 6, 8)
    x = jax.random.uniform(jax.random.PRNGKey(1), (A, 3, 2, 16))
    y = head.apply({"params": params}, x)
    assert y.shape == (A, 8)
    # agents are independent streams: permuting them permutes the outputs
    np.testing.assert_allclose(head.apply({"params": params}, x[::-1]), y[::-1], rtol=1e-6)


def test_uint8_images_are_scaled():
    space = spaces.MultiImage(1, 1, 1, 8)
    head = heads.intake(space, 4, image_kwargs=(("conv_features", (2,)), ("conv_kernels", (3,)),
                                                ("conv_strides", (1,))))
    x = jnp.arange(8, dtype=jnp.uint8).reshape(1, 1, 1, 8) * 30
    params = head.init(jax.random.PRNGKey(0), x)
    np.testing.assert_allclose(head.apply(params, x), head.apply(params, x / 255.0), rtol=1e-6)


def test_dict_output_keeps_key_order_and_gives_log_probabilities():
    head = heads.output(ACTION_SPACE, 12)
    x = jax.random.normal(jax.random.PRNGKey(0), (5, A, 12))
    logits = head.apply(head.init(jax.random.PRNGKey(1), x), x)
    assert isinstance(logits, arrdict)
    assert list(logits) == ["movement", "fire"]
    assert logits.movement.shape == (5, A, 7) and logits.fire.shape == (5, A, 2)
    for l in logits.values():
        np.testing.assert_allclose(jnp.exp(l).sum(-1), 1.0, rtol=1e-5)


def test_value_output_is_a_scalar_per_stream():
    head = heads.ValueOutput(6)
    x = jnp.ones((3, 4, 6))
    assert head.apply(head.init(jax.random.PRNGKey(0), x), x).shape == (3, 4)


def test_builders_and_heads_reject_bad_input():
    with pytest.raises(ValueError, match="space"):
        heads.intake(spaces.MultiDiscrete(1, 3), 8)
    with pytest.raises(ValueError, match="space"):
        heads.output(spaces.MultiVector(1, 3), 8)
    with pytest.raises(ValueError, match="width"):
        heads.intake(OBS_SPACE, 0)
    with pytest.raises(ValueError, match="space"):
        heads.output(dotdict(), 8)
    head = heads.intake(spaces.MultiVector(1, 3), 8)
    with pytest.raises(ValueError, match=r"obs: expected an array ending in shape \(3,\)"):
        head.init(jax.random.PRNGKey(0), jnp.zeros((1, 4)))
    head = heads.intake(OBS_SPACE, 8, image_kwargs=TINY_CONVS)
    with pytest.raises(ValueError, match="obs: expected a dict with keys"):
        head.init(jax.random.PRNGKey(0), arrdict(rgb=jnp.zeros((A, 3, 1, 16))))


def test_distributions_over_dict_actions():
    logits = arrdict(movement=jnp.log(jnp.array([[0.5, 0.25, 0.25]])),
                     fire=jnp.log(jnp.array([[0.1, 0.9]])))
    actions = arrdict(movement=jnp.array([1]), fire=jnp.array([1]))
    np.testing.assert_allclose(heads.log_prob(logits, actions), np.log([0.25 * 0.9]), rtol=1e-6)
    expected = -(0.5 * np.log(0.5) + 2 * 0.25 * np.log(0.25)) - (0.1 * np.log(0.1) + 0.9 * np.log(0.9))
    np.testing.assert_allclose(heads.entropy(logits), [expected], rtol=1e-6)
    np.testing.assert_array_equal(heads.mode(logits).movement, [0])
    np.testing.assert_array_equal(heads.mode(logits).fire, [1])
    many = jax.tree_util.tree_map(lambda l: jnp.broadcast_to(l, (20000, l.shape[-1])), logits)
    drawn = heads.sample(jax.random.PRNGKey(0), many)
    assert drawn.movement.dtype == jnp.int32 and drawn.movement.shape == (20000,)
    np.testing.assert_allclose(np.bincount(drawn.fire, minlength=2) / 20000, [0.1, 0.9], atol=0.01)
    np.testing.assert_allclose(np.bincount(drawn.movement, minlength=3) / 20000, [0.5, 0.25, 0.25],
                               atol=0.015)


@pytest.mark.parametrize("core", ["lstm", "mlp"])
def test_actor_critic_shapes(core):
    net = networks.ActorCritic.from_spaces(OBS_SPACE, ACTION_SPACE, width=8, core=core,
                                           image_kwargs=TINY_CONVS)
    T, B = 3, 4
    carry = net.initial_carry((B, A))
    reset = jnp.zeros((T, B, A), bool)
    params = net.init(jax.random.PRNGKey(0), carry, obs_of((T, B, A)), reset)
    carry, logits, value = net.apply(params, carry, obs_of((T, B, A)), reset)
    assert logits.movement.shape == (T, B, A, 7) and logits.fire.shape == (T, B, A, 2)
    assert value.shape == (T, B, A)
    if core == "lstm":
        assert [c.shape for c in carry] == [(B, A, 8), (B, A, 8)]
    else:
        assert carry == ()


def test_lstm_starts_afresh_where_reset():
    net = networks.ActorCritic.from_spaces(OBS_SPACE, ACTION_SPACE, width=8, core="lstm",
                                           image_kwargs=TINY_CONVS)
    T, B, k = 6, 3, 2
    obs = obs_of((T, B, A), jax.random.PRNGKey(3))
    zeros = net.initial_carry((B, A))
    params = net.init(jax.random.PRNGKey(0), zeros, obs, jnp.zeros((T, B, A), bool))
    reset = jnp.zeros((T, B, A), bool).at[k].set(True)
    _, logits, value = net.apply(params, zeros, obs, reset)
    # the same steps from k on, started with a fresh carry
    _, logits_k, value_k = net.apply(params, zeros, obs[k:], jnp.zeros((T - k, B, A), bool))
    np.testing.assert_allclose(value[k:], value_k, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(logits.movement[k:], logits_k.movement, rtol=1e-5, atol=1e-6)
    # without the reset the past matters
    _, _, value_nr = net.apply(params, zeros, obs, jnp.zeros((T, B, A), bool))
    assert not np.allclose(value_nr[k:], value_k, atol=1e-6)


def test_actor_critic_rejects_unknown_core():
    with pytest.raises(ValueError, match="core"):
        networks.ActorCritic.from_spaces(OBS_SPACE, ACTION_SPACE, core="rnn")


def test_empty_and_constant_observations_get_a_learned_constant_intake():
    space = dotdict(e=spaces.MultiEmpty(A), c=spaces.MultiConstant(A), imu=spaces.MultiVector(A, 3))
    head = heads.intake(space, 6)
    obs = arrdict(e=jnp.zeros((5, A, 0)), c=jnp.zeros((5, A), jnp.int32),
                  imu=jax.random.normal(jax.random.PRNGKey(0), (5, A, 3)))
    params = head.init(jax.random.PRNGKey(1), obs)
    y = head.apply(params, obs)
    assert y.shape == (5, A, 6)
    alone = heads.intake(spaces.MultiEmpty(A), 4)
    p = alone.init(jax.random.PRNGKey(2), jnp.zeros((A, 0)))
    out = alone.apply(p, jnp.zeros((3, A, 0)))
    assert out.shape == (3, A, 4)
    np.testing.assert_array_equal(out[0, 0], out[2, 1])   # the same for every stream
    # it is learned: the gradient of its output reaches the parameter
    g = jax.grad(lambda p: alone.apply(p, jnp.zeros((3, A, 0))).sum())(p)
    assert np.all(np.asarray(jax.tree_util.tree_leaves(g)[0]) == 3 * A)   # d(sum)/d(value)
    with pytest.raises(ValueError, match="obs"):
        alone.apply(p, jnp.zeros((A, 1)))


def test_constant_action_head_has_one_choice_and_no_say():
    space = dotdict(movement=spaces.MultiDiscrete(A, 7), wait=spaces.MultiConstant(A))
    head = heads.output(space, 8)
    x = jax.random.normal(jax.random.PRNGKey(0), (5, A, 8))
    params = head.init(jax.random.PRNGKey(1), x)
    assert "proj_wait" not in params["params"] and "proj_movement" in params["params"]
    logits = head.apply(params, x)
    assert logits["wait"].shape == (5, A, 1)
    actions = heads.sample(jax.random.PRNGKey(2), logits)
    assert actions["wait"].shape == (5, A) and not actions["wait"].any()
    assert bool(spaces.contains(space, actions))
    only_movement = heads.log_prob(logits["movement"], actions["movement"])
    np.testing.assert_allclose(heads.log_prob(logits, actions), only_movement, rtol=1e-6)
    np.testing.assert_allclose(heads.entropy(logits), heads.entropy(logits["movement"]), rtol=1e-6)
    assert not heads.mode(logits)["wait"].any()
    with pytest.raises(ValueError, match="MultiEmpty"):
        heads.output(spaces.MultiEmpty(A), 8)
