"""Plots: extraction of one env's state, the plan view's content, strips, bars, real env states."""
import jax
import matplotlib.colors as mcolors
import numpy as np
import pytest
from matplotlib.collections import LineCollection, PathCollection
from matplotlib.patches import Wedge

from megastep_jax import plotting
from megastep_jax.arrdict import dotdict
from megastep_jax.state import Scenery, init_agents


def padded_scenery():
    """Two envs of one agent; env 1 has one wall, two lights, padding beyond."""
    E, L, T = 2, 12, 64
    lines = np.zeros((E, L, 2, 2), np.float32)
    lines[1, 8] = [[1, 1], [1.2, 1]]          # its only wall: 0.2 m, 4 texels
    widths = np.zeros((E, L), np.int32)
    widths[:, :8] = 1
    widths[1, 8] = 4
    starts = np.cumsum(widths, 1) - widths
    textures = np.random.default_rng(0).random((E, T, 3)).astype(np.float32)
    lights = np.zeros((E, 3, 3), np.float32)
    lights[1, :2] = [[2, 2, 1.0], [3, 3, 0.5]]
    return Scenery(lines=lines, n_lines=np.array([8, 9], np.int32), lights=lights,
                   n_lights=np.array([0, 2], np.int32), textures=textures, texel_starts=starts,
                   texel_widths=widths, baked=np.ones((E, T), np.float32),
                   model=np.zeros((8, 2, 2), np.float32), n_agents=1)


def test_scenery_state_cuts_padding_and_keeps_texel_addressing():
    sc = padded_scenery()
    s = plotting.scenery_state(sc, e=1)
    assert s.lines.shape == (9, 2, 2) and s.lights.shape == (2, 3) and s.textures.shape == (12, 3)
    np.testing.assert_array_equal(s.textures, sc.textures[1, :12])
    np.testing.assert_array_equal(s.texel_starts[8], 8)
    with pytest.raises(ValueError, match="e:"):
        plotting.scenery_state(sc, e=2)


def test_texel_centres_and_placed_models():
    lines = np.array([[[0, 0], [1, 0]], [[0, 0], [0, 2]]], np.float32)
    xy = plotting.texel_centres(lines, np.array([4, 1]))
    np.testing.assert_allclose(xy, [[.125, 0], [.375, 0], [.625, 0], [.875, 0], [0, 1]])
    model = np.array([[[1, 0], [0, 0]]] * 8, np.float32)
    placed = plotting._agent_lines(model, np.array([[5.0, 5.0]]), np.array([90.0]))
    np.testing.assert_allclose(placed[0, 0], [[5, 6], [5, 5]], atol=1e-6)


def toy_state(n_agents=2, seen=None):
    sc = padded_scenery()
    agents = init_agents(2, n_agents).replace(
        positions=np.tile([[1.5, 1.5]], (2, n_agents, 1)).astype(np.float32),
        angles=np.full((2, n_agents), 30.0, np.float32))
    extra = {} if seen is None else {"seen": seen}
    return plotting.core_state(sc, agents, e=1, fov=60.0, **extra)


def test_plan_draws_texels_in_encoded_colours_lights_and_wedges():
    state = toy_state(seen=np.arange(12) % 2 == 0)
    ax = plotting.plot_plan(state)
    walls, lights = [c for c in ax.collections if isinstance(c, PathCollection)]
    wall_tex = state.scenery.textures[8:12]
    np.testing.assert_allclose(walls.get_facecolors()[:, :3], wall_tex ** (1 / 2.2), atol=1e-6)
    np.testing.assert_allclose(walls.get_offsets(), [[1.025, 1], [1.075, 1], [1.125, 1], [1.175, 1]], atol=1e-6)
    # texels 8 and 10 are seen (opaque), 9 and 11 faded
    np.testing.assert_allclose(walls.get_facecolors()[:, 3], [1, 0.25, 1, 0.25])
    np.testing.assert_allclose(lights.get_facecolors()[:, 3], [1.0, 0.5])
    wedges = [p for p in ax.patches if isinstance(p, Wedge)]
    assert [(w.theta1, w.theta2) for w in wedges] == [(0.0, 60.0), (0.0, 60.0)]
    assert [mcolors.to_hex(w.get_facecolor()) for w in wedges] == [mcolors.to_hex("C0"), mcolors.to_hex("C1")]
    assert len([c for c in ax.collections if isinstance(c, LineCollection)]) == 2
    # whole plan: walls and agents, padded by a metre, square
    # (points span (1, 1)..(1.5, 1.5): centre 1.25, half-width 0.25 + 1)
    assert ax.get_xlim() == pytest.approx((0.0, 2.5)) and ax.get_ylim() == pytest.approx((0.0, 2.5))
    assert ax.get_lines() == []
    state["hits"] = np.array([[False, True], [False, False]])
    (shot,) = plotting.plot_plan(state).get_lines()
    assert mcolors.to_hex(shot.get_color()) == mcolors.to_hex("C0")
    ax = plotting.plot_plan(state, zoom=1, zoom_radius=2.0)
    assert ax.get_xlim() == pytest.approx((-0.5, 3.5)) and ax.get_ylim() == pytest.approx((-0.5, 3.5))


