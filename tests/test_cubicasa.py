"""Cubicasa5k: geometries from real SVGs, the dataset cache and split, megastep's caches, bad input."""
import gzip
import io
import json
import re
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from megastep_jax import cubicasa, geometry as geom

from plan_checks import centroid_cell, ray_distances, reachable

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cubicasa"
IDS = ("353", "437", "551")
needs_data = pytest.mark.skipif(not all((DATA / f"{i}.svg").exists() for i in IDS),
                                reason="the three Cubicasa5k SVGs in ../shared/data/cubicasa are absent")

# Rooms under 1 m^2 of free cells are annotation slivers (437's room 7 is a 3-cell strip
# between two wall lines, with no door); every other room must be reachable.
MIN_ROOM_CELLS = 25


def svg_text(i: str) -> str:
    return (DATA / f"{i}.svg").read_text()


def space_classes(text: str) -> list[str]:
    return re.findall(r'class="(Space(?: [^"]*)?)"', text)


@pytest.fixture(scope="module")
def plans():
    if not all((DATA / f"{i}.svg").exists() for i in IDS):
        pytest.skip("the three Cubicasa5k SVGs in ../shared/data/cubicasa are absent")
    return {i: cubicasa.geometry_from_svg(DATA / f"{i}.svg") for i in IDS}


# --------------------------------------------------------------------------- helpers




