"""Real apartment floorplans from the Cubicasa5k dataset.

`Cubicasa5k <https://zenodo.org/record/2613548>`_ (Kalervo et al., 2019) is a set of
about 5,000 annotated floorplans, each a ``model.svg`` with polygons for walls, doors,
windows and rooms ("spaces"). :func:`geometry_from_svg` turns one of those files into a
geometry the way megastep did:

- the wall polygons, minus the door polygons (dilated by 5 cm, since doors are often
  drawn slightly off their walls), give the solid parts of the plan; the outline of
  what remains becomes the wall segments, so every wall has two faces;
- zero-length and duplicate segments are dropped;
- each space polygon becomes a room, with a light at its centroid;
- SVG coordinates (about 1 cm per unit, y pointing down) become metres with y pointing
  up, the plan's lower-left corner at (MARGIN, MARGIN).

:func:`sample` reads the whole dataset once, caches the parsed geometries in a compressed
file, and draws plans with megastep's seeded 90/10 training/test split. Its ``source`` may be
the dataset's zip, the unpacked folder, or one of the two files megastep itself keeps in
``.cache/``: ``cubicasa-svgs.json.gz`` (every SVG, as megastep's ``svg_data`` wrote it) or
``cubicasa-geometry.npz.gz`` (megastep's processed plans, as its ``geometry_data`` wrote them;
these are used as they are: megastep's open plans and masks). The dataset is **CC BY-NC
4.0**: non-commercial use only. For a default that needs no download and no licence, use
:func:`megastep_jax.floorplans.sample`.
"""
from __future__ import annotations

import gzip
import io
import json
import os
import re
import xml.etree.ElementTree as ET
import zipfile
import zlib
from pathlib import Path
from typing import Iterator

import numpy as np
import shapely

from . import geometry as geom, validation
from .arrdict import dotdict

__all__ = ["geometry_from_svg", "sample", "load", "cache_path", "unique_walls", "flatten", "unflatten",
           "read_megastep_geometries", "read_megastep_svgs", "SCALE", "DOOR_DILATION"]

SCALE = 100.0
"""SVG units per metre (Cubicasa5k's units are roughly centimetres)."""
DOOR_DILATION = 5.0
"""SVG units by which door polygons grow before they are cut out of the walls."""
CLOSING_TOLERANCE = 1.0
"""SVG units: parts of the plan's boundary this close to a wall count as covered."""
FOOTPRINT_BRIDGE = 30.0
"""SVG units: gaps between spaces and walls up to twice this wide count as inside the plan."""
CRACK_WIDTH = 6.0
"""SVG units: gaps between wall polygons narrower than this are sealed."""
ZERO_LENGTH = 1e-6
"""Segments shorter than this (in metres) are dropped."""

CACHE_ENV = "MEGASTEP_JAX_CACHE"
"""Environment variable naming the folder for the parsed-geometry cache."""
SOURCE_ENV = "MEGASTEP_JAX_CUBICASA"
"""Environment variable naming the Cubicasa5k zip or folder, used when ``source`` is None."""

CACHE_VERSION = 2
"""Bumped whenever :func:`geometry_from_svg` changes its output, so stale caches are not read."""

LICENCE = (
    "Cubicasa5k floorplans (Kalervo et al. 2019, https://zenodo.org/record/2613548) are "
    "licensed CC BY-NC 4.0: attribution, non-commercial use only."
)
_HOW_TO_GET = (
    "Download cubicasa5k.zip (about 5 GB) from https://zenodo.org/record/2613548 and pass "
    f"it (or the folder it unpacks to) as source=..., or set ${SOURCE_ENV}; megastep's own "
    "caches (.cache/cubicasa-geometry.npz.gz, .cache/cubicasa-svgs.json.gz) work as sources too. "
    "For plans that need no download and no licence, use megastep_jax.floorplans.sample."
)

_licence_shown = False
_loaded: dict[str, dict[str, dotdict]] = {}


