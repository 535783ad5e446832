"""The acceleration grid: its construction, and renders through it equal to casting every line.

The grid traversals ("grid": the camera sweep, per camera on CPU and per block's span of
pixels in the CUDA kernel; "rays": a DDA per pixel) must give exactly the index-order cast's
result ("brute"), bit for bit, including the tie rule between coincident lines; the
brute-force kernel is checked against the jnp reference in test_kernels.py, and here again
on a few of these scenes. The CUDA kernel's traversals run on the CPU through its emulation.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from megastep_jax import core, geometry, kernels, scene, toys
from megastep_jax.state import Scenery

from conftest import gpus, random_geometry, requires_gpu

RADIUS = np.float32(core.AGENT_RADIUS)


@jax.jit
def _all_traversals(s, agents, fov):
    out = {t: kernels.render(s, agents, 64, fov, RADIUS, traversal=t) for t in kernels.TRAVERSALS}
    # the CUDA kernel's own code, compiled for the CPU: its sweep, per-ray DDA and brute force
    for t in ("grid", "rays", "brute"):
        out[f"cuda-emulated {t}"] = kernels.render(s, agents, 64, fov, RADIUS,
                                                   backend="cuda-emulated", traversal=t)
    return out


def assert_traversals_agree(s, agents, fov=100.0):
    """Every traversal gives the brute-force kernel's outputs exactly; returns those."""
    out = _all_traversals(s, agents, jnp.float32(fov))
    brute = out["brute"]
    for name in ("grid", "rays"):
        for field in ("indices", "locations", "dots", "distances", "screen"):
            np.testing.assert_array_equal(getattr(out[name], field), getattr(brute, field),
                                          err_msg=f"{name}: {field}")
    # the CUDA kernel's DDA equals its own brute force exactly (the same function computes
    # both); its sweep hits the same lines, while its ray solve may round otherwise, being
    # compiled in another function that the compiler contracts into FMAs its own way (an 8 cm
    # agent line seen from 29 m: t 1.5e-5 apart). The CPU's agree with all to rounding.
    assert_cuda_sweep_agrees(out["cuda-emulated grid"], out["cuda-emulated brute"])
    emulated = out["cuda-emulated rays"]
    for field in ("indices", "locations", "dots", "distances", "screen"):
        np.testing.assert_array_equal(getattr(emulated, field), getattr(out["cuda-emulated brute"], field),
                                      err_msg=f"cuda-emulated rays: {field}")
    for name in ("grid", "rays"):
        emulated = out[f"cuda-emulated {name}"]
        assert np.mean(np.asarray(emulated.indices) == np.asarray(brute.indices)) > 0.99
        np.testing.assert_allclose(emulated.locations, brute.locations, atol=1e-3)
    return brute


def assert_cuda_sweep_agrees(sweep, brute):
    """The CUDA sweep's render against its brute force: the same line at every pixel, values
    to the rounding of the ray solve (about 1e-5 of t at worst, on short far lines)."""
    np.testing.assert_array_equal(sweep.indices, brute.indices, err_msg="cuda-emulated grid: indices")
    hit = np.asarray(brute.indices) >= 0
    np.testing.assert_array_equal(np.isfinite(np.asarray(sweep.distances)), hit)
    for field, tol in (("distances", 1e-5), ("locations", 1e-4), ("dots", 1e-5), ("screen", 1e-4)):
        np.testing.assert_allclose(np.asarray(getattr(sweep, field))[hit], np.asarray(getattr(brute, field))[hit],
                                   rtol=tol, atol=tol, err_msg=f"cuda-emulated grid: {field}")


def hall(n_walls, size=40.0, seed=0, extra=()):
    """A square hall with n_walls - 4 random short walls inside (plus `extra` walls)."""
    rng = np.random.default_rng(seed)
    box = toys.box(size, size)
    m = max(n_walls - 4, 0)
    starts = rng.uniform(1.5, size, (m, 2))
    angle = rng.uniform(0, 2 * np.pi, m)
    length = rng.uniform(0.3, 2.0, m)
    ends = np.clip(starts + length[:, None] * np.stack([np.cos(angle), np.sin(angle)], 1), 1.1, size + 0.9)
    walls = np.concatenate([box.walls, np.stack([starts, ends], 1)] +
                           [np.asarray(extra, np.float64).reshape(-1, 2, 2)]).astype(np.float32)
    return geometry.geometry(walls, rng.uniform(2, size, (3, 2)).astype(np.float32), box.masks,
                             box.res, id=n_walls)


