"""The unfold intake: convolutions as matrix products equal nn.Conv's, parameters shared."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import heads, networks
from megastep_jax import spaces
from megastep_jax.arrdict import dotdict


@pytest.mark.parametrize("width,kernel,stride", [(64, 8, 4), (16, 4, 2), (13, 3, 2), (5, 8, 1), (7, 3, 3),
                                                   (9, 2, 2), (12, 4, 4), (10, 6, 3), (11, 6, 2)])
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


def test_stacked_intake_reads_same_sized_images_as_one_strip():
    A = 2
    space = dotdict(rgb=spaces.MultiImage(A, 3, 1, 32), d=spaces.MultiImage(A, 1, 1, 32),
                    imu=spaces.MultiVector(A, 3), big=spaces.MultiImage(A, 1, 2, 16))
    kw = (("conv_features", (4, 8)), ("conv_kernels", (8, 4)), ("conv_strides", (4, 2)))
    net = networks.intake(space, 16, "stacked", kw)
    assert isinstance(net, networks.StackedIntake)
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    obs = {k: jax.random.uniform(kk, (5, A, *s.shape[1:])) for (k, s), kk in zip(space.items(), keys)}
    params = net.init(jax.random.PRNGKey(1), obs)["params"]
    # one strip for rgb and d (4 channels), its own for the 2 x 16 image, the vector apart
    assert sorted(params) == ["Dense_0", "intake_big", "intake_imu", "intake_rgb+d"]
    assert params["intake_rgb+d"]["Conv_0"]["kernel"].shape == (8, 4, 4)
    out = net.apply({"params": params}, obs)
    assert out.shape == (5, A, 16)

    strip = networks.UnfoldImageIntake(spaces.MultiImage(A, 4, 1, 32), 16, **dict(kw))
    big = networks.UnfoldImageIntake(space["big"], 16, **dict(kw))
    imu = networks.intake(space["imu"], 16, "unfold")
    ys = [strip.apply({"params": params["intake_rgb+d"]}, jnp.concatenate([obs["rgb"], obs["d"]], -3)),
          imu.apply({"params": params["intake_imu"]}, obs["imu"]),
          big.apply({"params": params["intake_big"]}, obs["big"])]
    dense = nn.Dense(16).apply({"params": params["Dense_0"]}, jnp.concatenate(ys, -1))
    np.testing.assert_allclose(out, jax.nn.relu(dense), rtol=1e-5, atol=1e-6)

    # uint8 pixels are read as [0, 1], as the other intakes do
    as_bytes = dict(obs, rgb=(obs["rgb"] * 255).astype(jnp.uint8))
    scaled = dict(obs, rgb=as_bytes["rgb"] / 255.0)
    np.testing.assert_allclose(net.apply({"params": params}, as_bytes),
                               net.apply({"params": params}, scaled), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="obs"):
        net.apply({"params": params}, {k: v for k, v in obs.items() if k != "d"})
    with pytest.raises(ValueError, match="'d' ending in shape"):
        net.apply({"params": params}, dict(obs, d=obs["d"][..., :16]))


def test_stacked_network_runs_and_falls_back_to_unfold_for_a_lone_image():
    act_space = dotdict(movement=spaces.MultiDiscrete(1, 7))
    obs_space = dotdict(rgb=spaces.MultiImage(1, 3, 1, 16), d=spaces.MultiImage(1, 1, 1, 16))
    net = networks.ActorCritic.from_spaces(obs_space, act_space, width=8, core="mlp", intake="stacked")
    obs = dict(rgb=jnp.ones((2, 3, 1, 3, 1, 16)), d=jnp.zeros((2, 3, 1, 1, 1, 16)))
    reset = jnp.zeros((2, 3, 1), bool)
    params = net.init(jax.random.PRNGKey(0), (), obs, reset)
    assert "intake_rgb+d" in params["params"]["intake"]
    _, logits, value = net.apply(params, (), obs, reset)
    assert logits["movement"].shape == (2, 3, 1, 7) and value.shape == (2, 3, 1)
    # a bare image space has nothing to stack: the unfold intake, same parameters
    lone = spaces.MultiImage(1, 3, 1, 16)
    a = networks.intake(lone, 8, "stacked")
    assert isinstance(a, networks.UnfoldImageIntake)


def test_previous_action_and_reward_inputs():
    act_space = dotdict(movement=spaces.MultiDiscrete(2, 3), fire=spaces.MultiDiscrete(2, 2))
    obs_space = dotdict(vec=spaces.MultiVector(2, 4))
    space = networks.previous_space(obs_space, act_space)
    assert list(space) == ["vec", "prev_action", "prev_reward"]
    assert space["prev_action"].shape == (2, 5) and space["prev_reward"].shape == (2, 1)
    obs = dict(vec=jnp.zeros((3, 2, 4)))
    action = dict(movement=jnp.array([[0, 2], [1, 1], [2, 0]]), fire=jnp.array([[1, 0], [0, 1], [1, 1]]))
    reward = jnp.array([[0.5, -1.0], [2.0, 0.0], [1.0, 3.0]])
    first = jnp.array([[False, False], [True, False], [False, True]])
    out = networks.add_previous(obs, action, reward, first, act_space)
    assert out["vec"] is obs["vec"]
    want_action = np.zeros((3, 2, 5))
    for e in range(3):
        for a in range(2):
            if not first[e, a]:
                want_action[e, a, action["movement"][e, a]] = 1
                want_action[e, a, 3 + action["fire"][e, a]] = 1
    np.testing.assert_array_equal(out["prev_action"], want_action)
    np.testing.assert_array_equal(out["prev_reward"][..., 0], np.where(first, 0.0, reward))
    fresh = networks.add_previous(obs, None, jnp.zeros((3, 2)), jnp.ones((3, 2), bool), act_space)
    assert not np.any(fresh["prev_action"]) and fresh["prev_action"].shape == (3, 2, 5)
    net = networks.ActorCritic.from_spaces(space, act_space, width=8, core="mlp", intake="stacked")
    assert networks.uses_previous(net)
    assert not networks.uses_previous(networks.ActorCritic.from_spaces(obs_space, act_space, width=8))
    with pytest.raises(ValueError, match="obs_space"):
        networks.previous_space(space, act_space)  # already has the keys
    with pytest.raises(ValueError, match="obs_space"):
        networks.previous_space(spaces.MultiVector(2, 4), act_space)
    with pytest.raises(ValueError, match="action_space"):
        networks.previous_space(obs_space, spaces.MultiVector(2, 4))


def test_critic_keys_reach_the_value_and_never_the_policy():
    act_space = dotdict(movement=spaces.MultiDiscrete(1, 3))
    obs_space = dotdict(d=spaces.MultiImage(1, 1, 1, 8), budget=spaces.MultiVector(1, 2))
    net = networks.ActorCritic.from_spaces(obs_space, act_space, width=8, core="mlp", intake="stacked",
                                           critic_keys=("budget",))
    rng = np.random.default_rng(0)
    obs = dict(d=jnp.asarray(rng.uniform(size=(2, 3, 1, 1, 1, 8)), jnp.float32),
               budget=jnp.asarray(rng.uniform(size=(2, 3, 1, 2)), jnp.float32))
    reset = jnp.zeros((2, 3, 1), bool)
    params = net.init(jax.random.PRNGKey(0), (), obs, reset)
    assert "intake_budget" not in params["params"]["intake"]  # the actor's intake lacks it

    def outputs(budget):
        _, logits, value = net.apply(params, (), dict(obs, budget=budget), reset)
        return logits["movement"], value

    (logits, value), (dlogits, dvalue) = jax.jvp(outputs, (obs["budget"],), (jnp.ones_like(obs["budget"]),))
    assert logits.shape == (2, 3, 1, 3) and value.shape == (2, 3, 1)
    assert np.all(np.asarray(dlogits) == 0)   # the policy does not depend on the critic's keys
    assert np.any(np.asarray(dvalue) != 0)    # the value does
    for bad in (("imu",), ("d", "budget"), ("budget", "budget"), ["budget"]):
        with pytest.raises(ValueError, match="critic_keys"):
            networks.ActorCritic.from_spaces(obs_space, act_space, width=8, critic_keys=bad)


def _stack_reference(x, history, reset):
    """stack_history one step and one stream at a time, from its definition."""
    x, history, reset = np.asarray(x), np.asarray(history), np.asarray(reset)
    T, B, F = x.shape
    k1 = history.shape[-2]
    out = np.zeros((T, B, (k1 + 1) * F), np.float32)
    for b in range(B):
        past = list(history[b])  # most recent first, zeros where already cut
        for t in range(T):
            if reset[t, b]:
                past = [np.zeros(F, np.float32)] * k1
            out[t, b] = np.concatenate([x[t, b]] + past)
            past = [x[t, b]] + past[:k1 - 1]
    return out


def test_stack_history_matches_a_step_by_step_reference_and_splits():
    rng = np.random.default_rng(0)
    T, B, F, K = 9, 5, 3, 4
    x = jnp.asarray(rng.normal(size=(T, B, F)), jnp.float32)
    history = jnp.asarray(rng.normal(size=(B, K - 1, F)), jnp.float32)
    reset = jnp.asarray(rng.uniform(size=(T, B)) < 0.25).at[0, 0].set(True).at[:, 1].set(False)
    stacked, last = networks.stack_history(x, history, reset)
    assert stacked.shape == (T, B, K * F) and last.shape == (B, K - 1, F)
    np.testing.assert_allclose(stacked, _stack_reference(x, history, reset), rtol=0, atol=0)
    # stream 1 never resets: its first steps read the history, most recent first
    np.testing.assert_array_equal(stacked[0, 1, F:], np.asarray(history[1]).reshape(-1))
    np.testing.assert_array_equal(stacked[2, 1], np.concatenate([x[2, 1], x[1, 1], x[0, 1], history[1, 0]]))
    # two calls, the second from the first's history, equal one call over the whole sequence
    a, h = networks.stack_history(x[:4], history, reset[:4])
    b, h2 = networks.stack_history(x[4:], h, reset[4:])
    np.testing.assert_array_equal(jnp.concatenate([a, b]), stacked)
    np.testing.assert_array_equal(h2, last)
    # nothing from before an episode's start reaches its steps
    changed = x.at[:3].add(100.0)
    reset2 = reset.at[3].set(True)
    s1, _ = networks.stack_history(x, history, reset2)
    s2, _ = networks.stack_history(changed, history * 7, reset2)
    np.testing.assert_array_equal(s1[3:], s2[3:])
    assert not np.allclose(s1[:3], s2[:3])
    # K = 1: the features alone
    one, none = networks.stack_history(x, jnp.zeros((B, 0, F)), reset)
    np.testing.assert_array_equal(one, x)
    assert none.shape == (B, 0, F)


def test_stacked_history_network_steps_like_its_sequence_and_masks_episode_starts():
    act_space = dotdict(movement=spaces.MultiDiscrete(1, 3))
    obs_space = dotdict(d=spaces.MultiImage(1, 1, 1, 8), imu=spaces.MultiVector(1, 2))
    net = networks.ActorCritic.from_spaces(obs_space, act_space, width=8, core="mlp", intake="stacked",
                                           stack=3)
    T, B = 6, 4
    rng = np.random.default_rng(1)
    obs = dict(d=jnp.asarray(rng.uniform(size=(T, B, 1, 1, 1, 8)), jnp.float32),
               imu=jnp.asarray(rng.normal(size=(T, B, 1, 2)), jnp.float32))
    reset = jnp.zeros((T, B, 1), bool).at[0].set(True).at[3, 0].set(True)
    carry = net.initial_carry((B, 1))
    assert carry[0] == () and carry[1].shape == (B, 1, 2, 8) and not np.any(carry[1])
    params = net.init(jax.random.PRNGKey(0), carry, obs, reset)
    assert params["params"]["core"]["Dense_0"]["kernel"].shape == (3 * 8, 8)
    c_seq, logits, value = net.apply(params, carry, obs, reset)
    assert logits["movement"].shape == (T, B, 1, 3) and value.shape == (T, B, 1)
    # one step at a time (as a rollout acts) gives the same outputs and carry
    c, vs = carry, []
    for t in range(T):
        c, _, v = net.apply(params, c, jax.tree_util.tree_map(lambda o: o[t:t + 1], obs), reset[t:t + 1])
        vs.append(v[0])
    np.testing.assert_allclose(jnp.stack(vs), value, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c[1], c_seq[1], rtol=1e-6, atol=1e-6)
    # the past matters within an episode, and not across its start
    other = dict(obs, imu=obs["imu"].at[:3].add(5.0))
    _, _, v2 = net.apply(params, carry, other, reset)
    np.testing.assert_allclose(v2[3:, 0], value[3:, 0], rtol=1e-6, atol=1e-6)  # stream 0 restarted at 3
    assert not np.allclose(v2[3:5, 1], value[3:5, 1])  # stream 1 still sees steps 1-2 at 3-4
    np.testing.assert_allclose(v2[5:, 1], value[5:, 1], rtol=1e-6, atol=1e-6)  # 3 steps later: gone
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="stack"):
            networks.ActorCritic.from_spaces(obs_space, act_space, width=8, stack=bad)


def test_merged_intake_reads_the_vectors_as_one():
    A = 2
    space = dotdict(rgb=spaces.MultiImage(A, 3, 1, 16), imu=spaces.MultiVector(A, 3),
                    d=spaces.MultiImage(A, 1, 1, 16), prev=spaces.MultiVector(A, 5))
    kw = (("conv_features", (4,)), ("conv_kernels", (4,)), ("conv_strides", (4,)))
    net = networks.intake(space, 8, "merged", kw)
    assert isinstance(net, networks.StackedIntake) and net.merge_vectors
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    obs = {k: jax.random.uniform(kk, (3, A, *s.shape[1:])) for (k, s), kk in zip(space.items(), keys)}
    params = net.init(jax.random.PRNGKey(1), obs)["params"]
    assert sorted(params) == ["Dense_0", "intake_imu+prev", "intake_rgb+d"]
    assert params["intake_imu+prev"]["Dense_0"]["kernel"].shape == (8, 8)  # 3 + 5 inputs
    out = net.apply({"params": params}, obs)
    vec = heads.MultiVectorIntake(spaces.MultiVector(A, 8), 8).apply(
        {"params": params["intake_imu+prev"]}, jnp.concatenate([obs["imu"], obs["prev"]], -1))
    strip = networks.UnfoldImageIntake(spaces.MultiImage(A, 4, 1, 16), 8, **dict(kw)).apply(
        {"params": params["intake_rgb+d"]}, jnp.concatenate([obs["rgb"], obs["d"]], -3))
    want = nn.Dense(8).apply({"params": params["Dense_0"]}, jnp.concatenate([strip, vec], -1))
    np.testing.assert_allclose(out, jax.nn.relu(want), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="'prev' ending in shape"):
        net.apply({"params": params}, dict(obs, prev=obs["prev"][..., :4]))
    net = networks.ActorCritic.from_spaces(space, dotdict(movement=spaces.MultiDiscrete(A, 3)), width=8,
                                           core="mlp", intake="merged", image_kwargs=kw)
    o = jax.tree_util.tree_map(lambda x: x[None], obs)
    params = net.init(jax.random.PRNGKey(2), (), o, jnp.zeros((1, 3, A), bool))
    assert net.apply(params, (), o, jnp.zeros((1, 3, A), bool))[2].shape == (1, 3, A)


def test_obs_norm_reads_each_key_shifted_and_scaled():
    act_space = dotdict(movement=spaces.MultiDiscrete(1, 3))
    obs_space = dotdict(d=spaces.MultiImage(1, 1, 1, 8), imu=spaces.MultiVector(1, 2))
    norm = (("d", 0.5, 0.25), ("imu", -1.0, 4.0))
    plain = networks.ActorCritic.from_spaces(obs_space, act_space, width=8, core="mlp", intake="stacked")
    normed = networks.ActorCritic.from_spaces(obs_space, act_space, width=8, core="mlp", intake="stacked",
                                              obs_norm=norm)
    rng = np.random.default_rng(0)
    obs = dict(d=jnp.asarray(rng.uniform(size=(2, 3, 1, 1, 1, 8)), jnp.float32),
               imu=jnp.asarray(rng.normal(size=(2, 3, 1, 2)), jnp.float32))
    reset = jnp.zeros((2, 3, 1), bool)
    params = plain.init(jax.random.PRNGKey(0), (), obs, reset)
    _, logits, value = normed.apply(params, (), obs, reset)  # the same parameters
    by_hand = dict(d=(obs["d"] - 0.5) / 0.25, imu=(obs["imu"] + 1.0) / 4.0)
    _, want_logits, want_value = plain.apply(params, (), by_hand, reset)
    np.testing.assert_allclose(logits["movement"], want_logits["movement"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(value, want_value, rtol=1e-5, atol=1e-6)
    _, raw_logits, _ = plain.apply(params, (), obs, reset)
    assert not np.allclose(logits["movement"], raw_logits["movement"], atol=1e-4)
    for bad in ((("rgb", 0.0, 1.0),), (("d", 0.0, 0.0),), (("d", 0.0, float("inf")),), (("d", 1.0),),
                [("d", 0.0, 1.0)], (("d", "0", 1.0),)):
        with pytest.raises(ValueError, match="obs_norm"):
            networks.ActorCritic.from_spaces(obs_space, act_space, width=8, obs_norm=bad)


def _gru_reference(params, x, reset, h):
    """The GRU's equations, one step at a time in numpy."""
    p = {k: np.asarray(v, np.float64) for k, v in
         dict(wi=params["input"]["kernel"], bi=params["input"]["bias"],
              wh=params["recurrent_kernel"], bh=params["recurrent_bias"]).items()}
    w = p["wh"].shape[0]
    sig = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
    h, ys = np.asarray(h, np.float64), []
    for t in range(x.shape[0]):
        h = np.where(reset[t][..., None], 0.0, h)
        xp, hp = np.asarray(x[t], np.float64) @ p["wi"] + p["bi"], h @ p["wh"]
        r, z = sig(xp[..., :w] + hp[..., :w]), sig(xp[..., w:2 * w] + hp[..., w:2 * w])
        n = np.tanh(xp[..., 2 * w:] + r * (hp[..., 2 * w:] + p["bh"]))
        h = (1 - z) * n + z * h
        ys.append(h)
    return h, np.stack(ys)


