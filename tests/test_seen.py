"""The seen-texel kernel (core.mark_seen): Explorer's reward in one call.

Each compiled backend against the jnp reference and against a plain-Python statement of
the rule, on randomised masks, renders and texel tables that include every edge the kernel
must survive (misses, agent lines, indices past the table, NaN locations, texel-less lines,
texels outside the mask, geometry rows outside the table); under vmap with the tables
shared; the packing helpers; argument errors; and the env's use against SceneRuntime.texels.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from megastep_jax import core, kernels
from megastep_jax.envs import Explorer
from megastep_jax.state import Render

from conftest import ALL_BACKENDS, gpus, requires_gpu


def _render(indices, locations):
    z = jnp.zeros(indices.shape, jnp.float32)
    return Render(indices=jnp.asarray(indices), locations=jnp.asarray(locations), dots=z,
                  distances=z, screen=z[..., None])


def random_case(seed, E=6, A=2, R=48, G=3, L=40, W=9):
    rng = np.random.default_rng(seed)
    widths = rng.integers(0, 14, (G, L)).astype(np.int32)
    starts = rng.integers(-5, 32 * W + 5, (G, L)).astype(np.int32)
    starts[0, 3] = 2**31 - 3  # start + k overflows int32
    indices = rng.integers(-1, L + 3, (E, A, R)).astype(np.int32)
    locations = rng.uniform(-0.2, 1.2, (E, A, R)).astype(np.float32)
    locations[0, 0, :4] = [np.nan, np.inf, -np.inf, 1.0]
    indices[0, 0, 4:8] = 3  # the line whose texels overflow int32
    seen = rng.integers(-2**31, 2**31 - 1, (E, W), dtype=np.int64).astype(np.int32)
    geometry = rng.integers(-1, G + 1, E).astype(np.int32)
    if E >= 3:
        indices[1, :, :] = max(indices[1, 0, 0], 8)  # one line under every pixel: repeats count once
        seen[2] = 0
        geometry[:3] = [0, 1, 2]
    return seen, indices, locations, geometry, starts, widths


def spec(seen, indices, locations, geometry, starts, widths, n_agents):
    """The rule, texel by texel in Python."""
    E, W = seen.shape
    G, L = starts.shape
    out, new = seen.copy(), np.zeros(E, np.int32)
    for e in range(E):
        g = geometry[e]
        mask = np.unpackbits(seen[e].view(np.uint8), bitorder="little").astype(bool)
        before = mask.copy()
        if 0 <= g < G:
            for j, loc in zip(indices[e].ravel(), locations[e].ravel()):
                if not n_agents * 8 <= j < L or widths[g, j] < 1 or np.isnan(loc):
                    continue
                w = int(widths[g, j])
                f = np.floor(np.float32(w) * np.float32(loc))
                k = 0 if f <= 0 else (w - 1 if f >= w - 1 else int(f))
                t = int(starts[g, j]) + k
                if 0 <= t < 32 * W:
                    mask[t] = True
        new[e] = int(mask.sum() - before.sum())
        out[e] = np.packbits(mask, bitorder="little").view(np.int32)
    return out, new


@functools.lru_cache(maxsize=None)
def jitted(backend, n_agents):
    return jax.jit(lambda s, i, l, g, st, w: core.mark_seen(s, _render(i, l), st, w, g, n_agents,
                                                            backend=backend))


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mark_seen_matches_the_rule(backend, seed):
    case = random_case(seed)
    n_agents = seed % 3  # 0, 1 or 2 agents' lines below the walls
    words, new = jitted(backend, n_agents)(*map(jnp.asarray, case))
    expect_words, expect_new = spec(*case, n_agents)
    np.testing.assert_array_equal(np.asarray(new), expect_new)
    np.testing.assert_array_equal(np.asarray(words), expect_words)
    assert expect_new.sum() > 0  # the case does mark texels


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_mark_seen_under_vmap_with_the_tables_shared(backend):
    seen, indices, locations, geometry, starts, widths = random_case(5, E=1)
    B = 4
    rng = np.random.default_rng(7)
    seens = rng.integers(0, 2**31 - 1, (B, *seen.shape)).astype(np.int32)
    idxs = np.stack([np.roll(indices, b, axis=-1) for b in range(B)])
    locs = np.stack([np.roll(locations, b, axis=-1) for b in range(B)])
    geoms = np.stack([np.full_like(geometry, b % 3) for b in range(B)])
    f = jax.vmap(lambda s, i, l, g: core.mark_seen(s, _render(i, l), starts, widths, g, 1,
                                                   backend=backend))
    words, new = jax.jit(f)(seens, idxs, locs, geoms)
    for b in range(B):
        w, n = spec(seens[b], idxs[b], locs[b], geoms[b], starts, widths, 1)
        np.testing.assert_array_equal(np.asarray(words[b]), w)
        np.testing.assert_array_equal(np.asarray(new[b]), n)


def test_pack_and_unpack_round_trip():
    rng = np.random.default_rng(0)
    for T in (1, 31, 32, 33, 100):
        mask = rng.random((3, T)) < 0.4
        words = core.pack_seen(jnp.asarray(mask))
        assert words.shape == (3, core.seen_words(T)) and words.dtype == jnp.int32
        np.testing.assert_array_equal(np.asarray(core.unpack_seen(words, T)), mask)
        np.testing.assert_array_equal(  # numpy's little-endian bit order is the layout
            np.asarray(words).view(np.uint8).reshape(3, -1),
            np.packbits(np.pad(mask, ((0, 0), (0, 32 * words.shape[1] - T))), axis=1, bitorder="little"))


def test_mark_seen_argument_errors():
    seen, indices, locations, geometry, starts, widths = map(jnp.asarray, random_case(0))
    r = _render(indices, locations)
    with pytest.raises(ValueError, match="seen: expected an integer dtype"):
        core.mark_seen(seen.astype(bool), r, starts, widths, geometry, 1)
    with pytest.raises(ValueError, match="geometry: expected shape"):
        core.mark_seen(seen, r, starts, widths, geometry[:2], 1)
    with pytest.raises(ValueError, match="texel_widths: expected shape"):
        core.mark_seen(seen, r, starts, widths[:, :5], geometry, 1)
    with pytest.raises(ValueError, match="render.indices: expected 6 envs"):
        core.mark_seen(seen, _render(indices[:2], locations[:2]), starts, widths, geometry, 1)
    with pytest.raises(ValueError, match="n_agents"):
        core.mark_seen(seen, r, starts, widths, geometry, -1)
    with pytest.raises(ValueError, match="backend"):
        core.mark_seen(seen, r, starts, widths, geometry, 1, backend="gpu")
    with pytest.raises(ValueError, match="n_texels: expected at most 288"):
        core.unpack_seen(seen, 300)


def test_explorer_marks_the_texels_under_its_pixels():
    """The env's kernel call against SceneRuntime.texels (the texel rule in jnp) on real renders."""
    from megastep_jax import toys

    env = Explorer(res=64, subsample=2, geometries=[toys.box(6, 6), toys.column(6, 0.5)])
    params = env.default_params
    scene = env.scene
    keys = jax.random.split(jax.random.PRNGKey(3), 8)
    states = jax.vmap(env.init, in_axes=(0, None))(keys, params)

    @jax.jit
    def both(state):
        r = scene.render(state.geometry, state.agents, params.fov)
        words, new = scene.mark_seen(state.seen, state.geometry, r)
        return words, new, scene.texels(state.geometry, r)

    words, new, texels = jax.vmap(both)(states)
    assert int(new.sum()) > 0
    for e in range(8):
        t = np.asarray(texels[e]).ravel()
        expect = np.zeros(scene.n_texels, bool)
        expect[t[t >= 0]] = True
        np.testing.assert_array_equal(np.asarray(core.unpack_seen(words[e], scene.n_texels)), expect)
        assert int(new[e]) == expect.sum()


