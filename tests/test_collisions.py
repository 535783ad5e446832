"""Collision modes of the physics core: stop (megastep), slide and bounce.

Walls of the box toy lie at x, y = 1 and 6; agents are discs of radius R = AGENT_RADIUS.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from megastep_jax import core, scene, toys

from conftest import ALL_BACKENDS

R = core.AGENT_RADIUS
LO, HI = 1.0, 6.0  # the box toy's walls


@functools.lru_cache(maxsize=None)
def box_scenery(n_envs: int, n_agents: int):
    return scene.scenery([toys.box()] * n_envs, n_agents=n_agents, key=jax.random.key(0))


def agents_at(positions, velocity):
    positions = np.asarray(positions, np.float32)
    E, A = positions.shape[:2]
    return core.init_agents(E, A).replace(positions=jnp.asarray(positions),
                                          velocity=jnp.asarray(velocity, jnp.float32))


def rollout(scenery, agents, n_steps, collision, backend="kernel", fps=10.0, restitution=1.0):
    """Positions and velocities (T, E, A, 2) after each of n_steps physics steps."""

    @jax.jit
    def run(agents):
        def step(a, _):
            a, progress = core.physics(scenery, a, fps=fps, collision=collision,
                                       restitution=restitution, backend=backend)
            return a, (a.positions, a.velocity, progress)

        return jax.lax.scan(step, agents, None, length=n_steps)[1]

    return tuple(np.asarray(x) for x in run(agents))


def separated_agents(rng, n_envs, n_agents, speed):
    """Agents on distinct points of a grid in the box, random velocities of scale `speed`."""
    grid = np.stack(np.meshgrid([2.0, 3.0, 4.0, 5.0], [2.0, 3.5, 5.0]), -1).reshape(-1, 2)
    positions = np.stack([grid[rng.permutation(len(grid))[:n_agents]] for _ in range(n_envs)])
    return agents_at(positions, rng.normal(0, speed, (n_envs, n_agents, 2)))


# ---------------------------------------------------------------------------------------
# stop: megastep's behaviour

@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_stop_is_the_default_and_matches_the_golden_case(backend):
    # SPEC.md: box toy, agent at (3, 3), velocity (1000, 0), fps 10 -> (5.8649, 3.0)
    s = box_scenery(1, 1)
    agents = agents_at([[[3.0, 3.0]]], [[[1000.0, 0.0]]])
    default, _ = core.physics(s, agents, fps=10.0, backend=backend)
    stop, progress = core.physics(s, agents, fps=10.0, collision="stop", backend=backend)
    np.testing.assert_allclose(stop.positions[0, 0], [5.8649, 3.0], atol=1e-4)
    np.testing.assert_array_equal(stop.velocity, 0.0)
    assert progress[0, 0] < 1
    for name in ("positions", "velocity", "angles", "angvelocity"):
        np.testing.assert_array_equal(getattr(default, name), getattr(stop, name))


def test_stop_zeroes_turning_on_contact_but_slide_and_bounce_keep_it():
    s = box_scenery(1, 1)
    agents = agents_at([[[5.5, 3.0]]], [[[30.0, 10.0]]]).replace(angvelocity=jnp.array([[90.0]]))
    stop, progress = core.physics(s, agents, fps=10.0, collision="stop")
    x = float(progress[0, 0])
    assert x < 1
    np.testing.assert_allclose(stop.angles[0, 0], x * 9.0, rtol=1e-5)
    assert float(stop.angvelocity[0, 0]) == 0.0
    for mode in ("slide", "bounce"):
        moved, _ = core.physics(s, agents, fps=10.0, collision=mode)
        np.testing.assert_allclose(moved.angles[0, 0], 9.0, rtol=1e-6)
        assert float(moved.angvelocity[0, 0]) == 90.0


def test_every_mode_has_the_same_first_contact_and_slide_and_bounce_continue():
    # (5.5, 3) moving (3, 1) per step meets the wall x = 6 at progress x; stop stays there,
    # slide runs on along the wall for the rest of the step, bounce comes back off it.
    s = box_scenery(1, 1)
    agents = agents_at([[[5.5, 3.0]]], [[[30.0, 10.0]]])
    moved = {m: core.physics(s, agents, fps=10.0, collision=m) for m in ("stop", "slide", "bounce")}
    x = float(moved["stop"][1][0, 0])
    assert 0 < x < 1
    contact = np.asarray(moved["stop"][0].positions[0, 0])
    np.testing.assert_allclose(contact, [5.5 + 3 * x, 3.0 + x], rtol=1e-6)
    for m in ("slide", "bounce"):
        np.testing.assert_array_equal(moved[m][1], moved["stop"][1])
    np.testing.assert_allclose(moved["slide"][0].positions[0, 0], [contact[0], 4.0], atol=1e-5)
    np.testing.assert_allclose(moved["bounce"][0].positions[0, 0],
                               [contact[0] - 3 * (1 - x), 4.0], atol=1e-5)


# ---------------------------------------------------------------------------------------
# slide

@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_slide_removes_only_the_normal_component(backend):
    s = box_scenery(1, 1)
    # into the right wall (normal -x) at an angle: (30, 10) -> (0, 10)
    agents = agents_at([[[5.5, 3.0]]], [[[30.0, 10.0]]])
    moved, progress = core.physics(s, agents, fps=10.0, collision="slide", backend=backend)
    assert progress[0, 0] < 1
    np.testing.assert_allclose(moved.velocity[0, 0], [0.0, 10.0], atol=1e-5)
    assert float(moved.positions[0, 0, 0]) <= HI - R
    # into the bottom wall (normal +y): the x component survives, with its sign
    agents = agents_at([[[3.0, 1.2]]], [[[-7.0, -20.0]]])
    moved, _ = core.physics(s, agents, fps=10.0, collision="slide", backend=backend)
    np.testing.assert_allclose(moved.velocity[0, 0], [-7.0, 0.0], atol=1e-5)


def test_slide_keeps_moving_along_the_wall():
    s = box_scenery(1, 1)
    agents = agents_at([[[5.5, 2.0]]], [[[20.0, 3.0]]])
    positions, velocity, _ = rollout(s, agents, 12, "slide")
    np.testing.assert_allclose(velocity[:, 0, 0], [[0.0, 3.0]] * 12, atol=1e-5)
    y = positions[:, 0, 0, 1]
    # after the contact step it slides the full 0.3 m each step, hugging the wall
    np.testing.assert_allclose(np.diff(y[1:]), 0.3, atol=1e-5)
    assert np.all(positions[1:, 0, 0, 0] > HI - R - 0.01) and np.all(positions[:, 0, 0, 0] <= HI - R)


# ---------------------------------------------------------------------------------------
# bounce

@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("restitution", [1.0, 0.5, 0.0])
def test_bounce_reflects_the_normal_component_times_restitution(backend, restitution):
    s = box_scenery(1, 1)
    agents = agents_at([[[5.5, 3.0]]], [[[30.0, 10.0]]])
    moved, progress = core.physics(s, agents, fps=10.0, collision="bounce", restitution=restitution,
                                   backend=backend)
    assert progress[0, 0] < 1
    np.testing.assert_allclose(moved.velocity[0, 0], [-30.0 * restitution, 10.0], atol=1e-4)


def test_bounce_in_a_box_preserves_speed_over_1000_steps_and_no_agent_leaves():
    rng = np.random.default_rng(0)
    E = 8
    agents = agents_at(rng.uniform(1.5, 5.5, (E, 1, 2)), rng.normal(0, 15, (E, 1, 2)))
    positions, velocity, progress = rollout(box_scenery(E, 1), agents, 1000, "bounce")
    speed0 = np.linalg.norm(np.asarray(agents.velocity), axis=-1)
    speed = np.linalg.norm(velocity, axis=-1)
    np.testing.assert_allclose(speed, np.broadcast_to(speed0, speed.shape), rtol=1e-5)
    assert (progress < 1).sum() > 100 * E  # it did bounce, often
    # every centre stays strictly inside the walls
    assert positions.min() > LO and positions.max() < HI
    # velocity only ever changes sign per axis: reflections off axis-aligned walls
    np.testing.assert_allclose(np.abs(velocity), np.broadcast_to(np.abs(np.asarray(agents.velocity)),
                                                                 velocity.shape), rtol=1e-6)


def test_bounce_discs_never_sink_into_the_walls():
    rng = np.random.default_rng(0)
    E = 8
    agents = agents_at(rng.uniform(1.5, 5.5, (E, 1, 2)), rng.normal(0, 15, (E, 1, 2)))
    positions, _, _ = rollout(box_scenery(E, 1), agents, 1000, "bounce")
    assert positions.min() >= LO + R - 1e-4 and positions.max() <= HI - R + 1e-4


def test_shallow_motion_ending_past_a_wall_end_is_stopped_by_that_wall():
    # Regression (env 1, step 725 of the rollout above, before the 'band' candidate):
    # moving along the bottom wall, 0.0099 m from touching it, with the end point past
    # x = 6. megastep's crossing and side rules missed the bottom wall and took the right
    # wall at progress 0.824, sinking the disc 0.058 m into the bottom wall.
    s = box_scenery(1, 1)
    agents = agents_at([[[4.856195, 1.1161522]]], [[[12.465489, -0.8265196]]])
    touch = (1.1161522 - (LO + 1.001 * R)) / 0.08265196  # progress where the disc meets y = 1
    for mode in ("stop", "slide", "bounce"):
        for backend in core.BACKENDS:
            moved, progress = core.physics(s, agents, fps=10.0, collision=mode, backend=backend)
            np.testing.assert_allclose(progress[0, 0], 0.99 * touch, atol=1e-3)
            assert float(moved.positions[0, 0, 1]) >= LO + R
            if mode == "bounce":
                # off the bottom wall, then (with the rest of the step) off the right wall
                np.testing.assert_allclose(moved.velocity[0, 0], [-12.465489, 0.8265196], rtol=1e-5)
                assert float(moved.positions[0, 0, 0]) <= HI - R


# ---------------------------------------------------------------------------------------
# disc-disc contacts

@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_head_on_discs(backend):
    s = box_scenery(1, 2)
    agents = agents_at([[[3.0, 3.0], [3.5, 3.0]]], [[[10.0, 0.0], [-10.0, 0.0]]])
    expected = {"bounce": [[-10.0, 0.0], [10.0, 0.0]], "slide": [[0.0, 0.0], [0.0, 0.0]],
                "stop": [[0.0, 0.0], [0.0, 0.0]]}
    for mode, velocity in expected.items():
        moved, progress = core.physics(s, agents, fps=10.0, collision=mode, backend=backend)
        assert np.all(np.asarray(progress) < 1)
        np.testing.assert_allclose(moved.velocity[0], velocity, atol=1e-4)
        gap = np.linalg.norm(np.asarray(moved.positions[0, 0] - moved.positions[0, 1]))
        assert gap >= 2 * R


def contact_normal(p, m):
    """Unit normal, towards disc 0, where two discs moving by m (2, 2) first touch."""
    rel, off = m[0] - m[1], p[0] - p[1]
    r = 1.001 * 2 * R  # the kernels' contact distance
    a, b, c = rel @ rel, 2 * off @ rel, off @ off - r * r
    s = (-b - np.sqrt(b * b - 4 * a * c)) / (2 * a)
    n = off + s * rel
    return n / np.linalg.norm(n)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_glancing_discs_conserve_momentum_and_keep_the_tangential_component(backend):
    s = box_scenery(1, 2)
    # agent 0 moving +x hits agent 1 (at rest) off-centre
    agents = agents_at([[[3.0, 3.0], [3.5, 3.1]]], [[[10.0, 0.0], [0.0, 0.0]]])
    v0 = np.asarray(agents.velocity[0])
    for mode, restitution in (("bounce", 1.0), ("bounce", 0.5), ("slide", 1.0)):
        moved, progress = core.physics(s, agents, fps=10.0, collision=mode, restitution=restitution,
                                       backend=backend)
        n = contact_normal(np.asarray(agents.positions[0], np.float64), v0 / 10.0)
        t = np.array([-n[1], n[0]])
        v = np.asarray(moved.velocity[0], np.float64)
        np.testing.assert_allclose(v.sum(0), v0.sum(0), atol=1e-4)  # momentum
        np.testing.assert_allclose(v @ t, v0 @ t, atol=1e-4)        # tangential, per disc
        k = restitution if mode == "bounce" else 0.0
        # relative normal velocity: reversed times restitution (bounce) or removed (slide)
        np.testing.assert_allclose((v[0] - v[1]) @ n, -k * ((v0[0] - v0[1]) @ n), atol=1e-4)
        if mode == "bounce" and restitution == 1.0:
            np.testing.assert_allclose((v ** 2).sum(), (v0 ** 2).sum(), rtol=1e-5)  # energy


def test_slow_discs_in_a_box_bounce_elastically_for_1000_steps():
    # per-step motion well under a radius: every contact is seen by both discs
    rng = np.random.default_rng(1)
    E, A = 4, 4
    agents = separated_agents(rng, E, A, speed=0.5)
    positions, velocity, progress = rollout(box_scenery(E, A), agents, 1000, "bounce")
    energy0 = (np.asarray(agents.velocity) ** 2).sum((-1, -2))
    np.testing.assert_allclose((velocity ** 2).sum((-1, -2)), np.broadcast_to(energy0, (1000, E)), rtol=1e-4)
    gaps = np.linalg.norm(positions[:, :, :, None] - positions[:, :, None, :], axis=-1) + 9 * np.eye(A)
    assert gaps.min() >= 2 * R
    assert positions.min() >= LO + R - 1e-4 and positions.max() <= HI - R + 1e-4
    assert (progress < 1).any()


def test_fast_discs_in_a_box_neither_interpenetrate_nor_sink_into_walls():
    # per-step motion of about 4 radii; contacts are found along the paths taken
    rng = np.random.default_rng(1)
    E, A = 4, 4
    agents = separated_agents(rng, E, A, speed=4.0)
    for mode in ("bounce", "slide"):
        positions, _, _ = rollout(box_scenery(E, A), agents, 1000, mode)
        gaps = np.linalg.norm(positions[:, :, :, None] - positions[:, :, None, :], axis=-1) + 9 * np.eye(A)
        assert gaps.min() >= 2 * R, mode
        assert positions.min() >= LO + R - 1e-4 and positions.max() <= HI - R + 1e-4, mode


def test_fast_discs_in_a_box_bounce_elastically():
    rng = np.random.default_rng(1)
    E, A = 4, 4
    agents = separated_agents(rng, E, A, speed=4.0)
    # per-step motion of a few radii: several contacts per step, each resolved in time order
    _, velocity, _ = rollout(box_scenery(E, A), agents, 1000, "bounce")
    energy0 = (np.asarray(agents.velocity) ** 2).sum((-1, -2))
    np.testing.assert_allclose((velocity ** 2).sum((-1, -2)), np.broadcast_to(energy0, (1000, E)), rtol=1e-3)


# ---------------------------------------------------------------------------------------
# kernel == reference, step by step along a rollout with many contacts

@pytest.mark.parametrize("collision", ["stop", "slide", "bounce"])
def test_kernel_matches_reference_along_a_rollout(collision, compiled_backend):
    rng = np.random.default_rng(2)
    E, A = 3, 3
    s = scene.scenery([toys.box(), toys.room_with_column(), toys.box(4.0, 3.0)], n_agents=A, key=jax.random.key(1))
    grid = np.array([[2.0, 2.0], [4.5, 2.0], [2.0, 4.5], [4.5, 4.5], [3.0, 1.6]], np.float32)
    positions = np.stack([grid[rng.permutation(5)[:A]] for _ in range(E)])
    positions[2] = np.clip(positions[2], 1.3, 3.7)
    agents = agents_at(positions, rng.normal(0, 3, (E, A, 2)))
    kernel = jax.jit(lambda a: core.physics(s, a, fps=10.0, collision=collision, restitution=0.8,
                                            backend=compiled_backend))
    ref = jax.jit(lambda a: core.physics(s, a, fps=10.0, collision=collision, restitution=0.8,
                                         backend="reference"))
    contacts = 0
    for step in range(150):
        # stop mode comes to rest; give it fresh velocities so contacts keep happening
        if collision == "stop" and step % 10 == 0:
            agents = agents.replace(velocity=jnp.asarray(rng.normal(0, 3, (E, A, 2)), jnp.float32))
        mk, pk = kernel(agents)
        mr, pr = ref(agents)
        np.testing.assert_allclose(pk, pr, atol=1e-4, err_msg=f"progress, step {step}")
        for name in ("positions", "velocity", "angles", "angvelocity"):
            np.testing.assert_allclose(getattr(mk, name), getattr(mr, name), atol=1e-3,
                                       err_msg=f"{name}, step {step}")
        contacts += int((np.asarray(pk) < 1).sum())
        agents = mk
    assert contacts > 20


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_grazing_motion_in_contact_is_not_stopped_under_slide_and_bounce(backend):
    """An agent in contact (within 1.001 R) moving along a wall, or past a resting agent,
    with a normal component below APPROACH (1e-5) of its motion, as rounding leaves after a
    slide, meets no contact (progress 1); one heading in by 1e-3 of its motion meets it at
    once (progress 0). With no threshold (APPROACH 0, checked in a fresh process) the first
    case gave progress 0: the sign of such a residue decided, and the GPU disagreed."""
    y = LO + 1.0005 * R  # inside the contact distance, outside the radius
    s1, s2 = box_scenery(1, 1), box_scenery(1, 2)
    for mode in ("slide", "bounce"):
        for into, moves_on in ((1e-6, True), (1e-3, False)):
            wall = agents_at([[[3.0, y]]], [[[5.0, -5.0 * into]]])  # towards the bottom wall
            _, progress = core.physics(s1, wall, fps=10.0, collision=mode, backend=backend)
            assert (float(progress[0, 0]) == 1.0) == moves_on, (mode, into, progress)
            # agent 0 passes agent 1 (at rest, just above it), heading up by `into`
            pair = agents_at([[[3.0, 3.0], [3.0, 3.0 + 2.001 * R]]], [[[5.0, 5.0 * into], [0.0, 0.0]]])
            _, progress = core.physics(s2, pair, fps=10.0, collision=mode, backend=backend)
            assert (float(progress[0, 0]) == 1.0) == moves_on, (mode, into, progress)