def spawns(g, per_room: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(K, 2) spawn points, ``per_room`` per room (the middle cells of its cell list), and their rooms."""
    points, rooms = [], []
    for k in range(1, g.masks.max() + 1):
        cells = np.argwhere(g.masks == k)
        for q in np.linspace(0, len(cells) - 1, per_room + 2)[1:-1].astype(int):
            points.append(geom.centers(cells[q], g.masks.shape, g.res))
            rooms.append(k)
    return np.array(points, np.float32), np.array(rooms)


def render_indices(geometries, points_per_geometry, res=96):
    """Line indices seen by an agent at each point, looking all round in three 130-degree views.

    Returns:
        A list, per geometry, of (K, 3 * res) int arrays, -1 where a ray hits nothing.
    """
    from megastep_jax import core, scene, state

    s = scene.scenery(list(geometries), n_agents=1, key=jax.random.key(0))
    env = np.concatenate([np.full(3 * len(p), e) for e, p in enumerate(points_per_geometry)])
    tiled = s.take(env)
    positions = np.concatenate([np.repeat(p, 3, 0) for p in points_per_geometry])
    angles = np.tile(np.float32([0.0, 120.0, -120.0]), len(positions) // 3)
    agents = state.init_agents(len(env), 1).replace(
        positions=jnp.asarray(positions)[:, None], angles=jnp.asarray(angles)[:, None])
    r = jax.jit(lambda s, a: core.render(s, a, res=res, fov=130.0, backend="reference"))(tiled, agents)
    indices = np.asarray(r.indices)[:, 0].reshape(-1, 3 * res)
    out, start = [], 0
    for p in points_per_geometry:
        out.append(indices[start:start + len(p)])
        start += len(p)
    return out


# --------------------------------------------------------------------------- real plans


@needs_data
@pytest.mark.parametrize("i", IDS)
def test_real_plan_counts(plans, i):
    g = plans[i]
    n_spaces = len(space_classes(svg_text(i)))
    assert g.id == int(i)
    assert 50 <= len(g.walls) <= 600
    assert len(g.lights) == n_spaces == g.masks.max()
    assert 8 <= n_spaces <= 20
    assert set(np.unique(g.masks)) == set(range(-1, n_spaces + 1))
    assert g.walls.min() == pytest.approx(geom.MARGIN) and (g.walls > 0).all() and (g.lights > 0).all()
    # Plans are a few metres to a few tens of metres across (SVG units are about 1 cm).
    span = g.walls.reshape(-1, 2).max(0) - g.walls.reshape(-1, 2).min(0)
    assert (span > 5).all() and (span < 40).all()
    assert g.masks.shape == geom.mask_shape(g.walls, g.res)


@needs_data
@pytest.mark.parametrize("i", IDS)
def test_real_plan_spawn_cells_clear_of_walls(plans, i):
    # megastep's masks: cells within 1 cm of a wall are walls, so every room cell's centre
    # (a spawn point) is at least res/2 + 1 cm, more than an agent radius, from every wall.
    import shapely

    g = plans[i]
    centres = geom.centers(np.argwhere(g.masks > 0), g.masks.shape, g.res)
    walls = shapely.union_all(shapely.linestrings(g.walls.astype(np.float64)))
    assert shapely.distance(shapely.points(centres), walls).min() >= g.res / 2 + geom.WALL_BUFFER - 1e-6


@needs_data
@pytest.mark.parametrize("i", IDS)
def test_real_plan_walls_unique_and_nonzero(plans, i):
    g = plans[i]
    assert (np.linalg.norm(g.walls[:, 0] - g.walls[:, 1], axis=-1) > cubicasa.ZERO_LENGTH).all()
    assert len(cubicasa.unique_walls(g.walls)) == len(g.walls)


@needs_data
@pytest.mark.parametrize("i", IDS)
def test_real_plan_doorways_open(plans, i):
    g = plans[i]
    big = [k for k in range(1, g.masks.max() + 1) if (g.masks == k).sum() >= MIN_ROOM_CELLS]
    slivers = sorted(set(range(1, g.masks.max() + 1)) - set(big))
    assert slivers == ({"437": [7]}.get(i, []))
    seen = reachable(g.masks, centroid_cell(g, big[0]))
    unreachable = [k for k in big if not seen[centroid_cell(g, k)]]
    # 353's room 3 is a closet whose doorway the plan leaves 24 cm clear; megastep's masks
    # mark cells within 1 cm of a wall, which closes that gap in the mask (agents, 21 cm
    # across, still fit through it).
    assert unreachable == ({"353": [3]}.get(i, []))


@needs_data
@pytest.mark.parametrize("i", IDS)
def test_real_plan_is_closed_numpy_rays(plans, i):
    g = plans[i]
    points, rooms = spawns(g, per_room=3)
    escaped = {int(k) for p, k in zip(points, rooms) if np.isinf(ray_distances(g.walls, p)).any()}
    assert escaped == set()


@needs_data
def test_megastep_open_plans_leak(plans):
    # closed=False is megastep's behaviour: entrance doors open onto the void.
    g = cubicasa.geometry_from_svg(DATA / "353.svg", closed=False)
    assert len(g.walls) < len(plans["353"].walls)
    points, _ = spawns(g)
    assert any(np.isinf(ray_distances(g.walls, p)).any() for p in points)


@needs_data
def test_real_plans_render_walls_all_round(plans):
    geometries = [plans[i] for i in IDS]
    points = [spawns(g)[0] for g in geometries]
    for g, p, idx in zip(geometries, points, render_indices(geometries, points)):
        assert idx.shape == (len(p), 3 * 96)
        assert (idx >= 8).all(), f"plan {g.id}: rays escaped or hit the agent itself"
        assert (idx < 8 + len(g.walls)).all()


@needs_data
def test_geometry_from_text_and_path_agree(plans):
    g = cubicasa.geometry_from_svg(svg_text("437"), id=437)
    np.testing.assert_array_equal(g.walls, plans["437"].walls)
    np.testing.assert_array_equal(g.masks, plans["437"].masks)
    assert cubicasa.geometry_from_svg(svg_text("437")).id == 0


# --------------------------------------------------------------------------- bad input

SVG_HEAD = '<svg xmlns="http://www.w3.org/2000/svg"><g class="Model"><g class="Floorplan">'
WALL = '<g class="Wall"><polygon points="0,0 400,0 400,15 0,15"/></g>'
SPACE = '<g class="Space Bedroom"><polygon points="0,15 400,15 400,300 0,300"/></g>'
SVG_TAIL = "</g></g></svg>"


def test_svg_without_walls():
    with pytest.raises(ValueError, match="no walls"):
        cubicasa.geometry_from_svg(SVG_HEAD + SPACE + SVG_TAIL)


def test_svg_without_spaces():
    with pytest.raises(ValueError, match="no spaces"):
        cubicasa.geometry_from_svg(SVG_HEAD + WALL + SVG_TAIL)


def test_svg_malformed():
    with pytest.raises(ValueError, match="well-formed"):
        cubicasa.geometry_from_svg(SVG_HEAD + WALL)


def test_minimal_svg_builds():
    g = cubicasa.geometry_from_svg(SVG_HEAD + WALL + SPACE + SVG_TAIL, id=7)
    assert g.id == 7 and len(g.lights) == 1 and (g.masks == 1).any()
    assert g.walls.min() == pytest.approx(geom.MARGIN)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no SVG file"):
        cubicasa.geometry_from_svg(tmp_path / "nope" / "model.svg")


def test_wrong_type():
    with pytest.raises(ValueError, match="svg_text_or_path"):
        cubicasa.geometry_from_svg(3)


def test_no_source(tmp_path, monkeypatch):
    monkeypatch.delenv(cubicasa.SOURCE_ENV, raising=False)
    with pytest.raises(ValueError, match="floorplans.sample") as e:
        cubicasa.sample(1, cache_dir=tmp_path)
    assert "zenodo" in str(e.value)


def test_missing_source(tmp_path):
    with pytest.raises(FileNotFoundError, match="no Cubicasa5k zip or folder"):
        cubicasa.sample(1, source=tmp_path / "cubicasa5k.zip", cache_dir=tmp_path)


def test_corrupt_zip(tmp_path):
    bad = tmp_path / "cubicasa5k.zip"
    bad.write_bytes(b"PK\x03\x04 this is not really a zip file")
    with pytest.raises(ValueError, match="not a readable Cubicasa5k zip"):
        cubicasa.sample(1, source=bad, cache_dir=tmp_path)
    assert not cubicasa.cache_path(tmp_path).exists()


def test_zip_with_corrupt_member(tmp_path):
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("cubicasa5k/high_quality/1/model.svg", SVG_HEAD + WALL + SPACE + SVG_TAIL)
    raw = bytearray(good.read_bytes())
    start = raw.index(b"model.svg") + len(b"model.svg")
    raw[start + 5:start + 25] = b"\xff" * 20  # damage the compressed data
    bad = tmp_path / "bad.zip"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="corrupt zip"):
        cubicasa.sample(1, source=bad, cache_dir=tmp_path / "cache")


def test_source_without_plans(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="found no <id>/model.svg"):
        cubicasa.sample(1, source=tmp_path / "empty", cache_dir=tmp_path)


def test_bad_sample_arguments(tmp_path):
    with pytest.raises(ValueError, match="split"):
        cubicasa.sample(1, split="validation", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="n:"):
        cubicasa.sample(-1, cache_dir=tmp_path)


# --------------------------------------------------------------------------- dataset


@pytest.fixture
def dataset(tmp_path):
    """A miniature Cubicasa5k folder and zip holding the three real plans."""
    if not all((DATA / f"{i}.svg").exists() for i in IDS):
        pytest.skip("the three Cubicasa5k SVGs in ../shared/data/cubicasa are absent")
    folder = tmp_path / "cubicasa5k"
    archive = tmp_path / "cubicasa5k.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        for i in IDS:
            (folder / "high_quality_architectural" / i).mkdir(parents=True)
            (folder / "high_quality_architectural" / i / "model.svg").write_text(svg_text(i))
            z.writestr(f"cubicasa5k/high_quality_architectural/{i}/model.svg", svg_text(i))
            z.writestr(f"cubicasa5k/high_quality_architectural/{i}/F1_scaled.png", b"not an svg")
    cubicasa._loaded.clear()
    yield folder, archive
    cubicasa._loaded.clear()


def test_sample_from_folder_then_cache(dataset, tmp_path, capsys, monkeypatch):
    folder, _ = dataset
    monkeypatch.setattr(cubicasa, "_licence_shown", False)
    first = cubicasa.sample(5, split="all", source=folder, cache_dir=tmp_path / "c")
    assert cubicasa.cache_path(tmp_path / "c").exists()
    assert capsys.readouterr().out.count("CC BY-NC") == 1
    # megastep's order: the sorted string ids shuffled by RandomState(seed), cycled.
    order = np.random.RandomState(1).permutation(sorted(IDS))
    assert [g.id for g in first] == [int(order[i % 3]) for i in range(5)]
    cubicasa._loaded.clear()
    again = cubicasa.sample(5, split="all", cache_dir=tmp_path / "c")  # no source: the cache suffices
    assert capsys.readouterr().out.count("CC BY-NC") == 0
    for a, b in zip(first, again):
        assert a.id == b.id and a.res == b.res
        np.testing.assert_array_equal(a.walls, b.walls)
        np.testing.assert_array_equal(a.lights, b.lights)
        np.testing.assert_array_equal(a.masks, b.masks)


def test_sample_from_zip_matches_svgs(dataset, tmp_path, monkeypatch):
    _, archive = dataset
    monkeypatch.setenv(cubicasa.CACHE_ENV, str(tmp_path / "env-cache"))
    gs = cubicasa.sample(3, split="all", seed=4, source=archive)
    assert cubicasa.cache_path().parent == tmp_path / "env-cache"
    assert cubicasa.cache_path().exists()
    for g in gs:
        direct = cubicasa.geometry_from_svg(svg_text(str(g.id)))
        np.testing.assert_array_equal(g.walls, direct.walls)


def test_split_disjoint_and_seeded(dataset, tmp_path):
    folder, _ = dataset
    kwargs = dict(source=folder, cache_dir=tmp_path / "c")
    train = {g.id for g in cubicasa.sample(10, "training", seed=3, **kwargs)}
    test = {g.id for g in cubicasa.sample(10, "test", seed=3, **kwargs)}
    assert len(train) == 2 and len(test) == 1 and not train & test
    assert train | test == {int(i) for i in IDS}
    assert [g.id for g in cubicasa.sample(4, seed=3, **kwargs)] == [g.id for g in cubicasa.sample(4, seed=3, **kwargs)]


def test_rebuild_and_unreadable_cache(dataset, tmp_path, monkeypatch):
    folder, _ = dataset
    monkeypatch.delenv(cubicasa.SOURCE_ENV, raising=False)
    path = cubicasa.cache_path(tmp_path / "c")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cache_dir: the cache .* is unreadable"):
        cubicasa.sample(1, cache_dir=tmp_path / "c")
    with pytest.raises(ValueError, match="rebuild=True needs one"):
        cubicasa.sample(1, cache_dir=tmp_path / "c", rebuild=True)
    gs = cubicasa.sample(3, "all", source=folder, cache_dir=tmp_path / "c", rebuild=True)
    assert {g.id for g in gs} == {int(i) for i in IDS}
    assert f"v{cubicasa.CACHE_VERSION}" in path.name


# --------------------------------------------------------------------------- megastep's caches


def write_megastep_geometry_cache(path, geometries, gz=True):
    """Writes plans as megastep's geometry_data does: arrays named '<id>/<field>' in an npz
    (np.savez), the whole gzipped; megastep's dtypes (float64 coordinates, int16 masks)."""
    arrays = {}
    for g in geometries:
        arrays[f"{g.id}/walls"] = g.walls.astype(np.float64)
        arrays[f"{g.id}/lights"] = g.lights.astype(np.float64)
        arrays[f"{g.id}/masks"] = g.masks.astype(np.int16)
        arrays[f"{g.id}/res"] = np.float64(g.res)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path.write_bytes(gzip.compress(buffer.getvalue()) if gz else buffer.getvalue())
    return path


def write_megastep_svg_cache(path, ids=IDS):
    """Writes SVGs as megastep's svg_data does: pandas' default JSON of the table (column ->
    {row: value}, slashes escaped), gzipped; the ids are the strings the path regex extracted."""
    table = {"path": {}, "category": {}, "id": {}, "filename": {}, "svg": {}}
    for row, i in enumerate(ids):
        r = str(row)
        table["path"][r] = f"cubicasa5k/high_quality_architectural/{i}/model.svg"
        table["category"][r] = "high_quality_architectural"
        table["id"][r] = i
        table["filename"][r] = "model"
        table["svg"][r] = svg_text(i)
    path.write_bytes(gzip.compress(json.dumps(table).replace("/", "\\/").encode()))
    return path


def assert_same_plans(xs, ys):
    assert [g.id for g in xs] == [g.id for g in ys]
    for a, b in zip(xs, ys):
        assert a.res == b.res and a.walls.dtype == b.walls.dtype == np.float32
        np.testing.assert_array_equal(a.walls, b.walls)
        np.testing.assert_array_equal(a.lights, b.lights)
        np.testing.assert_array_equal(a.masks, b.masks)


def test_flatten_unflatten_round_trip():
    tree = {"353": {"walls": 1, "res": 0.2}, "437": {"masks": 2}}
    flat = cubicasa.flatten(tree)
    assert flat == {"353/walls": 1, "353/res": 0.2, "437/masks": 2}
    assert cubicasa.unflatten(flat) == tree


@pytest.mark.parametrize("gz", [True, False])
def test_megastep_geometry_cache_is_read_as_it_is(dataset, tmp_path, gz):
    folder, _ = dataset
    from_svgs = cubicasa.sample(5, split="all", seed=2, source=folder, cache_dir=tmp_path / "c")
    plans = [cubicasa.geometry_from_svg(DATA / f"{i}.svg") for i in IDS]
    name = "cubicasa-geometry.npz" + (".gz" if gz else "")
    cache = write_megastep_geometry_cache(tmp_path / name, plans, gz=gz)
    got = cubicasa.sample(5, split="all", seed=2, source=cache, cache_dir=tmp_path / "unused")
    assert_same_plans(got, from_svgs)   # the same plans, in megastep's seeded order
    assert not (tmp_path / "unused").exists()   # read directly, nothing cached
    assert set(cubicasa.read_megastep_geometries(cache)) == set(IDS)


def test_megastep_svg_cache_gives_the_svg_geometries(dataset, tmp_path):
    folder, _ = dataset
    cache = write_megastep_svg_cache(tmp_path / "cubicasa-svgs.json.gz")
    assert [(i, len(s)) for i, s in cubicasa.read_megastep_svgs(cache)] == [(int(i), len(svg_text(i))) for i in IDS]
    got = cubicasa.sample(4, split="all", seed=3, source=cache, cache_dir=tmp_path / "a")
    want = cubicasa.sample(4, split="all", seed=3, source=folder, cache_dir=tmp_path / "b")
    assert_same_plans(got, want)
    assert cubicasa.cache_path(tmp_path / "a").exists()   # parsed once, then cached like the dataset
    for g in got:
        assert_same_plans([g], [cubicasa.geometry_from_svg(svg_text(str(g.id)), id=g.id)])


def test_megastep_open_plans_from_sample(dataset, tmp_path):
    folder, _ = dataset
    kwargs = dict(split="all", source=folder, cache_dir=tmp_path / "c")
    closed = {g.id: g for g in cubicasa.sample(3, **kwargs)}
    opened = {g.id: g for g in cubicasa.sample(3, closed=False, **kwargs)}
    assert cubicasa.cache_path(tmp_path / "c", closed=False) != cubicasa.cache_path(tmp_path / "c")
    assert cubicasa.cache_path(tmp_path / "c", closed=False).exists()
    direct = cubicasa.geometry_from_svg(DATA / "353.svg", closed=False)
    np.testing.assert_array_equal(opened[353].walls, direct.walls)
    assert len(opened[353].walls) < len(closed[353].walls)


def test_megastep_caches_bad_files(tmp_path):
    cubicasa._loaded.clear()
    text = tmp_path / "text.gz"
    text.write_bytes(gzip.compress(b"hello"))
    with pytest.raises(ValueError, match="^source: .*neither"):
        cubicasa.sample(1, source=text, cache_dir=tmp_path)
    broken = tmp_path / "broken.npz.gz"
    broken.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(ValueError, match="^source: .*corrupt gzip"):
        cubicasa.sample(1, source=broken, cache_dir=tmp_path)
    table = tmp_path / "cubicasa-svgs.json.gz"
    table.write_bytes(gzip.compress(json.dumps({"id": {"0": "1"}}).encode()))
    with pytest.raises(ValueError, match="^source: .*SVG table"):
        cubicasa.sample(1, source=table, cache_dir=tmp_path)
    buffer = io.BytesIO()
    np.savez(buffer, **{"7/walls": np.ones((1, 2, 2)), "7/res": np.float64(0.2)})
    partial = tmp_path / "cubicasa-geometry.npz.gz"
    partial.write_bytes(gzip.compress(buffer.getvalue()))
    with pytest.raises(ValueError, match=r"^source: .*'7' lacks \['lights', 'masks'\]"):
        cubicasa.sample(1, source=partial)
    megastep_cache = tmp_path / ".cache"
    megastep_cache.mkdir()
    (megastep_cache / "cubicasa-geometry.npz.gz").write_bytes(partial.read_bytes())
    with pytest.raises(ValueError, match="passed as files, e.g. source=.*cubicasa-geometry.npz.gz"):
        cubicasa.sample(1, source=megastep_cache, cache_dir=tmp_path / "c")
    with pytest.raises(FileNotFoundError, match="^path: "):
        cubicasa.read_megastep_geometries(tmp_path / "absent.npz.gz")
    with pytest.raises(ValueError, match="^closed: "):
        cubicasa.sample(1, source=partial, closed="yes")