def random_agents(rng, E, A, lo, hi):
    return core.init_agents(E, A).replace(
        positions=rng.uniform(lo, hi, (E, A, 2)).astype(np.float32),
        angles=rng.uniform(-180, 180, (E, A)).astype(np.float32))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_grid_equals_brute_force_on_random_scenes(seed):
    # coincident and zero-length walls (random_geometry) make near-ties; 4 envs of
    # different wall counts are padded to common grid shapes
    rng = np.random.default_rng(seed)
    geoms = [random_geometry(rng, int(n), id=i) for i, n in enumerate(rng.integers(0, 80, 4))]
    s = scene.scenery(geoms, n_agents=2, key=jax.random.key(seed))
    assert s.has_grid and s.grid_dims.shape == (4, 2)
    agents = random_agents(rng, 4, 2, 1.3, 8.7)
    for fov in (60.0, 130.0, 179.0):
        brute = assert_traversals_agree(s, agents, fov)
    assert (np.asarray(brute.indices) >= 8 * 2).mean() > 0.5  # mostly walls seen


def test_grid_matches_reference():
    rng = np.random.default_rng(5)
    s = scene.scenery([hall(300, size=12.0, seed=5)], n_agents=3, key=jax.random.key(0))
    agents = random_agents(rng, 1, 3, 1.5, 12.5)
    rk = core.render(s, agents, res=64, fov=120.0)
    rr = core.render(s, agents, res=64, fov=120.0, backend="reference")
    agree = np.asarray(rk.indices == rr.indices)
    assert agree.mean() >= 0.99
    np.testing.assert_allclose(np.asarray(rk.distances)[agree], np.asarray(rr.distances)[agree], rtol=1e-5, atol=1e-4)


def test_ties_between_coincident_and_collinear_walls_keep_index_order():
    # many copies of the same walls, and collinear walls sharing endpoints: most rays see
    # several lines within the tie distance, so the near-tie path decides them
    base = np.array([[[3, 2], [3, 8]], [[2, 6], [8, 6]], [[5, 1.5], [5, 4]], [[5, 4], [5, 9]]], np.float32)
    jitter = np.random.default_rng(0).normal(0, 2e-5, (6,) + base.shape).astype(np.float32)
    walls = np.concatenate([base] + list(base + jitter) + [base[::-1]])
    g = hall(4, size=10.0, extra=walls)
    s = scene.scenery([g], n_agents=1, key=jax.random.key(1))
    rng = np.random.default_rng(2)
    agents = random_agents(rng, 1, 1, 1.5, 9.5)
    for angle in np.linspace(-180, 180, 13)[:-1]:
        assert_traversals_agree(s, agents.replace(angles=jnp.full((1, 1), angle, jnp.float32)), 150.0)


def test_zero_length_and_very_long_walls():
    extra = [[[5, 5], [5, 5]], [[7.5, 3], [7.5, 3]],           # zero length
             [[0.5, 0.7], [39.5, 39.2]], [[39, 1], [1, 38.5]],  # across the whole hall
             [[1.2, 20], [39.8, 20.001]]]
    s = scene.scenery([hall(200, extra=extra)], n_agents=2, key=jax.random.key(2))
    rng = np.random.default_rng(3)
    for _ in range(3):
        assert_traversals_agree(s, random_agents(rng, 1, 2, 1.5, 39.5), 130.0)


