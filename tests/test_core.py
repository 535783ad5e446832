"""Validation at the core entry points, gamma, and agent state."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from megastep_jax import core, scene, toys


@pytest.fixture(scope="module")
def box():
    s = scene.scenery([toys.box(), toys.box()], n_agents=1, key=jax.random.key(0))
    a = core.init_agents(2, 1).replace(positions=jnp.full((2, 1, 2), 3.0))
    return s, a


def test_constants_and_gamma():
    assert core.AGENT_RADIUS == pytest.approx(0.106066, abs=1e-6)
    x = jnp.linspace(0, 1, 11)
    np.testing.assert_allclose(core.gamma_decode(core.gamma_encode(x)), x, atol=1e-6)
    assert float(core.gamma_encode(0.5)) == pytest.approx(0.5 ** (1 / 2.2))


def test_init_agents():
    a = core.init_agents(3, 2)
    assert a.positions.shape == (3, 2, 2) and a.angles.shape == (3, 2)
    assert a.n_envs == 3 and a.n_agents == 2
    with pytest.raises(ValueError, match="n_agents"):
        core.init_agents(3, 0)


BAD_RENDER = [
    (dict(res=0), "res"),
    (dict(res=10**6), "res"),
    (dict(res=16.0), "res"),
    (dict(fov=180.0), "fov"),
    (dict(fov=0.0), "fov"),
    (dict(fov=float("nan")), "fov"),
    (dict(fov=jnp.ones(3)), "fov"),
    (dict(radius=-1.0), "radius"),
    (dict(backend="cuda-please"), "backend"),
]


@pytest.mark.parametrize("kwargs,name", BAD_RENDER)
def test_render_rejects_bad_arguments(box, kwargs, name):
    s, a = box
    with pytest.raises(ValueError, match=name):
        core.render(s, a, **kwargs)


@pytest.mark.parametrize("field,value,name", [
    ("positions", jnp.zeros((2, 1, 2)), "agents.positions"),              # not strictly positive
    ("positions", jnp.full((2, 1, 2), jnp.nan), "agents.positions"),
    ("positions", jnp.full((2, 1, 2), jnp.inf), "agents.positions"),
    ("positions", jnp.full((2, 1, 3), 3.0), "agents.positions"),          # wrong shape
    ("positions", jnp.full((2, 1, 2), 3, jnp.int32), "agents.positions"),  # wrong dtype
    ("angles", jnp.zeros((2, 2)), "agents"),                              # wrong number of agents
    ("velocity", jnp.full((2, 1, 2), jnp.nan), "agents.velocity"),
])
def test_bad_agents(box, field, value, name):
    s, a = box
    with pytest.raises(ValueError, match=name):
        core.render(s, a.replace(**{field: value}), res=8)
    with pytest.raises(ValueError, match=name):
        core.physics(s, a.replace(**{field: value}))


def test_mismatched_batch(box):
    s, a = box
    three = core.init_agents(3, 1).replace(positions=jnp.full((3, 1, 2), 3.0))
    with pytest.raises(ValueError, match="envs"):
        core.render(s, three)


@pytest.mark.parametrize("kwargs,name", [
    (dict(fps=0.0), "fps"), (dict(fps=-10.0), "fps"), (dict(collision="teleport"), "collision"),
    (dict(restitution=1.5), "restitution"), (dict(fps=True), "fps"),
])
def test_physics_rejects_bad_arguments(box, kwargs, name):
    s, a = box
    with pytest.raises(ValueError, match=name):
        core.physics(s, a, **kwargs)


def test_bad_scenery(box):
    s, a = box
    with pytest.raises(ValueError, match="scenery"):
        core.render("not a scenery", a)
    with pytest.raises(ValueError, match="scenery.n_lines"):
        core.render(s.replace(n_lines=s.n_lines + 1000), a)
    with pytest.raises(ValueError, match="scenery.textures"):
        core.render(s.replace(textures=s.textures[:, :, :2]), a)
    with pytest.raises(ValueError, match="scenery.lines"):
        core.render(s.replace(lines=s.lines.astype(jnp.int32)), a)


def test_validation_runs_before_the_kernel_under_jit(box):
    s, a = box
    with pytest.raises(ValueError, match="res"):
        jax.jit(lambda a: core.render(s, a, res=-1))(a)


def test_asking_for_missing_cuda_kernels_is_a_clear_error():
    from megastep_jax import kernels

    if kernels.CUDA_REGISTERED:
        pytest.skip("this machine has the CUDA kernels and a GPU")
    with pytest.raises(RuntimeError, match="CUDA"):
        kernels.require("gpu")
    kernels.require("cpu")  # the CPU kernels are always built
