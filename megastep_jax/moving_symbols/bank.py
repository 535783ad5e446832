"""The symbol bank: decoded, cropped symbol images with their hitboxes, and backgrounds.

A bank is built once per (folder, split, labels, max_images_per_label) and shared by every
environment of the process (:func:`symbol_bank` keeps them in a dict); the decoded images
and hitboxes are also kept in a disk cache (``$MEGASTEP_JAX_CACHE``, else
``$XDG_CACHE_HOME/megastep_jax``, else ``~/.cache/megastep_jax``), keyed by the folder's
listing (names, sizes, modification times), so a later process skips decoding.
"""
from __future__ import annotations

import hashlib
import math
import os
import pathlib
import threading
from dataclasses import dataclass
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import shapely
from flax import struct
from PIL import Image, ImageDraw, ImageFont

__all__ = ["Bank", "HostBank", "symbol_bank", "background_bank", "load_symbol", "text_symbol",
           "hitbox", "font_path", "cache_dir", "clear_memory_cache", "CACHE_VERSION"]

CACHE_ENV = "MEGASTEP_JAX_CACHE"
CACHE_VERSION = 1
"""Bumped whenever the decoding, cropping or hitboxes change, so stale caches are not read."""
FONT_SIZE = 22
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def font_path() -> str:
    """Path of the DejaVu Sans Bold font file that ships with matplotlib."""
    import matplotlib  # deferred: a heavy import (~0.3 s), needed only without a data_dir

    path = os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans-Bold.ttf")
    if not os.path.exists(path):
        raise FileNotFoundError(f"matplotlib's DejaVuSans-Bold.ttf not found at {path}")
    return path


def cache_dir() -> pathlib.Path:
    """The folder of the disk cache (see the module docstring)."""
    d = os.environ.get(CACHE_ENV)
    if d is None:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        d = os.path.join(base, "megastep_jax")
    return pathlib.Path(d)


# ---------------------------------------------------------------------------------------
# One image

def _crop(rgba: np.ndarray) -> np.ndarray:
    """Crops to the bounding box of the pixels with alpha > 0 (all of it if none)."""
    rows, cols = np.nonzero(rgba[..., 3] > 0)
    if len(rows) == 0:
        return rgba
    return rgba[rows.min():rows.max() + 1, cols.min():cols.max() + 1]


def load_symbol(path: str) -> np.ndarray:
    """Reads a symbol image and crops it to its non-transparent pixels.

    Returns:
        (h, w, 4) uint8 RGBA with straight alpha. Transparency comes from the alpha channel
        if the image has one, else from the brightest channel (dark = clear, colour scaled
        up so that it times alpha is the pixel's colour).
    """
    with Image.open(path) as im:
        has_alpha = im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info
        if has_alpha:
            return _crop(np.asarray(im.convert("RGBA"), np.uint8))
        rgb = np.asarray(im.convert("RGB"), np.float32) / 255
    alpha = rgb.max(-1, keepdims=True)
    straight = np.where(alpha > 0, rgb / np.maximum(alpha, 1e-6), 0.0)
    return _crop(np.round(np.concatenate([straight, alpha], -1) * 255).astype(np.uint8))


def text_symbol(text: str, size: int = FONT_SIZE) -> np.ndarray:
    """A white label drawn with DejaVu Sans Bold, cropped like :func:`load_symbol`."""
    font = ImageFont.truetype(font_path(), size)
    x0, y0, x1, y1 = font.getbbox(text, anchor="mm")
    w = int(math.ceil(x1 - x0)) + 4
    h = int(math.ceil(y1 - y0)) + 4
    canvas = Image.new("L", (w, h), 0)
    ImageDraw.Draw(canvas).text((w / 2, h / 2), text, fill=255, font=font, anchor="mm")
    rgba = np.concatenate([np.full((h, w, 3), 255, np.uint8), np.asarray(canvas)[..., None]], -1)
    return _crop(rgba)