# --------------------------------------------------------------------------- SVG parsing


def _has_class(element: ET.Element, name: str) -> bool:
    return name in element.get("class", "").split()


def _points(polygon: ET.Element) -> np.ndarray:
    """(V, 2) float64 corners of an SVG ``<polygon points=...>``."""
    numbers = re.split(r"[\s,]+", polygon.get("points", "").strip())
    values = np.array([float(v) for v in numbers if v], dtype=np.float64)
    if len(values) % 2:
        values = values[:-1]
    return values.reshape(-1, 2)


def _child_polygons(root: ET.Element, cls: str) -> list[np.ndarray]:
    """Corners of every ``<polygon>`` that is a direct child of an element of class ``cls``."""
    out = []
    for element in root.iter():
        if _has_class(element, cls):
            for child in element:
                if child.tag.rsplit("}", 1)[-1] == "polygon":
                    pts = _points(child)
                    if len(pts) >= 3:
                        out.append(pts)
    return out


def _polygon(points: np.ndarray) -> shapely.Geometry:
    """A valid shapely polygon (or multipolygon) from possibly self-intersecting corners."""
    return shapely.make_valid(shapely.Polygon(points))


def _rings(region: shapely.Geometry) -> list[np.ndarray]:
    """Every exterior and interior ring of the polygons in ``region``, as (V, 2) closed arrays."""
    rings = []
    for poly in shapely.get_parts(region):
        if poly.geom_type != "Polygon" or poly.is_empty:
            continue
        rings.append(np.asarray(poly.exterior.coords))
        rings.extend(np.asarray(r.coords) for r in poly.interiors)
    return rings


def unique_walls(walls: np.ndarray, tol: float = 1e-6) -> np.ndarray:
    """Drops zero-length walls and walls that repeat an earlier one (in either direction).

    Args:
        walls: (M, 2, 2) wall endpoints.
        tol: endpoints closer than this are the same point.

    Returns:
        (M', 2, 2) walls, first occurrences kept in their original order.
    """
    walls = np.asarray(walls, dtype=np.float64).reshape(-1, 2, 2)
    walls = walls[np.linalg.norm(walls[:, 0] - walls[:, 1], axis=-1) > tol]
    # Orientation-free key: endpoints sorted lexicographically, rounded to the tolerance.
    key = np.round(walls / tol).astype(np.int64)
    swap = (key[:, 0, 0] > key[:, 1, 0]) | ((key[:, 0, 0] == key[:, 1, 0]) & (key[:, 0, 1] > key[:, 1, 1]))
    key[swap] = key[swap][:, ::-1]
    _, first = np.unique(key.reshape(len(key), 4), axis=0, return_index=True)
    return walls[np.sort(first)]


def _read_svg(svg_text_or_path) -> tuple[str, int | None]:
    """The SVG text, and the plan id if it can be read from the path's folder name."""
    if isinstance(svg_text_or_path, bytes):
        return svg_text_or_path.decode("utf-8"), None
    if isinstance(svg_text_or_path, str) and svg_text_or_path.lstrip().startswith("<"):
        return svg_text_or_path, None
    if not isinstance(svg_text_or_path, (str, os.PathLike)):
        raise ValueError(
            f"svg_text_or_path: expected SVG text or a path to a model.svg, got "
            f"{type(svg_text_or_path).__name__}"
        )
    path = Path(svg_text_or_path)
    if not path.is_file():
        raise FileNotFoundError(f"svg_text_or_path: no SVG file at {str(path)!r}")
    # Cubicasa5k stores plans as <subset>/<id>/model.svg; loose files may be <id>.svg.
    name = path.parent.name if path.stem == "model" else path.stem
    return path.read_text(encoding="utf-8"), int(name) if name.isdigit() else None


