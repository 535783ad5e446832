"""The CUDA file run on the CPU (backend="cuda-emulated"), and on a GPU where there is one.

First the emulator itself (csrc/cuda_emulation.h): barriers, shared memory, CUDA's launch
limits. Then the launch edges of the kernels, each compiled backend against the jnp
reference or the CPU kernel: resolutions that are not whole warps, res 1, empty vmap
batches, vmap over fov, fps and radius with the scenery unbatched, and agent counts either
side of what dynamic shared memory holds. Last, the compiled CUDA kernels on a real GPU
against the CPU kernel (skipped without one; `make gpu-check` runs it).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from megastep_jax import core, kernels, scene, toys

from conftest import gpus, requires_gpu

emu = kernels._megastep_cuda_emulated
pytestmark = pytest.mark.skipif(emu is None, reason="built without MEGASTEP_CUDA_EMULATED")


# ---------------------------------------------------------------------------------------
# The emulator

@pytest.mark.parametrize("blocks, threads", [(1, 1), (3, 32), (2, 256), (1, 1024)])
def test_block_reduction_through_shared_memory_and_barriers(blocks, threads):
    x = (np.arange(1000) % 7).astype(np.float32)
    # every block sums all of x: a tree over shared memory, one __syncthreads per level
    assert emu.reduce_sum(x.tolist(), blocks, threads, threads * 4) == [float(x.sum())] * blocks


def test_syncthreads_or_gives_every_thread_whether_any_thread_asked():
    # rounds: none set, the last thread only, all, the first only, none again (the result
    # of one barrier must not leak into the next)
    threads = 64
    rounds = [np.zeros(threads, int), np.eye(threads, dtype=int)[-1], np.ones(threads, int),
              np.eye(threads, dtype=int)[0] * 7, np.zeros(threads, int)]
    got = np.array(emu.syncthreads_or(np.concatenate(rounds).tolist(), threads)).reshape(len(rounds), threads)
    np.testing.assert_array_equal(got != 0, np.array([[r.any()] * threads for r in rounds]))


def test_a_divergent_barrier_fails_the_launch_instead_of_hanging():
    with pytest.raises(RuntimeError, match="divergent barrier"):
        emu.reduce_sum([1.0] * 10, 2, 32, 128, diverge=True)


def test_a_launch_past_the_limits_does_not_run_and_says_why():
    with pytest.raises(RuntimeError, match=r"invalid configuration argument.*block \(1025, 1, 1\)"):
        emu.reduce_sum([1.0], 1, 1025, 4)
    with pytest.raises(RuntimeError, match="invalid argument.*49156 bytes of dynamic shared memory"):
        emu.reduce_sum([1.0], 1, 32, 49156)


@pytest.mark.parametrize("grid, block, shared, error", [
    ((1, 1, 1), (1024, 1, 1), 49152, ""),
    ((1, 1, 1), (1025, 1, 1), 0, "(1024, 1024, 64)"),
    ((1, 1, 1), (32, 32, 1), 0, ""),
    ((1, 1, 1), (32, 33, 1), 0, "more than 1024 threads"),
    ((1, 1, 1), (1, 1, 64), 0, ""),
    ((1, 1, 1), (1, 1, 65), 0, "(1024, 1024, 64)"),
    ((1, 1, 1), (32, 1, 1), 49153, "49153 bytes"),
    ((2**31 - 1, 65535, 65535), (1, 1, 1), 0, ""),
    ((2**31, 1, 1), (1, 1, 1), 0, "grid"),
    ((1, 65536, 1), (1, 1, 1), 0, "grid"),
    ((1, 1, 65536), (1, 1, 1), 0, "grid"),
    ((0, 1, 1), (1, 1, 1), 0, "empty grid"),
    ((1, 1, 1), (1, 0, 1), 0, "empty block"),
])
def test_launch_limits(grid, block, shared, error):
    got = emu.check_launch(grid, block, shared)
    if error:
        assert error in got
    else:
        assert got == ""


def test_grids_past_two_to_the_31_blocks_use_the_y_axis():
    x_max = 2**31 - 1
    assert emu.grid_for(1) == (1, 1, 1)
    assert emu.grid_for(x_max) == (x_max, 1, 1)
    assert emu.grid_for(x_max + 1) == (x_max, 2, 1)
    assert emu.max_blocks() == x_max * 65535
    assert emu.grid_for(emu.max_blocks()) == (x_max, 65535, 1)
    for n in (x_max + 1, 5 * x_max - 3, emu.max_blocks()):
        x, y, _ = emu.grid_for(n)
        assert x * (y - 1) < n <= x * y  # every block is launched, the last row partly


# ---------------------------------------------------------------------------------------
# Launch edges of the kernels, each compiled backend against the reference

def _agree(rk, rr, min_agree=0.999):
    """Renders agree: same hit for almost every pixel, near-ties elsewhere, same values."""
    ik, ir = np.asarray(rk.indices), np.asarray(rr.indices)
    assert ik.shape == ir.shape
    agree = ik == ir
    assert agree.mean() >= min_agree, agree.mean()
    dk, dr = np.asarray(rk.distances), np.asarray(rr.distances)
    np.testing.assert_allclose(dk[~agree], dr[~agree], atol=2e-3)
    np.testing.assert_allclose(dk[agree], dr[agree], atol=1e-4, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(rk.screen)[agree], np.asarray(rr.screen)[agree], atol=1e-4)


@functools.lru_cache(maxsize=None)
def _render(backend, res):
    return jax.jit(lambda s, a, fov: core.render(s, a, res=res, fov=fov, backend=backend))


@pytest.mark.parametrize("res", [1, 31, 33])
def test_render_at_resolutions_that_are_not_whole_warps(random_scene, compiled_backend, res):
    s, agents = random_scene
    rk = _render(compiled_backend, res)(s, agents, 120.0)
    assert rk.indices.shape == (3, 3, res) and rk.screen.shape == (3, 3, res, 3)
    _agree(rk, _render("reference", res)(s, agents, 120.0))


def test_empty_vmap_batches(random_scene, compiled_backend):
    s, agents = random_scene
    b = compiled_backend
    r = jax.vmap(lambda fov: core.render(s, agents, res=8, fov=fov, backend=b))(jnp.zeros((0,)))
    assert r.indices.shape == (0, 3, 3, 8) and r.screen.shape == (0, 3, 3, 8, 3)
    moved, progress = jax.vmap(lambda fps: core.physics(s, agents, fps=fps, backend=b))(jnp.zeros((0,)))
    assert progress.shape == (0, 3, 3) and moved.positions.shape == (0, 3, 3, 2)
    # an empty inner axis under a full outer one
    nested = jax.vmap(jax.vmap(lambda fov, fps: (core.render(s, agents, res=4, fov=fov, backend=b).distances,
                                                 core.physics(s, agents, fps=fps, backend=b)[1]),
                               (0, None)), (None, 0))
    d, p = nested(jnp.zeros((0,)), jnp.array([5.0, 10.0]))
    assert d.shape == (2, 0, 3, 3, 4) and p.shape == (2, 0, 3, 3)


@functools.lru_cache(maxsize=None)
def _vmapped(backend):
    """Render vmapped over (fov, radius) and slide physics over (fps, radius), scenery unbatched."""
    fovs, radii, fps = jnp.array([60.0, 100.0, 170.0]), jnp.array([0.0, 0.1, 0.3]), jnp.array([4.0, 10.0, 30.0])

    def run(s, agents):
        render = jax.vmap(lambda fov, rad: core.render(s, agents, res=24, fov=fov, radius=rad, backend=backend))
        physics = jax.vmap(lambda f, rad: core.physics(s, agents, fps=f, radius=rad, collision="slide",
                                                       backend=backend))
        return render(fovs, radii), physics(fps, radii)

    return jax.jit(run)


def test_vmap_over_fov_fps_and_radius_with_unbatched_scenery_matches_reference(random_scene,
                                                                                compiled_backend):
    s, agents = random_scene
    agents = agents.replace(velocity=agents.velocity * 10)
    (rk, (mk, pk)), (rr, (mr, pr)) = _vmapped(compiled_backend)(s, agents), _vmapped("reference")(s, agents)
    assert rk.indices.shape == (3, 3, 3, 24) and pk.shape == (3, 3, 3)
    _agree(rk, rr)
    np.testing.assert_allclose(pk, pr, atol=1e-4)
    np.testing.assert_allclose(mk.positions, mr.positions, atol=1e-3)


def _crowd(n_agents, side):
    """One box of `side` metres with n_agents on a grid in it, random headings and velocities."""
    s = scene.scenery([toys.box(side, side)], n_agents=n_agents, key=jax.random.key(0))
    n = int(np.ceil(np.sqrt(n_agents)))
    xs = 1.3 + (side - 0.6) * (np.arange(n) + 0.5) / n
    grid = np.stack(np.meshgrid(xs, xs), -1).reshape(-1, 2)[:n_agents]
    rng = np.random.default_rng(n_agents)
    agents = core.init_agents(1, n_agents).replace(
        positions=jnp.asarray(grid[None], jnp.float32),
        angles=jnp.asarray(rng.uniform(-180, 180, (1, n_agents)), jnp.float32),
        velocity=jnp.asarray(rng.normal(0, 3, (1, n_agents, 2)), jnp.float32))
    return s, agents


@pytest.mark.parametrize("n_agents", [352, 353])
def test_render_either_side_of_the_agents_shared_memory_holds(n_agents):
    # A render block keeps its env's drawn agents (A x 8 lines x 4 floats) in 48 KB of shared
    # memory, less the camera sweep's 4 KB, up to 352 agents; from 353 they are drawn once
    # per env into global memory.
    assert emu.max_shared_agents() == 352
    s, agents = _crowd(n_agents, 12.0)
    re = core.render(s, agents, res=8, backend="cuda-emulated")
    rk = core.render(s, agents, res=8, backend="kernel")
    assert (np.asarray(rk.indices) < 8 * n_agents).mean() > 0.5  # mostly other agents seen
    _agree(re, rk)


@pytest.mark.parametrize("n_envs", [1, 64, 65, 130])
def test_physics_threads_cover_every_env(n_envs):
    # One emulated thread per env, 64 per block: 65 and 130 envs need a partial last block.
    s, agents = _crowd(6, 4.0)
    s = jax.tree_util.tree_map(lambda x: jnp.repeat(x, n_envs, 0) if hasattr(x, "ndim") and x.ndim
                               and x.shape[0] == 1 else x, s)
    rng = np.random.default_rng(n_envs)
    agents = core.init_agents(n_envs, 6).replace(
        positions=jnp.repeat(agents.positions, n_envs, 0),
        angles=jnp.repeat(agents.angles, n_envs, 0),
        velocity=jnp.asarray(rng.normal(0, 20, (n_envs, 6, 2)), jnp.float32))
    me, pe = core.physics(s, agents, collision="stop", backend="cuda-emulated")
    mk, pk = core.physics(s, agents, collision="stop", backend="kernel")
    assert (np.asarray(pk) < 1).any()  # some contacts
    # The two builds round differently (FMA contraction): agreement as with the reference.
    np.testing.assert_allclose(pe, pk, atol=1e-4)
    np.testing.assert_allclose(me.positions, mk.positions, atol=1e-4)
    np.testing.assert_allclose(me.velocity, mk.velocity, atol=1e-4)


# ---------------------------------------------------------------------------------------
# The compiled CUDA kernels on a GPU, against the CPU kernel

@requires_gpu
@pytest.mark.parametrize("collision", ["stop", "slide", "bounce"])
def test_cuda_on_the_gpu_matches_the_cpu_kernel(random_scene, collision):
    assert kernels.CUDA_REGISTERED and gpus(), "JAX sees no GPU, or the CUDA kernels are not built"
    s, agents = random_scene
    agents = agents.replace(velocity=agents.velocity * 10)

    def run(device):
        sd, ad = jax.device_put((s, agents), device)
        f = jax.jit(lambda sc, ag: (core.render(sc, ag, res=40, fov=110.0), core.bake(sc).baked,
                                    core.physics(sc, ag, collision=collision, restitution=0.7)))
        return jax.device_get(f(sd, ad))

    (rg, bg, (mg, pg)), (rc, bc, (mc, pc)) = run(gpus()[0]), run(jax.devices("cpu")[0])
    _agree(rg, rc)
    np.testing.assert_allclose(bg, bc, atol=1e-5)
    np.testing.assert_allclose(pg, pc, atol=1e-4)
    np.testing.assert_allclose(mg.positions, mc.positions, atol=1e-3)