def test_agents_outside_the_grid():
    # walls only in [10, 20]^2; cameras far outside it, looking every way
    rng = np.random.default_rng(4)
    walls = rng.uniform(10, 20, (40, 2, 2)).astype(np.float32)
    g = geometry.geometry(walls, np.array([[15, 15]], np.float32), np.ones((60, 60), np.int32), 0.5)
    s = scene.scenery([g], n_agents=4, key=jax.random.key(3))
    x0, y0, cs = np.asarray(s.grid_origin[0])
    nx, ny = np.asarray(s.grid_dims[0])
    positions = np.array([[[2, 2], [25, 15], [15, 28], [0.5, 14]]], np.float32)
    assert np.all((positions[0, :, 0] < x0) | (positions[0, :, 0] > x0 + nx * cs) |
                  (positions[0, :, 1] < y0) | (positions[0, :, 1] > y0 + ny * cs))
    for angle in np.linspace(-180, 180, 9)[:-1]:
        toward = core.init_agents(1, 4).replace(
            positions=positions, angles=jnp.full((1, 4), angle, jnp.float32))
        brute = assert_traversals_agree(s, toward, 90.0)
    # and aimed at the walls' centre, where they must see walls
    aim = np.degrees(np.arctan2(15 - positions[0, :, 1], 15 - positions[0, :, 0]))
    r = assert_traversals_agree(s, core.init_agents(1, 4).replace(
        positions=positions, angles=jnp.asarray(aim[None], jnp.float32)), 60.0)
    assert np.all(np.asarray(r.indices)[0, :, 32] >= 32)


def _lattice_grid(s, cs=1.0, n=10):
    """A hand-made grid over [0, n*cs]^2 listing each wall in every cell of its padded box."""
    E, L = s.lines.shape[:2]
    first = 8 * s.n_agents
    cells = [[] for _ in range(n * n)]
    lines = np.asarray(s.lines)
    for j in range(first, int(s.n_lines[0])):
        lo = np.floor((lines[0, j].min(0) - 1e-3) / cs).astype(int).clip(0, n - 1)
        hi = np.floor((lines[0, j].max(0) + 1e-3) / cs).astype(int).clip(0, n - 1)
        for iy in range(lo[1], hi[1] + 1):
            for ix in range(lo[0], hi[0] + 1):
                cells[iy * n + ix].append(j)
    offsets = np.concatenate([[0], np.cumsum([len(c) for c in cells])]).astype(np.int32)
    entries = np.concatenate([np.array(c, np.int32) for c in cells] + [np.zeros(1, np.int32)])
    return s.replace(grid_cells=jnp.asarray(offsets[None]), grid_lines=jnp.asarray(entries[None]),
                     grid_origin=jnp.asarray([[0.0, 0.0, cs]], jnp.float32),
                     grid_dims=jnp.asarray([[n, n]], jnp.int32))


def test_walls_on_cell_edges_and_rays_through_cell_corners():
    # walls on the integer lattice of a grid of unit cells: on cell edges, ending at corners
    walls = [[[x, 1], [x, 9]] for x in (2, 5, 8)] + [[[1, y], [9, y]] for y in (3, 7)]
    walls += [[[1, 1], [9, 9]], [[3, 4], [4, 4]], [[6, 6], [6, 8]]]
    walls = np.array(walls, np.float32)
    g = geometry.geometry(walls, np.array([[4.5, 4.5]], np.float32), np.ones((20, 20), np.int32), 0.5)
    s = _lattice_grid(scene.scenery([g], n_agents=1, key=jax.random.key(4)))
    core.validate_scenery(s)
    # cameras on cell edges and corners, some rays along edges and through corners
    for pos, angle in [((4.0, 4.0), 45.0), ((3.0, 5.5), 0.0), ((6.5, 2.0), 90.0),
                       ((4.0, 6.0), -135.0), ((7.0, 5.0), 180.0), ((1.5, 1.5), 45.0)]:
        a = core.init_agents(1, 1).replace(positions=jnp.array([[pos]], jnp.float32),
                                           angles=jnp.array([[angle]], jnp.float32))
        for fov in (90.0, 45.0):
            assert_traversals_agree(s, a, fov)