def hitbox(rgba: np.ndarray, name: str = "image") -> np.ndarray:
    """Convex hull of the centres of the pixels with alpha > 0 (as the original's).

    Args:
        rgba: (h, w, 4) uint8.

    Returns:
        (V, 2) float64 vertices (x, y) in pixels relative to the image centre, y down,
        counter-clockwise as seen with y up. A hull of one row or column of pixels is
        widened by half a pixel each way to have an area.
    """
    rows, cols = np.nonzero(rgba[..., 3] > 0)
    if len(rows) == 0:
        raise ValueError(f"{name}: no pixel with alpha > 0, so no hitbox")
    points = np.stack([cols + 0.5, rows + 0.5], -1).astype(np.float64)
    hull = shapely.MultiPoint(points).convex_hull
    if hull.geom_type != "Polygon":  # a line or a point: widen it to a polygon
        hull = hull.buffer(0.5, cap_style="square", join_style="mitre")
    hull = shapely.geometry.polygon.orient(hull, 1.0)
    vertices = np.asarray(hull.exterior.coords, np.float64)[:-1]
    h, w = rgba.shape[:2]
    return vertices - np.array([w / 2, h / 2])


def _polygon_area(v: np.ndarray) -> float:
    x, y = v[:, 0], v[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


# ---------------------------------------------------------------------------------------
# Banks

@struct.dataclass
class Bank:
    """Device arrays of every symbol image and background a video may draw from.

    Shapes: K symbol images padded to (h, w) (the largest) and bordered, V hull vertices
    (the last repeated as padding), B backgrounds (B >= 1; one black one when unused).
    """

    sprites: jax.Array        # (K, h + 2, w + 2, 4) float32, premultiplied RGBA in [0, 1], each
    #                           image at [1:1 + height, 1:1 + width], clear elsewhere
    sizes: jax.Array          # (K, 2) int32, each image's (width, height)
    vertices: jax.Array       # (K, V, 2) float32, hitbox hulls relative to the image centre
    half_diagonals: jax.Array  # (K,) float32, half the diagonal of each image
    label_starts: jax.Array   # (n_labels,) int32, first image of each label
    label_counts: jax.Array   # (n_labels,) int32
    backgrounds: jax.Array    # (B, H, W, 3) float32 in [0, 1]
    bg_label_starts: jax.Array  # (n_bg_labels,) int32
    bg_label_counts: jax.Array  # (n_bg_labels,) int32; empty when backgrounds are black


@dataclass
class HostBank:
    """Symbol images on the host (for messages) and on the device (for drawing)."""

    labels: list              # as given in symbol_labels
    paths: list[str]
    rgba: list[np.ndarray]    # cropped (h, w, 4) uint8
    hulls: list[np.ndarray]   # (V, 2) float64
    label_of: np.ndarray      # (K,) int, index into labels
    starts: np.ndarray
    counts: np.ndarray
    sprites: jax.Array
    sizes: jax.Array
    vertices: jax.Array
    half_diagonals: np.ndarray
    circumradii: np.ndarray   # farthest hull vertex from the centre, per image


@dataclass
class HostBackgrounds:
    labels: list
    paths: list[str]
    images: list[np.ndarray]  # (H, W, 3) uint8, as pasted on the black frame
    label_of: np.ndarray
    starts: np.ndarray
    counts: np.ndarray
    device: jax.Array


_LOCK = threading.Lock()
_SYMBOLS: dict = {}
_BACKGROUNDS: dict = {}
_DEVICE: dict = {}  # (id(symbols), id(backgrounds)) -> (symbols, backgrounds, Bank); holding both keeps the ids unique


def clear_memory_cache() -> None:
    """Forgets the banks shared in this process (the disk cache stays)."""
    with _LOCK:
        _SYMBOLS.clear()
        _BACKGROUNDS.clear()
        _DEVICE.clear()


def _image_files(directory: str) -> list[os.DirEntry]:
    if not os.path.isdir(directory):
        return []
    entries = [e for e in os.scandir(directory) if pathlib.Path(e.name).suffix.lower() in IMAGE_SUFFIXES]
    return sorted(entries, key=lambda e: e.name)


def _listing(data_dir: str, split: str, labels: Sequence, max_images: int | None, what: str):
    """Per label the image paths (sorted by name, the first max_images), and a digest of
    the names, sizes and modification times."""
    digest = hashlib.sha1(f"v{CACHE_VERSION}|{os.path.abspath(data_dir)}|{split}|{max_images}".encode())
    files = []
    for label in labels:
        folder = os.path.join(data_dir, split, str(label))
        entries = _image_files(folder)[:max_images]
        if not entries:
            raise ValueError(f"{what}: no images for label {label!r} in {folder}")
        paths = []
        for e in entries:
            st = e.stat()
            digest.update(f"|{label}/{e.name}:{st.st_size}:{st.st_mtime_ns}".encode())
            paths.append(e.path)
        files.append(paths)
    return files, digest.hexdigest()


def _decode(files: list[list[str]]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rgba = [load_symbol(f) for paths in files for f in paths]
    paths = [f for ps in files for f in ps]
    hulls = [hitbox(im, p) for im, p in zip(rgba, paths)]
    return rgba, hulls


def _read_cache(path: pathlib.Path, n: int):
    try:
        with np.load(path) as z:
            pixels, shapes, hull_points, hull_counts = z["pixels"], z["shapes"], z["hulls"], z["hull_counts"]
    except (OSError, ValueError, KeyError):
        return None
    if len(shapes) != n:
        return None
    ends = np.cumsum(shapes.prod(1))
    rgba = [pixels[e - s.prod():e].reshape(s) for e, s in zip(ends, shapes)]
    hend = np.cumsum(hull_counts)
    hulls = [hull_points[e - c:e] for e, c in zip(hend, hull_counts)]
    return rgba, hulls


def _write_cache(path: pathlib.Path, rgba, hulls) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, pixels=np.concatenate([im.reshape(-1) for im in rgba]),
                 shapes=np.array([im.shape for im in rgba], np.int64),
                 hulls=np.concatenate(hulls), hull_counts=np.array([len(h) for h in hulls], np.int64))
        os.replace(tmp, path)
    except OSError:  # a read-only or full disk: the cache is an optimisation only
        pass


def _premultiplied(rgba: np.ndarray) -> np.ndarray:
    a = rgba[..., 3:].astype(np.float32) / 255
    return np.concatenate([rgba[..., :3].astype(np.float32) / 255 * a, a], -1)


def _build(labels: list, files: list[list[str]] | None, rgba, hulls) -> HostBank:
    counts = np.array([len(f) for f in files] if files is not None else [1] * len(labels), np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    paths = [p for ps in files for p in ps] if files is not None else [font_path()] * len(labels)
    h = max(im.shape[0] for im in rgba)
    w = max(im.shape[1] for im in rgba)
    # a border of one clear texel on every side: bilinear taps never need bounds checks
    sprites = np.zeros((len(rgba), h + 2, w + 2, 4), np.float32)
    for i, im in enumerate(rgba):
        sprites[i, 1:1 + im.shape[0], 1:1 + im.shape[1]] = _premultiplied(im)
    sizes = np.array([[im.shape[1], im.shape[0]] for im in rgba], np.int32)
    V = max(len(v) for v in hulls)
    vertices = np.stack([np.concatenate([v, np.repeat(v[-1:], V - len(v), 0)]) for v in hulls])
    return HostBank(
        labels=labels, paths=paths, rgba=rgba, hulls=hulls,
        label_of=np.repeat(np.arange(len(labels)), counts), starts=starts, counts=counts,
        sprites=jnp.asarray(sprites), sizes=jnp.asarray(sizes), vertices=jnp.asarray(vertices, jnp.float32),
        half_diagonals=np.linalg.norm(sizes / 2, axis=-1),
        circumradii=np.array([np.linalg.norm(v, axis=-1).max() for v in hulls]))


def symbol_bank(data_dir: str | None, split: str, labels: Sequence, max_images_per_label: int | None = None,
                use_disk_cache: bool = True) -> HostBank:
    """The shared bank of a folder, split and labels (built on first use, then reused).

    Args:
        data_dir: the dataset folder, or None for the font's glyphs of ``str(label)``.
        split: the split folder.
        labels: the label classes, as given (their ``str`` names the folders).
        max_images_per_label: keep only the first N images (by file name) of each label.
        use_disk_cache: read and write the decoded images and hitboxes on disk.
    """
    labels = list(labels)
    key = (None if data_dir is None else os.path.abspath(data_dir), split,
           tuple((type(x).__name__, str(x)) for x in labels), max_images_per_label)
    with _LOCK:
        bank = _SYMBOLS.get(key)
        if bank is not None:
            return bank
        if data_dir is None:
            rgba = [text_symbol(str(label)) for label in labels]
            hulls = [hitbox(im, str(label)) for im, label in zip(rgba, labels)]
            bank = _build(labels, None, rgba, hulls)
        else:
            files, digest = _listing(data_dir, split, labels, max_images_per_label, "data_dir")
            path = cache_dir() / f"moving-symbols-v{CACHE_VERSION}-{digest}.npz"
            n = sum(len(f) for f in files)
            cached = _read_cache(path, n) if use_disk_cache and path.exists() else None
            if cached is None:
                rgba, hulls = _decode(files)
                if use_disk_cache:
                    _write_cache(path, rgba, hulls)
            else:
                rgba, hulls = cached
            bank = _build(labels, files, rgba, hulls)
        _SYMBOLS[key] = bank
        return bank


def background_bank(data_dir: str | None, split: str, labels: Sequence | None, size: tuple[int, int],
                    max_images_per_label: int | None = None) -> HostBackgrounds:
    """The shared backgrounds: each image pasted at the top-left corner of a black
    (height, width) frame, as the original; black only unless both folder and labels."""
    W, H = size
    key = (None if data_dir is None or labels is None else os.path.abspath(data_dir), split,
           None if labels is None else tuple((type(x).__name__, str(x)) for x in labels), max_images_per_label,
           (W, H))
    with _LOCK:
        bg = _BACKGROUNDS.get(key)
        if bg is not None:
            return bg
        if key[0] is None:
            bg = HostBackgrounds([], [], [], np.zeros(0, int), np.zeros(0, int), np.zeros(0, int),
                                 jnp.zeros((1, H, W, 3), jnp.float32))
        else:
            labels = list(labels)
            files, _ = _listing(data_dir, split, labels, max_images_per_label, "background_data_dir")
            images = []
            for paths in files:
                for f in paths:
                    with Image.open(f) as im:
                        canvas = Image.new("RGB", (W, H))
                        canvas.paste(im.convert("RGB"))
                        images.append(np.asarray(canvas, np.uint8))
            counts = np.array([len(f) for f in files])
            bg = HostBackgrounds(labels, [p for ps in files for p in ps], images,
                                 np.repeat(np.arange(len(labels)), counts),
                                 np.concatenate([[0], np.cumsum(counts)[:-1]]), counts,
                                 jnp.asarray(np.stack(images).astype(np.float32) / 255))
        _BACKGROUNDS[key] = bg
        return bg


def device_bank(symbols: HostBank, backgrounds: HostBackgrounds) -> Bank:
    """The device arrays of a symbol bank and its backgrounds (made once per pair)."""
    key = (id(symbols), id(backgrounds))
    with _LOCK:
        hit = _DEVICE.get(key)
        if hit is not None:
            return hit[2]
    bank = Bank(sprites=symbols.sprites, sizes=symbols.sizes, vertices=symbols.vertices,
                half_diagonals=jnp.asarray(symbols.half_diagonals, jnp.float32),
                label_starts=jnp.asarray(symbols.starts, jnp.int32),
                label_counts=jnp.asarray(symbols.counts, jnp.int32),
                backgrounds=backgrounds.device,
                bg_label_starts=jnp.asarray(backgrounds.starts, jnp.int32),
                bg_label_counts=jnp.asarray(backgrounds.counts, jnp.int32))
    with _LOCK:
        _DEVICE[key] = (symbols, backgrounds, bank)
    return bank