def _closing_walls(walls_whole, solid, spaces) -> list[np.ndarray]:
    """Segments across the gaps in a plan's outer boundary (entrance doors, open balconies).

    The plan's footprint is the union of its uncut walls and its spaces; the parts of the
    footprint's outer boundary that no wall covers are the openings to the outside.

    Returns:
        A list of (K, 2, 2) arrays of segments, in SVG units.
    """
    footprint = shapely.union_all([walls_whole, *spaces])
    # Spaces are often drawn a little short of their walls; bridge those slivers so the
    # footprint's boundary runs round the outside and not into the slivers.
    footprint = shapely.buffer(shapely.buffer(footprint, FOOTPRINT_BRIDGE, join_style="mitre"),
                               -FOOTPRINT_BRIDGE, join_style="mitre")
    boundary = shapely.union_all([shapely.LinearRing(p.exterior.coords) for p in shapely.get_parts(footprint)
                                  if p.geom_type == "Polygon"])
    gaps = shapely.difference(boundary, shapely.buffer(solid, CLOSING_TOLERANCE))
    out = []
    for line in shapely.get_parts(shapely.line_merge(gaps) if not gaps.is_empty else gaps):
        coords = shapely.get_coordinates(line)
        if len(coords) < 2:
            continue
        # The gap stops CLOSING_TOLERANCE short of the walls; reach back into them so no crack is left.
        for end, inner in ((0, 1), (-1, -2)):
            step = coords[end] - coords[inner]
            coords[end] = coords[end] + 2 * CLOSING_TOLERANCE * step / max(np.linalg.norm(step), 1e-12)
        out.append(np.stack([coords[:-1], coords[1:]], 1))
    return out


def geometry_from_svg(svg_text_or_path, id: int | None = None, res: float = geom.MASK_RES,
                      closed: bool = True) -> dotdict:
    """Builds a geometry from a Cubicasa5k ``model.svg``.

    Args:
        svg_text_or_path: the SVG as text (or bytes), or a path to the file.
        id: the plan's id; by default read from the path (``.../<id>/model.svg`` or
            ``<id>.svg``), else 0.
        res: mask resolution in metres.
        closed: if True, add walls across the openings in the plan's outer boundary
            (entrance doors, the open sides of balconies and terraces), so no ray or
            agent can leave the plan. megastep left them open; ``closed=False`` does too.

    Returns:
        A geometry dotdict (see :mod:`megastep_jax.geometry`) with walls (M, 2, 2),
        lights (N, 2) at the N room centroids, masks (H, W) with rooms 1..N, res and id.

    Raises:
        FileNotFoundError: if given a path that does not exist.
        ValueError: if the SVG is malformed or has no walls or no spaces.
    """
    text, path_id = _read_svg(svg_text_or_path)
    try:
        root = ET.fromstring(text)
    except ET.ParseError as e:
        raise ValueError(f"svg_text_or_path: not a well-formed SVG ({e})") from None

    wall_polys = _child_polygons(root, "Wall")
    if not wall_polys:
        raise ValueError('svg_text_or_path: the SVG has no walls (no <polygon> under class="Wall")')
    space_polys = _child_polygons(root, "Space")
    if not space_polys:
        raise ValueError('svg_text_or_path: the SVG has no spaces (no <polygon> under class="Space")')
    door_polys = _child_polygons(root, "Door")

    walls_whole = shapely.union_all([_polygon(p) for p in wall_polys])
    if CRACK_WIDTH > 0:
        # A morphological closing seals hairline cracks between wall polygons that rays slip through.
        walls_whole = shapely.buffer(shapely.buffer(walls_whole, CRACK_WIDTH / 2, join_style="mitre"),
                                     -CRACK_WIDTH / 2, join_style="mitre")
    solid = walls_whole
    if door_polys:
        doors = shapely.union_all([_polygon(p) for p in door_polys])
        solid = shapely.difference(solid, shapely.buffer(doors, DOOR_DILATION))
    rings = _rings(solid)
    if not rings:
        raise ValueError("svg_text_or_path: the SVG's walls are all inside doorways; nothing is left")
    walls = [np.stack([r[:-1], r[1:]], 1) for r in rings]
    if closed:
        spaces_svg = [_polygon(p) for p in space_polys]
        walls.extend(_closing_walls(walls_whole, solid, spaces_svg))
    walls = np.concatenate(walls)

    # SVG: units from the top-left corner, y down. Geometry: metres from the bottom-left, y up.
    corners = np.concatenate([walls.reshape(-1, 2), *space_polys])
    left, bottom = corners[:, 0].min(), corners[:, 1].max()

    def to_metres(xy: np.ndarray) -> np.ndarray:
        return np.stack([xy[..., 0] - left, bottom - xy[..., 1]], -1) / SCALE + geom.MARGIN

    walls = unique_walls(to_metres(walls), ZERO_LENGTH)
    spaces = [_polygon(to_metres(p)) for p in space_polys]
    spaces = [s for s in spaces if s.area > 0]
    if not spaces:
        raise ValueError("svg_text_or_path: every space polygon in the SVG has zero area")
    lights = shapely.get_coordinates(shapely.centroid(spaces))
    masks = geom.masks(walls, spaces, res)
    if id is None:
        id = path_id if path_id is not None else 0
    return geom.geometry(walls, lights, masks, res, id=id)


