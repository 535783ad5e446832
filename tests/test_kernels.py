"""The compiled kernels against the jnp reference, SPEC.md's golden case, and batching."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from megastep_jax import core, geometry, scene, toys

from conftest import ALL_BACKENDS, random_geometry


@pytest.fixture(scope="module")
def box_scene():
    s = scene.scenery([toys.box()], n_agents=1, key=jax.random.key(0))
    agents = core.init_agents(1, 1).replace(positions=jnp.full((1, 1, 2), 3.0))
    return s, agents


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_golden_physics_step(box_scene, backend):
    # SPEC.md: box toy, agent at (3, 3), velocity (1000, 0), fps 10 -> (5.8649, 3.0)
    s, agents = box_scene
    agents = agents.replace(velocity=jnp.array([[[1000.0, 0.0]]]))
    moved, progress = core.physics(s, agents, fps=10.0, backend=backend)
    np.testing.assert_allclose(moved.positions[0, 0], [5.8649, 3.0], atol=1e-4)
    assert progress[0, 0] < 1
    # megastep's stop: a collision zeroes all velocity
    np.testing.assert_array_equal(moved.velocity, 0.0)


def test_free_motion_and_turn(box_scene):
    s, agents = box_scene
    agents = agents.replace(velocity=jnp.array([[[1.0, 0.5]]]), angvelocity=jnp.array([[90.0]]),
                            angles=jnp.array([[175.0]]))
    moved, progress = core.physics(s, agents, fps=10.0)
    np.testing.assert_allclose(moved.positions[0, 0], [3.1, 3.05], atol=1e-6)
    np.testing.assert_allclose(moved.angles[0, 0], -176.0, atol=1e-4)  # wrapped into [-180, 180)
    assert progress[0, 0] == 1.0
    np.testing.assert_allclose(moved.velocity, agents.velocity)


def _compare_render(rk, rr):
    agree = np.asarray(rk.indices == rr.indices)
    assert agree.mean() >= 0.999, agree.mean()
    # where they disagree the two hits must be near-ties in distance
    dk, dr = np.asarray(rk.distances), np.asarray(rr.distances)
    if not agree.all():
        np.testing.assert_allclose(dk[~agree], dr[~agree], atol=2e-3)
    np.testing.assert_allclose(dk[agree], dr[agree], atol=1e-4, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(rk.screen)[agree], np.asarray(rr.screen)[agree], atol=1e-4)
    np.testing.assert_allclose(np.asarray(rk.dots)[agree], np.asarray(rr.dots)[agree], atol=1e-4)
    np.testing.assert_allclose(np.asarray(rk.locations)[agree], np.asarray(rr.locations)[agree], atol=1e-4)


render_jit = {b: jax.jit(lambda s, a, fov, b=b: core.render(s, a, res=48, fov=fov, backend=b))
              for b in core.BACKENDS}
render_reference = render_jit["reference"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_render_matches_reference_on_random_scenes(seed, compiled_backend):
    rng = np.random.default_rng(seed)
    geoms = [random_geometry(rng, n, id=i) for i, n in enumerate(rng.integers(0, 30, 4))]
    s = scene.scenery(geoms, n_agents=2, key=jax.random.key(seed))
    agents = core.init_agents(4, 2).replace(
        positions=rng.uniform(1.3, 8.7, (4, 2, 2)).astype(np.float32),
        angles=rng.uniform(-180, 180, (4, 2)).astype(np.float32))
    rk, rr = render_jit[compiled_backend](s, agents, 100.0), render_reference(s, agents, 100.0)
    _compare_render(rk, rr)
    assert np.all(np.asarray(rk.indices) < np.asarray(s.n_lines)[:, None, None])
    hit = np.asarray(rk.indices) >= 0
    assert np.isfinite(np.asarray(rk.distances)[hit]).all()
    assert np.asarray(rk.screen).min() >= 0 and np.asarray(rk.screen).max() <= 1


def test_bake_matches_reference(random_scene, compiled_backend):
    s, _ = random_scene
    np.testing.assert_allclose(core.bake(s, backend=compiled_backend).baked,
                               core.bake(s, backend="reference").baked, atol=1e-5)
    # static texels are lit in [ambient, 1]; agent texels and padding are 1
    baked = np.asarray(s.baked)
    assert baked.min() >= core.AMBIENT - 1e-6 and baked.max() <= 1.0


@pytest.mark.parametrize("collision", ["stop", "slide", "bounce"])
def test_physics_matches_reference(random_scene, collision, compiled_backend):
    s, agents = random_scene
    for scale in [1.0, 30.0, 1000.0]:
        a = agents.replace(velocity=agents.velocity * scale)
        mk, pk = core.physics(s, a, fps=10.0, collision=collision, restitution=0.7,
                              backend=compiled_backend)
        mr, pr = core.physics(s, a, fps=10.0, collision=collision, restitution=0.7, backend="reference")
        np.testing.assert_allclose(pk, pr, atol=1e-4)
        assert np.all((np.asarray(pk) >= 0) & (np.asarray(pk) <= 1))
        # At 1000x an agent travels ~100 m in the step through several contacts; each contact
        # time carries float32 rounding that the later segments compound (the builds differ
        # in FMA contraction), so positions agree to ~1e-4 of the path rather than to 1e-3 m.
        atol = 1e-2 if scale > 100 else 1e-3
        for name in ("positions", "velocity", "angles", "angvelocity"):
            np.testing.assert_allclose(getattr(mk, name), getattr(mr, name), atol=atol, rtol=1e-3,
                                       err_msg=name)


def test_agent_sees_another_agent():
    s = scene.scenery([toys.box()], n_agents=2, key=jax.random.key(1))
    # agent 0 at (2, 3) faces +x towards agent 1 at (4, 3)
    agents = core.init_agents(1, 2).replace(positions=jnp.array([[[2.0, 3.0], [4.0, 3.0]]]))
    for backend in core.BACKENDS:
        r = core.render(s, agents, res=9, fov=30.0, backend=backend)
        middle = int(r.indices[0, 0, 4])
        assert 8 <= middle < 16, middle  # one of agent 1's model lines
        # facing agent 1's back (line 6 of its model, grey) at distance ~2 - 0.075
        assert middle == 8 + 6
        np.testing.assert_allclose(r.distances[0, 0, 4], 2 - 0.075, atol=1e-4)
        assert np.all(np.asarray(r.screen[0, 0, 4]) > 0)  # lit dynamically
        # agent 0 never sees its own model: it is inside the near plane
        assert not np.any((np.asarray(r.indices[0]) >= 0) & (np.asarray(r.indices[0]) < 8))


def test_vmap_over_fov_and_fps_with_shared_scenery(random_scene, compiled_backend):
    s, agents = random_scene
    fovs = jnp.array([60.0, 90.0, 150.0])
    f = lambda fov: core.render(s, agents, res=16, fov=fov, backend=compiled_backend)
    out = jax.jit(jax.vmap(f))(fovs)
    assert out.indices.shape == (3, 3, 3, 16)
    for i, fov in enumerate(fovs):
        single = core.render(s, agents, res=16, fov=float(fov))
        np.testing.assert_array_equal(out.indices[i], single.indices)
        np.testing.assert_allclose(out.distances[i], single.distances, rtol=1e-6)
    fps = jnp.array([5.0, 10.0, 40.0])
    g = lambda fp: core.physics(s, agents, fps=fp, backend=compiled_backend)[1]
    nested = jax.jit(jax.vmap(jax.vmap(lambda fov, fp: (f(fov).distances, g(fp)), (None, 0)), (0, None)))
    d, p = nested(fovs, fps)
    assert d.shape == (3, 3, 3, 3, 16) and p.shape == (3, 3, 3, 3)
    np.testing.assert_allclose(p[0, 2], g(40.0))
    np.testing.assert_allclose(d[2, 1], f(150.0).distances, rtol=1e-6)


def test_vmap_over_batched_scenery_matches_unbatched(random_scene, compiled_backend):
    s, agents = random_scene
    # the 3 envs as a vmapped batch of 3 single-env calls; the model stays shared
    per_env = [f.name for f in dataclasses.fields(s) if f.name not in ("model", "n_agents")]
    split = s.replace(**{f: getattr(s, f)[:, None] for f in per_env})
    axes = s.replace(**{f: 0 for f in per_env}, model=None)
    per_agents = jax.tree_util.tree_map(lambda x: x[:, None], agents)
    r = jax.vmap(lambda sc, ag: core.render(sc, ag, res=16, backend=compiled_backend),
                 in_axes=(axes, 0))(split, per_agents)
    whole = core.render(s, agents, res=16, backend=compiled_backend)
    np.testing.assert_array_equal(r.indices[:, 0], whole.indices)
    np.testing.assert_allclose(r.screen[:, 0], whole.screen, atol=1e-6)


def test_scan_of_render_and_physics(random_scene, compiled_backend):
    s, agents = random_scene

    def step(ag, _):
        ag, progress = core.physics(s, ag, fps=10.0, backend=compiled_backend)
        return ag, (progress, core.render(s, ag, res=8, backend=compiled_backend).distances)

    final, (progress, dist) = jax.jit(lambda: jax.lax.scan(step, agents, None, length=4))()
    assert progress.shape == (4, 3, 3) and dist.shape == (4, 3, 3, 8)
    assert np.all(np.isfinite(np.asarray(final.positions)))


def test_degenerate_scenes_stay_in_bounds():
    from megastep_jax import geometry

    # no walls at all, no lights: rays hit nothing, agents move freely
    g = geometry.geometry(np.zeros((0, 2, 2)), np.zeros((0, 2)), np.zeros((5, 5), np.int32))
    s = scene.scenery([g], n_agents=1, key=jax.random.key(0))
    a = core.init_agents(1, 1).replace(positions=jnp.full((1, 1, 2), 2.0), velocity=jnp.ones((1, 1, 2)))
    for backend in core.BACKENDS:
        r = core.render(s, a, res=8, backend=backend)
        np.testing.assert_array_equal(r.indices, -1)
        assert np.all(np.isinf(np.asarray(r.distances)))
        np.testing.assert_array_equal(r.screen, 0.0)
        moved, progress = core.physics(s, a, backend=backend)
        np.testing.assert_allclose(moved.positions, 2.1)
    # texel offsets pointing outside the texture buffer are drawn black, never read
    s2 = scene.scenery([toys.box()], n_agents=1, key=jax.random.key(0))
    s2 = s2.replace(texel_starts=s2.texel_starts.at[:, 8:].set(10**6))
    a2 = a.replace(positions=jnp.full((1, 1, 2), 3.0))
    for backend in core.BACKENDS:
        r = core.render(s2, a2, res=8, backend=backend)
        assert np.all(np.asarray(r.indices) >= 8)
        np.testing.assert_array_equal(r.screen, 0.0)


def test_traced_fov_out_of_range_gives_nan_not_clipping(box_scene, compiled_backend):
    s, agents = box_scene
    f = jax.jit(lambda fov: core.render(s, agents, res=4, fov=fov, backend=compiled_backend))
    r = f(190.0)
    assert np.all(np.isnan(np.asarray(r.distances))) and np.all(np.asarray(r.indices) == -1)


# ---------------------------------------------------------------------------------------
# The kernel interface: one table (csrc/operands.h), exported by the extension

def test_interface_table_names_every_operand_the_wrappers_pass():
    from megastep_jax import kernels
    from megastep_jax.state import Agents, Scenery

    table = kernels.INTERFACE
    assert [n for n, _, _ in table["render"]["args"]][:8] == [
        "lines", "n_lines", "lights", "n_lights", "textures", "texel_starts", "texel_widths", "baked"]
    fields = {f.name for f in dataclasses.fields(Scenery)} | {f.name for f in dataclasses.fields(Agents)}
    for kernel in ("render", "physics", "bake"):
        for name, dtype, rank in table[kernel]["args"]:
            assert name in fields | {"fov", "radius", "fps", "restitution"}, (kernel, name)
            assert dtype in ("float32", "int32") and 0 <= rank <= 4
    assert table["render"]["attrs"] == ["traversal"] and table["physics"]["attrs"] == ["collision"]
    assert [n for n, _, _ in table["seen"]["args"]] == [
        "seen", "indices", "locations", "geometry", "texel_starts", "texel_widths"]
    assert table["seen"]["attrs"] == ["n_agents"]
    assert [n for n, _, _ in table["seen"]["results"]] == ["seen", "new_texels"]
    assert [n for n, _, _ in table["render"]["results"]] == [f.name for f in dataclasses.fields(core.Render)]


def test_a_renamed_or_retyped_operand_fails_before_the_kernel(box_scene):
    from megastep_jax import kernels

    s, agents = box_scene
    values = dict(lines=s.lines, n_lines=s.n_lines, lights=s.lights, n_lights=s.n_lights,
                  texel_starts=s.texel_starts, texel_widths=s.texel_widths)
    assert len(kernels.ordered("bake", values)) == 6
    # a wrapper passing a name the compiled kernel does not know (or a kernel renaming one)
    renamed = dict(values, walls=values.pop("lines"))
    with pytest.raises(ValueError, match=r"bake: the operands do not match.*missing \['lines'\], unknown \['walls'\]"):
        kernels.ordered("bake", renamed)
    table = jax.tree_util.tree_map(lambda x: x, kernels.INTERFACE)
    table["bake"]["args"][0] = ("segments",) + tuple(table["bake"]["args"][0][1:])
    with pytest.raises(ValueError, match="missing \\['segments'\\]"):
        kernels.ordered("bake", dict(values, lines=s.lines), table)
    # operands swapped by name: the dtype or rank no longer matches the table
    swapped = dict(values, lines=s.lights, lights=s.lines, n_lines=s.n_lines)
    with pytest.raises(ValueError, match="bake: operand lines: the kernel takes float32 of rank 4"):
        kernels.ordered("bake", swapped)
    with pytest.raises(ValueError, match="operand n_lines: the kernel takes int32"):
        kernels.ordered("bake", dict(values, lines=s.lines, n_lines=s.n_lines.astype(jnp.float32)))


def test_operands_swapped_behind_the_wrapper_fail_in_the_kernel(box_scene):
    # passing the kernel two operands in the wrong order (bypassing the table) is caught by
    # its own shape checks, which name the operand, or by the binding's dtypes
    s, agents = box_scene
    call = lambda *args: jax.ffi.ffi_call(
        "megastep_bake", jax.ShapeDtypeStruct(s.baked.shape, jnp.float32), vmap_method="expand_dims",
    )(*args, n_agents=np.int32(1))
    call(s.lines, s.n_lines, s.lights, s.n_lights, s.texel_starts, s.texel_widths)
    with pytest.raises(Exception, match="megastep: lines"):
        call(s.lights, s.n_lines, s.lines, s.n_lights, s.texel_starts, s.texel_widths)
    with pytest.raises(Exception):
        call(s.n_lines, s.lines, s.lights, s.n_lights, s.texel_starts, s.texel_widths)


def test_reference_constants_are_checked_against_the_compiled_ones(monkeypatch):
    from megastep_jax import kernels, reference

    kernels.check_constants()
    assert kernels.COLLISIONS == reference.COLLISIONS == dict(zip(core.COLLISIONS, range(3)))
    monkeypatch.setattr(reference, "TIE_BREAK", 2e-4)
    with pytest.raises(RuntimeError, match="reference.TIE_BREAK = 0.0002 where the compiled kernels use"):
        kernels.check_constants()
    monkeypatch.undo()
    monkeypatch.setattr(reference, "COLLISIONS", {"stop": 0, "bounce": 1, "slide": 2})
    with pytest.raises(RuntimeError, match="COLLISIONS"):
        kernels.check_constants()
    monkeypatch.undo()
    table = jax.tree_util.tree_map(lambda x: x, kernels.INTERFACE)
    table["constants"]["NEW_EPS"] = 1.0
    with pytest.raises(RuntimeError, match="reference.NEW_EPS: missing"):
        kernels.check_constants(table)


@pytest.mark.parametrize("seed", [0, 1])
def test_agents_lit_per_hit_as_with_every_line(seed):
    """The CPU kernel lights a hit on an agent testing only the walls near the light and the
    agent for shadows; the CUDA kernel (emulated) tests every wall. Many lights, walls and
    agents crowded together, so hits on agents are common and some are in shadow."""
    rng = np.random.default_rng(100 + seed)
    size = 6.0
    box = toys.box(size, size)
    inner = rng.uniform(1.1, size + 0.9, (40, 2, 2)).astype(np.float32)
    # short walls around the agents' spots and the lights: shadows near every hit
    spots = rng.uniform(1.5, size + 0.5, (12, 2)).astype(np.float32)
    stubs = spots[:, None, :] + rng.normal(0, 0.4, (12, 2, 2)).astype(np.float32)
    walls = np.concatenate([box.walls, inner, stubs])
    lights = rng.uniform(1.2, size + 0.8, (12, 2)).astype(np.float32)
    E, A = 4, 8
    s = scene.scenery([geometry.geometry(walls, lights, box.masks, box.res)] * E, n_agents=A,
                      key=jax.random.key(seed))
    agents = core.init_agents(E, A).replace(
        positions=np.clip(spots[rng.integers(0, 12, (E, A))] + rng.normal(0, 0.3, (E, A, 2)),
                          1.1, size + 0.9).astype(np.float32),
        angles=rng.uniform(-180, 180, (E, A)).astype(np.float32))
    render = {b: jax.jit(lambda s, a, b=b: core.render(s, a, res=128, fov=150.0, backend=b))
              for b in ("kernel", "cuda-emulated")}
    cpu, cuda = render["kernel"](s, agents), render["cuda-emulated"](s, agents)
    on_agent = (np.asarray(cpu.indices) >= 0) & (np.asarray(cpu.indices) < 8 * A)
    assert on_agent.sum() > 100, on_agent.sum()
    np.testing.assert_array_equal(np.asarray(cpu.indices), np.asarray(cuda.indices))
    # the same light on the agents up to rounding: the two modules contract other products
    # into FMAs (-march=native), so an ulp or two; a shadow missed or cast wrongly would
    # change a pixel by a whole light's term (far above atol)
    np.testing.assert_allclose(np.asarray(cpu.screen)[on_agent], np.asarray(cuda.screen)[on_agent],
                               rtol=1e-6, atol=1e-6)
    # shadows do fall on agents: the same hits lit with no wall between them and the lights
    # would be brighter somewhere
    open_s = scene.scenery([geometry.geometry(box.walls, lights, box.masks, box.res)] * E,
                           n_agents=A, key=jax.random.key(seed))
    unshadowed = render["kernel"](open_s, agents)
    same_hit = on_agent & (np.asarray(unshadowed.indices) == np.asarray(cpu.indices))
    darker = np.asarray(cpu.screen).sum(-1) < np.asarray(unshadowed.screen).sum(-1) - 1e-3
    assert (darker & same_hit).sum() > 10, (darker & same_hit).sum()