def test_walls_ending_on_pixel_rays():
    """Walls whose ends lie on the camera's pixel rays (t at 0 or 1 up to rounding either way):
    the CPU line sweep decides t in [0, 1] without dividing, and must agree exactly with the
    per-ray cast, which divides."""
    rng = np.random.default_rng(11)
    res, fov, p = 64, 90.0, np.array([5.0, 5.0], np.float32)
    v = (res - 2 * np.arange(res) - 1) / res * np.float32(np.tan(np.radians(fov / 2)))
    rays = np.stack([np.ones(res), v], 1).astype(np.float32)  # angle 0: u = (1, v)
    r0 = rng.integers(0, res - 1, 60)
    r1 = np.clip(r0 + rng.integers(1, 6, 60), 0, res - 1)
    d0, d1 = rng.uniform(0.5, 3.5, 60), rng.uniform(0.5, 3.5, 60)
    walls = np.stack([p + d0[:, None] * rays[r0], p + d1[:, None] * rays[r1]], 1)
    walls = np.concatenate([toys.box(12.0, 12.0).walls, walls.astype(np.float32)])
    g = geometry.geometry(walls, np.array([[2.0, 2.0], [9.0, 9.0]], np.float32),
                          np.ones((26, 26), np.int32), 0.5)
    s = scene.scenery([g], n_agents=1, key=jax.random.key(5))
    a = core.init_agents(1, 1).replace(positions=jnp.asarray(p)[None, None], angles=jnp.zeros((1, 1)))
    brute = _all_traversals(s, a, jnp.float32(fov))["brute"]
    assert (np.asarray(brute.indices) >= 8 + 4).mean() > 0.5  # the rays meet the added walls
    # at res 64 (the shared jit): these pixels' rays are the ones the walls were built on
    assert_traversals_agree(s, a, fov)


def test_a_ray_through_a_walls_end_exactly():
    """Pixel 31 of 64 meets a wall exactly at its end (t == 1 to the bit): the CPU line
    sweep, which decides t in [0, 1] without dividing, keeps the hit as the per-ray cast
    does. The ray's slope is computed as the kernel does (glibc's tanf)."""
    import ctypes

    tanf = ctypes.CDLL("libm.so.6").tanf
    tanf.argtypes, tanf.restype = [ctypes.c_float], ctypes.c_float
    fov = np.float32(100.0)
    tan_half = np.float32(tanf(fov * (np.float32(np.pi) / np.float32(360.0))))
    v = np.float32(np.float32(1.0) / np.float32(64.0) * tan_half)  # pixel 31: (64 - 62 - 1) / 64
    # camera (1.5, 1.5) facing +x, ray (1, v); wall x = 3.5 from y = 0.5 up by rise = 1 + 2v:
    # w = (2, -1), d = (0, rise), so tnum = 2v + 1 = rise = denom exactly
    rise = np.float32(np.float32(1.0) + np.float32(2.0) * v)
    wall = np.array([[[3.5, 0.5], [3.5, np.float32(0.5) + rise]]], np.float32)
    assert wall[0, 1, 1] - wall[0, 0, 1] == rise
    g = geometry.geometry(np.concatenate([toys.box(6.0, 6.0).walls, wall]),
                          np.array([[3.0, 3.0]], np.float32), np.ones((14, 14), np.int32), 0.5)
    s = scene.scenery([g], n_agents=1, key=jax.random.key(6))
    a = core.init_agents(1, 1).replace(positions=jnp.array([[[1.5, 1.5]]], jnp.float32),
                                       angles=jnp.zeros((1, 1)))
    brute = assert_traversals_agree(s, a, float(fov))
    assert int(brute.indices[0, 0, 31]) == 8 + 4, brute.indices[0, 0, 28:35]
    assert float(brute.locations[0, 0, 31]) == 1.0


def test_built_grid_lists_every_wall_where_its_points_fall():
    rng = np.random.default_rng(6)
    walls = np.concatenate([rng.uniform(0, 30, (300, 2, 2)),
                            np.array([[[3, 3], [3, 3]], [[0, 0], [30, 30]], [[0, 15], [30, 15]]])])
    offsets, entries, origin, dims = scene._env_grid(walls.astype(np.float32), 8, 1.0)
    x0, y0, cs = origin.astype(np.float32)
    nx, ny = dims
    t = np.linspace(0, 1, 101, dtype=np.float32)[:, None]
    for j, w in enumerate(walls.astype(np.float32)):
        pts = w[0] + t * (w[1] - w[0])
        # the cell each point falls in, as the kernel computes it in float32, and its
        # neighbours where the point is within 1e-4 cells of an edge
        for eps in (-1e-4, 0.0, 1e-4):
            ix = np.floor((pts[:, 0] - x0) / cs + eps).astype(int)
            iy = np.floor((pts[:, 1] - y0) / cs + eps).astype(int)
            assert np.all((ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny))
            for c in np.unique(iy * nx + ix):
                assert 8 + j in entries[offsets[c]:offsets[c + 1]], (j, c)
    # each wall is listed once per cell, cells in order, lines in index order within a cell
    for c in range(nx * ny):
        cell = entries[offsets[c]:offsets[c + 1]]
        assert np.all(np.diff(cell) > 0)