# --------------------------------------------------------------------------- megastep's caches


def flatten(tree: dict) -> dict:
    """Nested dicts to one flat dict with ``'a/b'`` keys, as megastep's caches store them.

    ``flatten({'353': {'walls': w, 'res': r}})`` is ``{'353/walls': w, '353/res': r}``.
    """
    flat = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            flat.update({f"{k}/{kk}": vv for kk, vv in flatten(v).items()})
        else:
            flat[k] = v
    return flat


def unflatten(flat: dict) -> dict:
    """The inverse of :func:`flatten`: ``'a/b'`` keys back to nested dicts."""
    tree: dict = {}
    for k, v in flat.items():
        *parents, leaf = k.split("/")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return tree


_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when it is gzip-compressed."""
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise ValueError(f"source: {str(path)!r} is a corrupt gzip file ({e})") from None
    return raw


def _is_geometry_npz(names: list[str]) -> bool:
    return any(n.endswith("/walls.npy") for n in names)


def _geometries_from_npz(raw: bytes, where: str) -> dict[str, dotdict]:
    """Geometries from the bytes of an npz holding ``<id>/walls``, ``lights``, ``masks``, ``res``."""
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            flat = {name[:-len(".npy")]: np.lib.format.read_array(io.BytesIO(archive.read(name)), allow_pickle=False)
                    for name in archive.namelist() if name.endswith(".npy")}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, zlib.error) as e:
        raise ValueError(f"source: {where} is not a readable geometry npz ({e})") from None
    out = {}
    for k, fields in sorted(unflatten(flat).items()):
        missing = {"walls", "lights", "masks", "res"} - set(fields) if isinstance(fields, dict) else {"walls"}
        if missing or not k.isdigit():
            raise ValueError(f"source: {where} is not a megastep geometry cache: entry {k!r} "
                             f"lacks {sorted(missing)} or is not a plan id")
        try:
            out[k] = geom.geometry(fields["walls"], fields["lights"], fields["masks"], float(fields["res"]), id=int(k))
        except ValueError as e:
            raise ValueError(f"source: {where}, plan {k}: {e}") from None
    if not out:
        raise ValueError(f"source: {where} holds no geometries")
    return out


def read_megastep_geometries(path: str | os.PathLike) -> dict[str, dotdict]:
    """Reads megastep's processed-plan cache, ``.cache/cubicasa-geometry.npz.gz``.

    The file is a gzipped npz whose arrays are named ``<id>/walls``, ``<id>/lights``,
    ``<id>/masks`` and ``<id>/res`` (megastep's :func:`flatten` of its per-plan dicts). An
    npz that is not gzipped is read too. The plans are megastep's, used as they are: open
    entrance doors and megastep's masks.

    Args:
        path: the file.

    Returns:
        A dict from id (a string) to geometry.

    Raises:
        FileNotFoundError: if there is no such file.
        ValueError: if the file is not in that format.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: no megastep geometry cache at {str(path)!r}")
    return _geometries_from_npz(_read_bytes(path), repr(str(path)))


def _svg_rows(data, where: str) -> list[tuple[int, str]]:
    """(id, svg) rows of megastep's SVG table, in either pandas JSON layout."""
    if isinstance(data, dict) and "svg" in data and "id" in data:  # pandas' default: column -> {row: value}
        rows = [(data["id"][r], data["svg"][r]) for r in data["svg"] if r in data["id"]]
    elif isinstance(data, list):  # orient='records'
        rows = [(row.get("id"), row.get("svg")) for row in data if isinstance(row, dict)]
    else:
        raise ValueError(f"source: {where} is not megastep's SVG table (no 'id' and 'svg' columns)")
    out = []
    for id, svg in rows:
        if not isinstance(svg, str) or not str(id).isdigit():
            raise ValueError(f"source: {where} has a row with id {id!r} that is not a plan id and its SVG text")
        out.append((int(id), svg))
    return out


def read_megastep_svgs(path: str | os.PathLike) -> list[tuple[int, str]]:
    """Reads megastep's SVG cache, ``.cache/cubicasa-svgs.json.gz``.

    The file is the gzipped JSON of a pandas table with columns ``path``, ``category``,
    ``id``, ``filename`` and ``svg``, one row per ``model.svg`` of the dataset (megastep's
    ``svg_data``). Only ``id`` and ``svg`` are read.

    Args:
        path: the file.

    Returns:
        A list of (id, SVG text), in the table's order.

    Raises:
        FileNotFoundError: if there is no such file.
        ValueError: if the file is not in that format.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: no megastep SVG cache at {str(path)!r}")
    try:
        data = json.loads(_read_bytes(path))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"source: {str(path)!r} is not megastep's SVG table ({e})") from None
    return _svg_rows(data, repr(str(path)))


def _kind(source: Path) -> str:
    """What a source is: 'folder', 'dataset' (zip), 'megastep-geometry' or 'megastep-svgs'."""
    if source.is_dir():
        return "folder"
    with open(source, "rb") as f:
        head = f.read(2)
    if head == _GZIP_MAGIC:
        try:
            with gzip.open(source) as f:  # only the start: megastep's SVG table is large
                raw = f.read(64)
        except (OSError, EOFError, zlib.error) as e:
            raise ValueError(f"source: {str(source)!r} is a corrupt gzip file ({e})") from None
        if raw[:2] == b"PK":
            return "megastep-geometry"
        if raw.lstrip()[:1] in (b"{", b"["):
            return "megastep-svgs"
        raise ValueError(f"source: {str(source)!r} is gzipped but holds neither megastep's geometry npz nor its SVG table")
    if head == b"PK":
        try:
            with zipfile.ZipFile(source) as archive:
                return "megastep-geometry" if _is_geometry_npz(archive.namelist()) else "dataset"
        except (zipfile.BadZipFile, OSError) as e:
            raise ValueError(f"source: {str(source)!r} is not a readable Cubicasa5k zip ({e})") from None
    if head[:1] in (b"{", b"["):
        return "megastep-svgs"
    raise ValueError(f"source: {str(source)!r} is not a Cubicasa5k zip or folder, nor one of megastep's caches")


# --------------------------------------------------------------------------- the dataset


def cache_path(cache_dir: str | os.PathLike | None = None, closed: bool = True) -> Path:
    """Where :func:`sample` keeps its parsed geometries.

    Args:
        cache_dir: a folder; by default ``$MEGASTEP_JAX_CACHE``, else
            ``$XDG_CACHE_HOME/megastep_jax``, else ``~/.cache/megastep_jax``.
        closed: whether the cached plans are closed (see :func:`geometry_from_svg`); the
            open plans have a file of their own.

    Returns:
        The path of the compressed cache file in that folder.
    """
    if cache_dir is None:
        cache_dir = os.environ.get(CACHE_ENV)
    if cache_dir is None:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        cache_dir = os.path.join(base, "megastep_jax")
    return Path(cache_dir) / f"cubicasa-geometries{'' if closed else '-open'}-v{CACHE_VERSION}.npz"


_SVG_NAME = re.compile(r"(?:^|/)(?P<id>\d+)/model\.svg$")


def _progress(items, n: int):
    from tqdm.auto import tqdm  # deferred: a heavy optional dependency, needed only while parsing

    return tqdm(items, total=n, desc="cubicasa: parsing SVGs", unit="plan")


def _svg_sources(source: Path, kind: str) -> Iterator[tuple[int, bytes | str]]:
    """(id, SVG) for every plan of a Cubicasa5k zip or folder, or of megastep's SVG table."""
    if kind == "megastep-svgs":
        rows = read_megastep_svgs(source)
        yield from _progress(rows, len(rows))
        return
    if kind == "folder":
        paths = sorted(source.rglob("model.svg"))
        items = [(p, _SVG_NAME.search(p.as_posix())) for p in paths]
        items = [(p, m) for p, m in items if m]
        for p, m in _progress(items, len(items)):
            yield int(m["id"]), p.read_bytes()
        return
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError) as e:
        raise ValueError(f"source: {str(source)!r} is not a readable Cubicasa5k zip ({e})") from None
    with archive:
        names = [(n, _SVG_NAME.search(n)) for n in sorted(archive.namelist())]
        names = [(n, m) for n, m in names if m]
        for n, m in _progress(names, len(names)):
            try:
                data = archive.read(n)
            except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as e:
                raise ValueError(f"source: {str(source)!r} is a corrupt zip; reading {n} failed ({e})") from None
            yield int(m["id"]), data