def test_plan_rejects_bad_input():
    state = toy_state()
    with pytest.raises(ValueError, match="zoom"):
        plotting.plot_plan(state, zoom=2)
    with pytest.raises(ValueError, match="agents"):
        plotting.plot_plan(dotdict(scenery=state.scenery))
    bad = dotdict(state)
    bad["agents"] = dotdict(positions=np.zeros((2, 3)), angles=np.zeros(2))
    with pytest.raises(ValueError, match="positions"):
        plotting.plot_plan(bad)


def test_plot_images_encodes_rgb_keeps_depth_and_titles_agents():
    rng = np.random.default_rng(1)
    images = dotdict(rgb=rng.random((2, 3, 1, 5)), d=rng.random((2, 1, 1, 5)), imu=np.zeros((2, 3)))
    axes = plotting.plot_images(images)
    assert [ax.get_title() for ax in axes] == ["agent #0", "agent #1"]
    assert mcolors.to_hex(axes[1].title.get_color()) == mcolors.to_hex("C1")
    assert [t.get_text() for t in axes[0].get_yticklabels()] == ["rgb", "d"]
    rgb, d = axes[1].get_images()
    np.testing.assert_allclose(rgb.get_array()[0], (images.rgb[1, :, 0].T) ** (1 / 2.2))
    np.testing.assert_allclose(d.get_array()[0, :, 0], images.d[1, 0, 0])
    with pytest.raises(ValueError, match="images"):
        plotting.plot_images(dotdict(imu=np.zeros((2, 3))))


def test_plot_state_lays_out_plan_strips_and_bars():
    state = toy_state(n_agents=3)
    state["obs"] = dotdict(rgb=np.full((3, 3, 1, 4), 0.5), d=np.zeros((3, 1, 1, 4)))
    state["bars"] = dotdict(health=np.array([1.0, 0.5, 0.25]), inflicted=np.array([0.0, 0.1, 0.0]))
    state["text"] = ["length 3"]
    fig = plotting.plot_state(state)
    plan, *rest = fig.axes
    assert len(rest) == 3 + 2
    health = rest[3]
    assert health.get_ylabel() == "health"
    np.testing.assert_allclose([p.get_width() for p in health.patches], [1.0, 0.5, 0.25])
    assert any("length 3" in t.get_text() for t in plan.texts)


def test_plot_state_of_a_real_minimal_env():
    from megastep_jax.envs.minimal import Minimal

    env = Minimal(res=8)
    params = env.default_params
    obs, st = jax.jit(env.reset)(jax.random.PRNGKey(0), params)
    state = env.state(st, params)
    state["obs"] = dict(jax.device_get(obs))
    assert state.scenery.lines.shape[0] == 8 + 4 and state.agents.positions.shape == (1, 2)
    fig = env.plot_state(state)
    plan, strip = fig.axes
    walls = [c for c in plan.collections if isinstance(c, PathCollection)][0]
    assert len(walls.get_offsets()) == state.scenery.texel_widths[8:].sum() == 400   # 4 walls of 5 m
    assert strip.get_title() == "agent #0"


def test_agent_colours_are_megastep_and_one_definition():
    """megastep's scene.agent_colors: '.25', 'g', 'r' as matplotlib reads them, in model-line order."""
    from megastep_jax import core, scene, toys

    megastep = np.array([mcolors.to_rgb(c) for c in (".25", "g", ".25", "r", ".25", "r", ".25", "g")])
    np.testing.assert_allclose(megastep[1], [0, 0.5, 0])    # matplotlib's 'g' is half green
    np.testing.assert_array_equal(scene.MODEL_COLORS, megastep.astype(np.float32))
    assert plotting.MODEL_COLOURS is scene.MODEL_COLORS
    # Scenery stores them decoded (linear), agent texels unpatterned: green is 0.5**2.2 ~ 0.218.
    s = scene.scenery([toys.box()], n_agents=1, key=jax.random.key(0))
    state = plotting.scenery_state(s, 0)
    for k in range(8):
        texels = state.textures[state.texel_starts[k]:state.texel_starts[k] + state.texel_widths[k]]
        np.testing.assert_allclose(texels, np.tile(megastep[k] ** 2.2, (len(texels), 1)), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(core.gamma_encode(texels), np.tile(megastep[k], (len(texels), 1)), rtol=1e-5)
    # Plots encode them back to megastep's display values.
    agents = init_agents(1, 1).replace(positions=np.full((1, 1, 2), 3.5, np.float32))
    ax = plotting.plot_plan(plotting.core_state(s, agents))
    (model,) = [c for c in ax.collections if isinstance(c, LineCollection)]
    np.testing.assert_allclose(model.get_colors()[:, :3], megastep, atol=1e-5)
    # Without agent texels in the state, the plot falls back on the same table.
    bare = toy_state(n_agents=1)
    bare.scenery["texel_widths"] = np.zeros_like(bare.scenery.texel_widths)
    bare.scenery["texel_starts"] = np.zeros_like(bare.scenery.texel_starts)
    ax = plotting.plot_plan(bare)
    (model,) = [c for c in ax.collections if isinstance(c, LineCollection)]
    np.testing.assert_allclose(model.get_colors()[:, :3], megastep, atol=1e-6)
