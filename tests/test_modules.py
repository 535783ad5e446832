"""Modules: frames, movement numbers from SPEC.md, observations from a Render, spawns, lifespans."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from megastep_jax import modules, spaces, toys
from megastep_jax.state import Render, init_agents

RADIUS = 0.15 / math.sqrt(2)


def test_frames_are_inverse_rotations():
    angles = jnp.array([0.0, 90.0, -30.0])
    p = jnp.array([[1.0, 0.0], [1.0, 0.0], [0.3, -2.0]])
    g = modules.to_global_frame(angles, p)
    assert np.allclose(g[1], [0.0, 1.0], atol=1e-6)
    assert np.allclose(modules.to_local_frame(angles, g), p, atol=1e-6)


def test_simple_movement_sets_velocity_speed_over_fps_per_row():
    agents = init_agents(1, 7).replace(angles=jnp.full((1, 7), 90.0))
    move = modules.SimpleMovement(n_agents=7)
    out = move.apply(agents, jnp.arange(7, dtype=jnp.int32), fps=10.0)
    # at the defaults: 1 m/s along the row (then physics divides by fps again: 0.1 m/step)
    local = modules.to_local_frame(out.angles, out.velocity)
    assert np.allclose(local[0], modules.ACTION_VELOCITY * 1.0, atol=1e-6)
    assert np.allclose(out.angvelocity[0], [0, 0, 0, 0, 0, 18.0, -18.0])
    # action 3 (+x of the agent frame) faces along +y at 90 degrees
    assert np.allclose(out.velocity[0, 3], [0.0, 1.0], atol=1e-6)
    assert move.space == spaces.MultiDiscrete(7, 7)


def test_simple_movement_per_step_motion_at_defaults():
    # SPEC: one step at defaults moves 0.1 m or turns 1.8 degrees (physics divides by fps)
    move = modules.SimpleMovement()
    out = move.apply(init_agents(1, 1), jnp.array([3], jnp.int32), fps=10.0)
    assert np.isclose(float(out.velocity[0, 0, 0]) / 10.0, 0.1)
    out = move.apply(init_agents(1, 1), jnp.array([5], jnp.int32), fps=10.0)
    assert np.isclose(float(out.angvelocity[0, 0]) / 10.0, 1.8)


def test_momentum_movement_decays_and_accelerates():
    move = modules.MomentumMovement()
    agents = init_agents(1, 1).replace(velocity=jnp.array([[[2.0, 0.0]]]),
                                       angvelocity=jnp.array([[40.0]]))
    out = move.apply(agents, jnp.array([3], jnp.int32), fps=10.0)
    assert np.allclose(out.velocity[0, 0], [0.875 * 2.0 + 0.5, 0.0])
    assert np.isclose(out.angvelocity[0, 0], 0.875 * 40.0)
    out = move.apply(agents, jnp.array([6], jnp.int32), fps=10.0, decay=0.0, ang_accel=360.0)
    assert np.isclose(out.angvelocity[0, 0], 40.0 - 36.0)


def test_movement_validates_actions():
    with pytest.raises(ValueError, match="actions: expected integer"):
        modules.SimpleMovement().apply(init_agents(1, 1), jnp.array([1.0]))
    with pytest.raises(ValueError, match=r"actions: expected shape \(\.\.\., 2\)"):
        modules.SimpleMovement(n_agents=2).apply(init_agents(1, 2), jnp.array([1], jnp.int32))


def fake_render(E=2, A=1, R=8):
    k = jax.random.PRNGKey(0)
    indices = jnp.tile(jnp.arange(R, dtype=jnp.int32) - 1, (E, A, 1))  # pixel 0 misses
    distances = jnp.tile(jnp.linspace(0.0, 12.0, R), (E, A, 1)).astype(jnp.float32)
    screen = jax.random.uniform(k, (E, A, R, 3))
    return Render(indices=indices, locations=jnp.zeros((E, A, R)), dots=jnp.zeros((E, A, R)),
                  distances=distances, screen=screen)


def test_unpack_lays_out_for_convolutions():
    r = modules.unpack(fake_render())
    assert r.screen.shape == (2, 1, 3, 1, 8) and r.distances.shape == (2, 1, 1, 8)
    raw = fake_render()
    assert np.allclose(r.screen[0, 0, :, 0, 5], raw.screen[0, 0, 5])


def test_downsample():
    x = jnp.arange(12.0).reshape(1, 12)
    assert modules.downsample(x, 4).shape == (1, 3, 4)
    assert np.allclose(modules.downsample(x, 4).mean(-1), [[1.5, 5.5, 9.5]])
    y = np.random.default_rng(0).random((2, 5, 24)).astype(np.float32)
    for k in (1, 3, 8, 24):
        np.testing.assert_allclose(modules.downsample_mean(jnp.asarray(y), k),
                                   y.reshape(2, 5, 24 // k, k).mean(-1), rtol=1e-6)
    with pytest.raises(ValueError, match="subsample: expected a divisor"):
        modules.downsample(x, 5)


def test_depth_matches_formula_and_space():
    raw = fake_render()
    r = modules.unpack(raw)
    depth = modules.Depth(n_agents=1, res=8, subsample=2, max_depth=10.0)
    d = depth(r)
    assert d.shape == (2, 1, 1, 1, 4)
    per_pixel = 1 - np.clip((np.asarray(raw.distances) - RADIUS) / 10.0, 0, 1)
    per_pixel[np.asarray(raw.indices) < 0] = 0.0
    assert np.allclose(d[:, :, 0, 0], per_pixel.reshape(2, 1, 4, 2).mean(-1), atol=1e-6)
    assert bool(depth.space.contains(d[0]))
    assert not np.allclose(depth(r, max_depth=5.0), d)


def test_rgb_averages_screen():
    raw = fake_render()
    rgb = modules.RGB(n_agents=1, res=8, subsample=4)
    x = rgb(modules.unpack(raw))
    assert x.shape == (2, 1, 3, 1, 2)
    assert np.allclose(x[0, 0, :, 0, 1], np.asarray(raw.screen[0, 0, 4:8]).mean(0), atol=1e-6)
    assert bool(rgb.space.contains(x[1]))
    with pytest.raises(ValueError, match="subsample: expected a divisor of res=8"):
        modules.RGB(res=8, subsample=3)


def test_imu_reads_scaled_local_velocity():
    agents = init_agents(1, 1).replace(angles=jnp.array([[90.0]]), velocity=jnp.array([[[0.0, 5.0]]]),
                                       angvelocity=jnp.array([[180.0]]))
    imu = modules.IMU()(agents)
    assert np.allclose(imu, [[[0.5, 0.5, 0.0]]], atol=1e-6)
    assert modules.IMU(n_agents=3).space == spaces.MultiVector(3, 3)


def test_random_empty_positions_lie_in_rooms_and_follow_the_key():
    g = toys.box()
    pts = modules.random_empty_positions([g, toys.room_with_column()], 2, 50, jax.random.PRNGKey(0))
    assert pts.shape == (2, 2, 50, 2) and pts.dtype == np.float32
    from megastep_jax import geometry
    idx = geometry.indices(pts[0], g.masks.shape, g.res)
    assert np.all(g.masks[idx[..., 0], idx[..., 1]] > 0)
    again = modules.random_empty_positions([g, toys.room_with_column()], 2, 50, jax.random.PRNGKey(0))
    other = modules.random_empty_positions([g, toys.room_with_column()], 2, 50, jax.random.PRNGKey(1))
    assert np.array_equal(pts, again) and not np.array_equal(pts, other)
    bad = dict(g, masks=np.zeros_like(g.masks))
    with pytest.raises(ValueError, match="geometries: geometry 0"):
        modules.random_empty_positions([bad], 1, 5, 0)


def test_random_spawns_move_only_reset_agents_and_zero_velocity():
    spawns = modules.RandomSpawns.create([toys.box(), toys.room_with_column()], 2, jax.random.PRNGKey(0), 10)
    assert spawns.positions.shape == (2, 2, 10, 2) and spawns.angles.shape == (2, 2, 10)
    assert float(spawns.angles.min()) >= -180 and float(spawns.angles.max()) < 180
    agents = init_agents(3, 2).replace(velocity=jnp.ones((3, 2, 2)), angvelocity=jnp.ones((3, 2)))
    reset = jnp.array([[True, False], [False, False], [True, True]])
    out = spawns(jax.random.PRNGKey(1), agents, reset, jnp.array([0, 1, 1]))
    assert np.all(np.asarray(out.positions)[~np.asarray(reset)] == 0)
    assert np.all(np.asarray(out.positions)[np.asarray(reset)] > 1)
    assert np.all(np.asarray(out.velocity)[np.asarray(reset)] == 0)
    assert np.all(np.asarray(out.angvelocity)[~np.asarray(reset)] == 1)
    # env 2 uses geometry 1: its agent 1's spawn comes from spawns.positions[1, 1]
    assert np.any(np.all(np.isclose(spawns.positions[1, 1], out.positions[2, 1]), -1))
    jitted = jax.jit(lambda k, a: spawns(k, a, True, 0))(jax.random.PRNGKey(2), init_agents(1, 2))
    assert jitted.positions.shape == (1, 2, 2)


def test_random_lifespans_expire_and_reroll():
    life = modules.RandomLifespans(max_lifespan=10)
    state = life.init(jax.random.PRNGKey(0), (1000,))
    assert int(state.max_lifespans.min()) >= 5 and int(state.max_lifespans.max()) <= 9
    expired_at = np.full(1000, -1)
    key = jax.random.PRNGKey(1)
    first = np.asarray(state.max_lifespans)
    for t in range(1, 11):
        key, k = jax.random.split(key)
        state, expired = life(k, state)
        newly = np.asarray(expired) & (expired_at < 0)
        expired_at[newly] = t
    assert np.array_equal(expired_at, first)
    _, expired = life(key, life.init(key, (4,)), reset=jnp.array([True, False, False, False]))
    assert bool(expired[0]) and not bool(expired[1:].any())
    with pytest.raises(ValueError, match="min_lifespan, max_lifespan"):
        modules.RandomLifespans(max_lifespan=4, min_lifespan=4)


def test_movement_with_physics_per_step_motion_in_the_box():
    from megastep_jax import scene

    scenery = scene.scenery([toys.box()], 1, jax.random.PRNGKey(0))
    agents = init_agents(1, 1).replace(positions=jnp.array([[[3.0, 3.0]]]))
    moved, progress = modules.SimpleMovement()(scenery, agents, jnp.array([3], jnp.int32), fps=10.0)
    assert np.allclose(moved.positions, [[[3.1, 3.0]]], atol=1e-6) and float(progress[0, 0]) == 1.0
    turned, _ = modules.SimpleMovement()(scenery, agents, jnp.array([5], jnp.int32), fps=10.0)
    assert np.isclose(float(turned.angles[0, 0]), 1.8, atol=1e-5)
    # momentum from rest: accel/fps = 0.5 m/s after one step, so 0.05 m moved
    pushed, _ = modules.MomentumMovement()(scenery, agents, jnp.array([3], jnp.int32), fps=10.0)
    assert np.allclose(pushed.positions, [[[3.05, 3.0]]], atol=1e-6)
    ref, _ = modules.SimpleMovement()(scenery, agents, jnp.array([3], jnp.int32), fps=10.0,
                                      backend="reference")
    assert np.allclose(ref.positions, moved.positions, atol=1e-6)