def test_gru_core_follows_its_equations_and_starts_afresh_where_reset():
    T, B, A, F, W = 6, 3, 2, 5, 4
    core = networks.GRUCore(W)
    x = jax.random.normal(jax.random.PRNGKey(0), (T, B, A, F))
    h0 = jax.random.normal(jax.random.PRNGKey(1), (B, A, W))
    reset = jax.random.bernoulli(jax.random.PRNGKey(2), 0.3, (T, B, A))
    params = core.init(jax.random.PRNGKey(3), h0, x, reset)["params"]
    params = jax.tree_util.tree_map(lambda v: v + 0.1, params)  # nonzero biases too
    h, y = core.apply({"params": params}, h0, x, reset)
    assert h.shape == (B, A, W) and y.shape == (T, B, A, W)
    assert networks.GRUCore.initial_carry((B, A), W).shape == (B, A, W)
    h_ref, y_ref = _gru_reference(params, np.asarray(x), np.asarray(reset), np.asarray(h0))
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(h, h_ref, rtol=1e-5, atol=1e-5)
    # a reset at step k for one stream: from k on it computes what a fresh start would
    k, none = 2, jnp.zeros((T, B, A), bool)
    _, y_k = core.apply({"params": params}, h0, x, none.at[k, 1, 0].set(True))
    _, y_fresh = core.apply({"params": params}, jnp.zeros_like(h0), x[k:], none[k:])
    _, y_none = core.apply({"params": params}, h0, x, none)
    np.testing.assert_allclose(y_k[k:, 1, 0], y_fresh[:, 1, 0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y_k[:, 0], y_none[:, 0], rtol=1e-6)      # other streams untouched
    assert not np.allclose(y_none[k:, 1, 0], y_fresh[:, 1, 0], atol=1e-4)  # the past mattered


def test_actor_critic_with_a_gru_core_and_a_stack_carries_both():
    obs_space = dotdict(imu=spaces.MultiVector(2, 3))
    act_space = dotdict(movement=spaces.MultiDiscrete(2, 7))
    net = networks.ActorCritic.from_spaces(obs_space, act_space, width=8, core="gru", stack=3)
    carry = net.initial_carry((4, 2))
    assert carry[0].shape == (4, 2, 8) and carry[1].shape == (4, 2, 2, 8)
    obs = dict(imu=jax.random.normal(jax.random.PRNGKey(0), (5, 4, 2, 3)))
    reset = jnp.zeros((5, 4, 2), bool).at[0].set(True)
    params = net.init(jax.random.PRNGKey(1), carry, obs, reset)
    assert sorted(params["params"]["core"]) == ["input", "recurrent_bias", "recurrent_kernel"]
    (h, history), logits, value = net.apply(params, carry, obs, reset)
    assert h.shape == (4, 2, 8) and history.shape == (4, 2, 2, 8) and value.shape == (5, 4, 2)
    assert logits.movement.shape == (5, 4, 2, 7)
    with pytest.raises(ValueError, match="core"):
        networks.ActorCritic.from_spaces(obs_space, act_space, core="rnn")


def _gru_autodiff(kernel, bias, h0, xp, reset):
    """The GRU's equations as a plain scan, differentiated by JAX."""
    w = kernel.shape[0]

    def step(h, inputs):
        xt, rt = inputs
        h = jnp.where(rt[..., None], 0.0, h)
        hp = h @ kernel
        r = jax.nn.sigmoid(xt[..., :w] + hp[..., :w])
        z = jax.nn.sigmoid(xt[..., w:2 * w] + hp[..., w:2 * w])
        n = jnp.tanh(xt[..., 2 * w:] + r * (hp[..., 2 * w:] + bias))
        h = (1 - z) * n + z * h
        return h, h
    return jax.lax.scan(step, h0, (xp, reset))


@pytest.mark.parametrize("T,batch,w,p_reset", [(9, (4, 2), 5, 0.3), (1, (3,), 4, 0.5), (6, (2,), 3, 0.0),
                                                (5, (2,), 3, 1.0)])
def test_gru_scan_hand_written_gradients_equal_autodiff(T, batch, w, p_reset):
    k = jax.random.split(jax.random.PRNGKey(T), 7)
    args = (jax.random.normal(k[0], (w, 3 * w)), jax.random.normal(k[1], (w,)),
            jax.random.normal(k[2], (*batch, w)), jax.random.normal(k[3], (T, *batch, 3 * w)),
            jax.random.bernoulli(k[4], p_reset, (T, *batch)))
    g_y = jax.random.normal(k[5], (T, *batch, w))
    g_carry = jax.random.normal(k[6], (*batch, w))
    loss = lambda f: lambda *a: jnp.sum(f(*a)[1] * g_y) + jnp.sum(f(*a)[0] * g_carry)
    for ours, ref in zip(networks.gru_scan(*args), _gru_autodiff(*args)):
        np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)
    ours = jax.jit(jax.grad(loss(networks.gru_scan), argnums=(0, 1, 2, 3)))(*args)
    ref = jax.grad(loss(_gru_autodiff), argnums=(0, 1, 2, 3))(*args)
    for name, a, b in zip(("kernel", "bias", "h0", "xp"), ours, ref):
        assert a.shape == b.shape, name
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=name)
    if p_reset == 1.0:  # every step starts afresh: nothing flows to the carry before it
        np.testing.assert_array_equal(ours[2], 0.0)
    # reset as 0/1 integers means the same
    as_int = jax.jit(jax.grad(loss(networks.gru_scan), argnums=(0, 1, 2, 3)))(
        *args[:4], args[4].astype(jnp.int32))
    for a, b in zip(as_int, ours):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_gru_scan_gradients_under_vmap_over_parameters():
    k = jax.random.split(jax.random.PRNGKey(11), 5)
    kernels, biases = jax.random.normal(k[0], (3, 4, 12)), jax.random.normal(k[1], (3, 4))
    h0, xp = jax.random.normal(k[2], (2, 4)), jax.random.normal(k[3], (7, 2, 12))
    reset = jax.random.bernoulli(k[4], 0.3, (7, 2))
    loss = lambda f: lambda kern, b: jnp.sum(jnp.sin(f(kern, b, h0, xp, reset)[1]))
    ours = jax.vmap(jax.grad(loss(networks.gru_scan), argnums=(0, 1)))(kernels, biases)
    ref = jax.vmap(jax.grad(loss(_gru_autodiff), argnums=(0, 1)))(kernels, biases)
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_forward_mode_through_the_cores():
    """The GRU's derivative is reverse mode only (a custom_vjp, see gru_scan); the MLP and
    LSTM cores and the intakes' matrix products have forward mode too."""
    obs_space = dotdict(rgb=spaces.MultiImage(1, 3, 1, 16), imu=spaces.MultiVector(1, 3))
    act_space = dotdict(movement=spaces.MultiDiscrete(1, 3))
    kw = (("conv_features", (4,)), ("conv_kernels", (4,)), ("conv_strides", (2,)))
    obs = dict(rgb=jax.random.uniform(jax.random.PRNGKey(0), (2, 3, 1, 3, 1, 16)),
               imu=jax.random.normal(jax.random.PRNGKey(1), (2, 3, 1, 3)))
    reset = jnp.zeros((2, 3, 1), bool)
    for core in ("mlp", "lstm", "gru"):
        net = networks.ActorCritic.from_spaces(obs_space, act_space, width=8, core=core,
                                               image_kwargs=kw, intake="merged")
        carry = net.initial_carry((3, 1))
        params = net.init(jax.random.PRNGKey(2), carry, obs, reset)
        value = lambda imu: net.apply(params, carry, dict(obs, imu=imu), reset)[2]
        if core == "gru":
            with pytest.raises(TypeError, match="forward-mode"):
                jax.jvp(value, (obs["imu"],), (jnp.ones_like(obs["imu"]),))
            continue
        _, tangent = jax.jvp(value, (obs["imu"],), (jnp.ones_like(obs["imu"]),))
        eps = 1e-2
        slope = (value(obs["imu"] + eps) - value(obs["imu"] - eps)) / (2 * eps)
        np.testing.assert_allclose(tangent, slope, rtol=2e-2, atol=2e-3)