@pytest.mark.parametrize("backend", ["kernel", "cuda-emulated"])
def test_the_kernel_checks_shapes_behind_the_wrapper(backend):
    """A wrapper that passed mismatched operands gets the kernel's error, not a bad read."""
    from megastep_jax import kernels

    seen, indices, locations, geometry, starts, widths = map(jnp.asarray, random_case(0))
    with pytest.raises(Exception, match="megastep: geometry: shape"):
        jax.block_until_ready(kernels.seen(seen, indices, locations, geometry[:3], starts, widths, 1,
                                           backend=backend))
    with pytest.raises(Exception, match="megastep: texel_widths: shape"):
        jax.block_until_ready(kernels.seen(seen, indices, locations, geometry, starts, widths[:, :7],
                                           1, backend=backend))


@requires_gpu
def test_mark_seen_on_the_gpu_matches_the_rule():
    assert kernels.CUDA_REGISTERED and gpus(), "JAX sees no GPU, or the CUDA kernels are not built"
    case = random_case(4, E=64, R=256)
    words, new = jitted("kernel", 1)(*jax.device_put(tuple(map(jnp.asarray, case)), gpus()[0]))
    expect_words, expect_new = spec(*case, 1)
    np.testing.assert_array_equal(np.asarray(new), expect_new)
    np.testing.assert_array_equal(np.asarray(words), expect_words)