def test_one_wall_and_five_thousand_walls():
    rng = np.random.default_rng(7)
    one = geometry.geometry(np.array([[[2, 2], [4, 5]]], np.float32), np.zeros((0, 2), np.float32),
                            np.ones((10, 10), np.int32), 0.5)
    s = scene.scenery([one], n_agents=1, key=jax.random.key(5))
    assert int(np.asarray(s.grid_dims[0]).prod()) <= 2  # about one cell per wall
    a = core.init_agents(1, 1).replace(positions=jnp.array([[[1.0, 1.0]]]), angles=jnp.array([[50.0]]))
    r = assert_traversals_agree(s, a, 90.0)
    assert np.any(np.asarray(r.indices) == 8)
    many = scene.scenery([hall(5000)], n_agents=2, key=jax.random.key(6))
    assert int(many.grid_dims[0].prod()) > 1000
    for _ in range(2):
        assert_traversals_agree(many, random_agents(rng, 1, 2, 1.5, 39.5), 130.0)


@pytest.mark.parametrize("res", [65, 150])
def test_cuda_sweep_over_several_blocks_of_one_camera(res):
    # The CUDA kernel sweeps each 64-pixel span of a camera in its own block, with its own
    # wedge and stopping ring; a partial last span has idle threads that only help stage.
    # Agents near the hall's sides facing in, and one in its middle: near and far rays.
    s = scene.scenery([hall(700, seed=3)], n_agents=3, key=jax.random.key(8))
    a = core.init_agents(1, 3).replace(
        positions=jnp.array([[[2.0, 20.0], [20.0, 20.0], [38.5, 3.0]]], jnp.float32),
        angles=jnp.array([[0.0, 33.0, 120.0]], jnp.float32))
    fov = jnp.float32(150.0)
    emulated = {t: kernels.render(s, a, res, fov, RADIUS, backend="cuda-emulated", traversal=t)
                for t in ("grid", "brute")}
    cpu = kernels.render(s, a, res, fov, RADIUS, traversal="brute")
    assert_cuda_sweep_agrees(emulated["grid"], emulated["brute"])
    assert np.mean(np.asarray(emulated["grid"].indices) == np.asarray(cpu.indices)) > 0.99
    assert len(np.unique(np.asarray(cpu.indices))) > 20  # many walls seen


@requires_gpu
def test_traversals_on_the_gpu_agree():
    # The CUDA kernel on a GPU: its sweep (several blocks per camera at res 150) and its DDA
    # against its brute force, and against the CPU kernel, on halls of 700 and 5,000 walls.
    assert kernels.CUDA_REGISTERED and gpus(), "JAX sees no GPU, or the CUDA kernels are not built"
    rng = np.random.default_rng(11)
    for n_walls in (700, 5000):
        s = scene.scenery([hall(n_walls, seed=n_walls)], n_agents=4, key=jax.random.key(n_walls))
        a = random_agents(rng, 1, 4, 1.5, 39.5)

        @jax.jit
        def every(sc, ag):
            return {t: kernels.render(sc, ag, 150, jnp.float32(130.0), RADIUS, traversal=t)
                    for t in ("grid", "rays", "brute")}

        gpu = jax.device_get(every(*jax.device_put((s, a), gpus()[0])))
        cpu = jax.device_get(every(*jax.device_put((s, a), jax.devices("cpu")[0])))
        assert_cuda_sweep_agrees(gpu["grid"], gpu["brute"])
        np.testing.assert_array_equal(gpu["rays"].indices, gpu["brute"].indices)
        np.testing.assert_allclose(gpu["rays"].distances, gpu["brute"].distances, rtol=1e-5)
        assert np.mean(np.asarray(gpu["grid"].indices) == np.asarray(cpu["brute"].indices)) > 0.99