def _parse_all(source: Path, kind: str, closed: bool) -> dict[str, dotdict]:
    geometries, seen = {}, 0
    for id, svg in _svg_sources(source, kind):
        seen += 1
        try:
            g = geometry_from_svg(svg, id=id, closed=closed)
        except ValueError:
            continue  # megastep also loses a handful of plans that have no spaces
        # Some plans appear in more than one subset; the first copy wins.
        geometries.setdefault(str(id), g)
    if not seen:
        hint = "; is it Cubicasa5k?"
        if kind == "folder":
            caches = [n for n in ("cubicasa-geometry.npz.gz", "cubicasa-svgs.json.gz") if (source / n).is_file()]
            if caches:
                hint = f"; megastep's caches are passed as files, e.g. source={str(source / caches[0])!r}"
        raise ValueError(f"source: found no <id>/model.svg files in {str(source)!r}{hint}")
    if not geometries:
        raise ValueError(f"source: none of the {seen} SVGs in {str(source)!r} gave a geometry")
    return geometries


def _save(path: Path, geometries: dict[str, dotdict]) -> None:
    arrays = flatten({k: dict(walls=g.walls, lights=g.lights, masks=g.masks.astype(np.int16), res=np.float64(g.res))
                      for k, g in geometries.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)


def _load(path: Path) -> dict[str, dotdict]:
    try:
        raw = path.read_bytes()
        return _geometries_from_npz(raw, repr(str(path)))
    except (OSError, ValueError) as e:
        raise ValueError(f"cache_dir: the cache {str(path)!r} is unreadable ({e}); delete it, or pass "
                         "rebuild=True with a source") from None


def _show_licence() -> None:
    global _licence_shown
    if not _licence_shown:
        print(LICENCE)
        _licence_shown = True


def load(source=None, cache_dir=None, rebuild: bool = False, closed: bool = True) -> dict[str, dotdict]:
    """All Cubicasa5k geometries by id, parsing the dataset on first use and caching the result.

    Args:
        source: the Cubicasa5k zip, its unpacked folder, or megastep's
            ``cubicasa-svgs.json.gz`` (parsed like the dataset, then cached), or megastep's
            ``cubicasa-geometry.npz.gz`` (read as it is, no cache; ``closed`` and
            ``rebuild`` do not apply); by default ``$MEGASTEP_JAX_CUBICASA``. A dataset or
            SVG source is only needed while the cache does not exist.
        cache_dir: see :func:`cache_path`.
        rebuild: if True, parse the source again and overwrite the cache.
        closed: passed to :func:`geometry_from_svg`; False gives megastep's open plans.

    Returns:
        A dict from id (a string) to geometry.

    Raises:
        ValueError: if there is no cache and no source, or the source is unusable.
        FileNotFoundError: if ``source`` names a path that does not exist.
    """
    if not isinstance(closed, bool):
        raise ValueError(f"closed: expected a bool, got {closed!r}")
    if source is None:
        source = os.environ.get(SOURCE_ENV)
    if source is not None:
        source = Path(source)
        if not source.exists():
            raise FileNotFoundError(f"source: no Cubicasa5k zip or folder at {str(source)!r}. {_HOW_TO_GET}")
        kind = _kind(source)
        if kind == "megastep-geometry":
            key = f"megastep:{source.resolve()}"
            if key not in _loaded:
                _loaded[key] = read_megastep_geometries(source)
            return _loaded[key]
    path = cache_path(cache_dir, closed)
    if str(path) in _loaded and not rebuild:
        return _loaded[str(path)]
    if path.exists() and not rebuild:
        geometries = _load(path)
    else:
        if source is None:
            why = "rebuild=True needs one" if rebuild else f"and there is no cache at {str(path)!r}"
            raise ValueError(f"source: no Cubicasa5k source given, {why}. {_HOW_TO_GET}")
        geometries = _parse_all(source, kind, closed)
        _save(path, geometries)
    _loaded[str(path)] = geometries
    return geometries


def sample(n: int, split: str = "training", seed: int = 1, source=None, cache_dir=None,
           rebuild: bool = False, closed: bool = True) -> list[dotdict]:
    """Returns ``n`` Cubicasa5k geometries; the same arguments give the same list.

    As in megastep, the ids are shuffled with ``seed`` and cut 90/10 into a training and a
    test split; the list cycles through the chosen split's shuffled ids, so it repeats
    plans once ``n`` exceeds the split's size.

    Args:
        n: number of geometries, >= 0.
        split: ``'training'``, ``'test'`` or ``'all'``.
        seed: seeds the shuffle that assigns plans to the splits.
        source: the Cubicasa5k zip or unpacked folder, or megastep's own
            ``cubicasa-svgs.json.gz`` or ``cubicasa-geometry.npz.gz`` (see :func:`load`);
            by default ``$MEGASTEP_JAX_CUBICASA``.
        cache_dir: folder of the parsed-geometry cache; see :func:`cache_path`.
        rebuild: if True, parse ``source`` again and overwrite the cache.
        closed: if True (the default), walls close the plans' outer openings; False gives
            megastep's open plans (see :func:`geometry_from_svg`).

    Returns:
        A list of ``n`` geometry dotdicts.
    """
    validation.nonnegative_int("n", n)
    validation.one_of("split", split, ("training", "test", "all"))
    validation.integer("seed", seed)
    geometries = load(source, cache_dir, rebuild, closed)
    _show_licence()
    ids = np.random.RandomState(seed).permutation(sorted(geometries))
    cutoff = int(0.9 * len(ids))
    ids = {"training": ids[:cutoff], "test": ids[cutoff:], "all": ids}[split]
    if n and not len(ids):
        raise ValueError(f"split: the {split!r} split is empty ({len(geometries)} plans in all)")
    return [geometries[ids[i % len(ids)]] for i in range(n)]