def test_vmap_over_fov_with_an_unbatched_gridded_scenery():
    rng = np.random.default_rng(8)
    geoms = [random_geometry(rng, n, id=i) for i, n in enumerate([30, 3])]
    s = scene.scenery(geoms, n_agents=2, key=jax.random.key(7))
    agents = random_agents(rng, 2, 2, 1.5, 8.5)
    fovs = jnp.array([40.0, 100.0, 170.0])
    swept = jax.jit(jax.vmap(lambda fov: core.render(s, agents, res=32, fov=fov)))(fovs)
    for i, fov in enumerate(fovs):
        brute = kernels.render(s, agents, 32, fov, RADIUS, traversal="brute")
        np.testing.assert_array_equal(swept.indices[i], brute.indices)
        np.testing.assert_array_equal(swept.distances[i], brute.distances)


def test_hand_made_scenery_without_a_grid_renders_and_build_grid_adds_one():
    s = scene.scenery([toys.column(), toys.box()], n_agents=1, key=jax.random.key(8))
    plain = Scenery(**{f: getattr(s, f) for f in ("lines", "n_lines", "lights", "n_lights", "textures",
                                                  "texel_starts", "texel_widths", "baked", "model")},
                    n_agents=1)
    assert not plain.has_grid
    agents = random_agents(np.random.default_rng(9), 2, 1, 1.5, 4.5)
    without = core.render(plain, agents, res=32)
    rebuilt = scene.build_grid(plain)
    with_grid = core.render(rebuilt, agents, res=32)
    np.testing.assert_array_equal(without.indices, with_grid.indices)
    np.testing.assert_array_equal(without.distances, with_grid.distances)
    for f in Scenery.GRID_FIELDS:
        np.testing.assert_array_equal(getattr(rebuilt, f), getattr(s, f))
    assert not s.without_grid().has_grid


def test_grid_validation_errors():
    s = scene.scenery([toys.box()], n_agents=1, key=jax.random.key(9))
    a = core.init_agents(1, 1).replace(positions=jnp.full((1, 1, 2), 3.0))
    with pytest.raises(ValueError, match="scenery.grid_cells: the grid fields come together"):
        core.render(s.replace(grid_cells=None), a)
    with pytest.raises(ValueError, match="scenery.grid_dims"):
        core.render(s.replace(grid_dims=s.grid_dims * 1000), a)
    with pytest.raises(ValueError, match="scenery.grid_cells: expected non-decreasing"):
        core.render(s.replace(grid_cells=s.grid_cells[:, ::-1]), a)
    with pytest.raises(ValueError, match="scenery.grid_lines: expected wall indices"):
        core.render(s.replace(grid_lines=s.grid_lines.at[0, 0].set(2)), a)
    with pytest.raises(ValueError, match="scenery.grid_origin"):
        core.render(s.replace(grid_origin=s.grid_origin.at[0, 2].set(-1.0)), a)
    with pytest.raises(ValueError, match="cells_per_wall"):
        scene.build_grid(s, cells_per_wall=0.0)


def test_a_corrupt_grid_never_reads_out_of_bounds():
    # the kernel clamps what it reads: garbage grids give some render, never a crash
    s = scene.scenery([toys.box()], n_agents=1, key=jax.random.key(10))
    a = core.init_agents(1, 1).replace(positions=jnp.full((1, 1, 2), 3.0))
    for bad in (dict(grid_cells=jnp.full_like(s.grid_cells, 10**6)),
                dict(grid_lines=jnp.full_like(s.grid_lines, -5)),
                dict(grid_dims=jnp.array([[10**5, 10**5]], jnp.int32)),
                dict(grid_origin=jnp.array([[jnp.nan, 0.0, 1.0]], jnp.float32))):
        r = kernels.render(s.replace(**bad), a, 16, jnp.float32(90.0), RADIUS)
        assert r.indices.shape == (1, 1, 16)
