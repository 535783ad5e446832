"""Moving Symbols: videos of symbols moving, rotating, scaling and bouncing inside a frame.

A video-prediction dataset generator in the manner of Moving MNIST, built on the physics
core: the frame's edges are the walls of a box scenery and the symbols are agents moved
by :func:`megastep_jax.core.physics` with ``collision="bounce"``. Two interfaces:

- :class:`MovingSymbols` is a Python iterator yielding one video's frames as PIL images
  (mode ``"RGB"`` or ``"L"``) and publishing what happens to subscribers
  (:meth:`MovingSymbols.add_subscriber`), one frame per ``next()``;
- :meth:`MovingSymbols.generate` makes a batch of videos at once under ``jit``:
  ``generate(key, n_videos, n_frames)`` returns uint8 ``(videos, frames, height, width,
  channels)``. Video ``i`` of ``generate(jax.random.key(seed), ...)`` is the video the
  iterator built with ``seed`` and ``video_index=i`` yields (the two are compiled apart,
  so states may differ in the last bit of a float; in our tests the frames are equal).

:func:`save` writes a batch to mp4/gif files and their messages to JSON Lines.

Coordinates. Positions are in pixels of the frame, x to the right and y down, origin at
the top-left corner (as PyGame's). A symbol's image is drawn centred on its position,
scaled by ``scale`` and rotated by ``angle`` radians; a positive angle turns it clockwise
on screen (the rotation matrix [[cos, -sin], [sin, cos]] applied with y down).

Hitboxes and the physics. A symbol's hitbox is the convex hull of its opaque pixels
(alpha >= 0.5), as vertices in image pixels relative to the image centre (the
``vertices`` of its ``symbol_init`` message). At each step, with the symbol's current
angle and scale:

- frame edges: the hitbox's extents from its centre (left, right, top, bottom) give the
  box its centre may occupy so that the hitbox stays in the frame: its bounds. Without
  ``interacting_symbols`` each symbol is the one agent (a point: radius 0) of its own env
  in the physics scenery, whose 4 walls are its bounds (plus a 0.01 px pad), so the
  physics bounces it exactly when its hitbox reaches an edge. With
  ``interacting_symbols`` all the symbols are agents of one env, discs of a common radius
  (below), and the walls are the loosest bounds over the symbols moved out by that
  radius: the physics bounces the symbol whose extent is smallest on that side exactly
  at its edge, and a symbol reaching its own edge before the wall is put back onto the
  edge with its outward velocity reflected (the same rule moves a symbol that grows or
  turns into an edge back inside). Walls are long lines crossing at the corners, so no
  wall ends near a contact. The physics stops a disc 1% short of a contact; the symbol
  is then moved onto the edge, so every wall contact leaves the hitbox touching the
  edge, and ``hit_wall`` fires exactly on the steps where a hitbox touches an edge
  (within 0.01 px, which are snapped onto it).
- symbol-symbol contacts (``interacting_symbols``): the discs' common radius is the mean
  over the symbols of their hitboxes' area-equivalent radii (sqrt(area / pi)) at their
  current scales. Discs approximate the hitboxes, so interacting symbols may overlap a
  little or bounce a little apart, and ``start_overlap`` / ``end_overlap`` (which test the
  hitbox polygons) can still fire. Without ``interacting_symbols`` symbols pass through
  each other.
- rotation and scale are kinematic: angle += angular_velocity per frame, scale follows
  its scale function of the frame number; contacts do not change them.
- with restitution 1, wall bounces reflect the normal velocity component; disc-disc
  bounces exchange the normal components of equal masses.

All randomness derives from ``seed`` or the key passed to :meth:`generate`.
"""
from __future__ import annotations

import copy
import functools
import json
import math
import os
import pathlib
from typing import Any, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from . import core, reference
from .state import Scenery

__all__ = ["DEFAULT_PARAMS", "DEFAULT_DEBUG_OPTIONS", "MovingSymbols", "save", "font_path",
           "WALL_LABELS", "MESSAGE_TYPES"]

DEFAULT_PARAMS: dict[str, Any] = {
    "data_dir": None,
    "split": "training",
    "num_symbols": 2,
    "video_size": (64, 64),
    "color_output": True,
    "symbol_labels": tuple(range(10)),
    "scale_limits": (1.0, 1.0),
    "scale_period_limits": (20.0, 40.0),
    "rotation_speed_limits": (0.0, 0.0),
    "position_speed_limits": (1.0, 3.0),
    "interacting_symbols": False,
    "scale_function_type": "constant",
    "rotate_at_start": False,
    "rescale_at_start": True,
    "lateral_motion_at_start": False,
    "background_data_dir": None,
    "background_labels": None,
}
"""Default parameters; any subset may be given to :class:`MovingSymbols`.

- ``data_dir`` (str or None): the dataset directory, holding one folder per split (e.g.
  ``training``, ``testing``), each holding one folder per label with the symbol images
  (any format Pillow reads; transparency from the alpha channel, or else from the
  brightness, so light symbols on a dark background work). None: each label is drawn
  as text with the DejaVu Sans Bold font that ships with matplotlib (digits 0-9 by
  default), so nothing needs downloading.
- ``split`` (str): the split folder to sample images from.
- ``num_symbols`` (int): how many symbols each video shows.
- ``video_size`` ((int, int)): frame (width, height) in pixels.
- ``color_output`` (bool): "RGB" frames (3 channels) if True, else "L" (1 channel).
- ``symbol_labels`` (sequence): the label classes, strings or ints matching the folder
  names in each split (or the text to draw without a data_dir). Each symbol's label is
  drawn uniformly, then an image of that label uniformly.
- ``scale_limits`` ((float, float)): smallest and largest scale relative to the image's
  own size; or a list of such ranges, one per symbol.
- ``scale_period_limits`` ((float, float) or list of them): shortest and longest duration,
  in frames, of a full scale cycle (sine and triangle).
- ``rotation_speed_limits`` ((float, float) or list of them): range of the angular speed
  in radians per frame, drawn uniformly (give (-w, w) for both directions).
- ``position_speed_limits`` ((float, float) or list of them): range of the translational
  speed in pixels per frame, drawn uniformly; the direction is uniform.
- ``interacting_symbols`` (bool): whether symbols bounce off each other.
- ``scale_function_type`` (str): how the scale evolves: "sine" (a sine wave between the
  limits), "triangle" (constant scaling speed, reversing at the limits) or "constant"
  (the initial scale throughout).
- ``rotate_at_start`` (bool): whether the initial angle is uniform in [-pi, pi) (else 0).
- ``rescale_at_start`` (bool): whether the initial scale may be anywhere in its range
  (a random phase of the scale function); if not, every symbol starts at the middle of
  its range.
- ``lateral_motion_at_start`` (bool): whether symbols start moving only left, right, up
  or down; they then move otherwise only after bouncing off each other.
- ``background_data_dir`` (str or None): like data_dir, for background images (resized to
  the frame).
- ``background_labels`` (sequence or None): the background classes. Unless both this and
  background_data_dir are set, backgrounds are solid black.
"""

DEFAULT_DEBUG_OPTIONS: dict[str, Any] = {
    "show_hitboxes": False,
    "show_frame_number": False,
}
"""Debug drawing, applied by the iterator only (not by :meth:`MovingSymbols.generate`).

- ``show_hitboxes`` (bool): outline each symbol's hitbox in red.
- ``show_frame_number`` (bool): write the step number in the top-left corner.
"""

WALL_LABELS = ("left", "right", "top", "bottom")
MESSAGE_TYPES = ("params", "debug_options", "background", "symbol_init", "symbol_state",
                 "start_overlap", "end_overlap", "hit_wall")
SCALE_FUNCTIONS = ("sine", "triangle", "constant")
RANGE_PARAMS = ("scale_limits", "scale_period_limits", "rotation_speed_limits",
                "position_speed_limits")

HITBOX_ALPHA = 0.5
"""Pixels at least this opaque belong to the hitbox."""
TOUCH = 0.01
"""Pixels: a hitbox nearer an edge than this is moved onto it and counts as touching."""
WALL_PAD = 0.01
"""Pixels between a physics wall and the disc of a hitbox touching its edge, so that a
disc resting on its edge (0.1% inside the kernels' contact distance) is not in contact."""
FONT_SIZE = 22
PLACEMENT_TRIES = 64
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def font_path() -> str:
    """Path of the DejaVu Sans Bold font file that ships with matplotlib."""
    import matplotlib

    path = os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans-Bold.ttf")
    if not os.path.exists(path):
        raise FileNotFoundError(f"matplotlib's DejaVuSans-Bold.ttf not found at {path}")
    return path


# ---------------------------------------------------------------------------------------
# Parameters

def _as_ranges(name: str, value, n: int, positive: bool = False, nonnegative: bool = False) -> np.ndarray:
    """One (lo, hi) range or a list of n of them, as an (n, 2) float64 array."""
    try:
        arr = np.asarray(value, np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected (lo, hi) or a list of {n} (lo, hi) ranges, got {value!r}") from None
    if arr.shape == (2,):
        arr = np.broadcast_to(arr, (n, 2)).copy()
    if arr.shape != (n, 2):
        raise ValueError(f"{name}: expected (lo, hi) or a list of {n} (lo, hi) ranges (one per "
                         f"symbol), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr[:, 0] > arr[:, 1]):
        raise ValueError(f"{name}: expected finite ranges with lo <= hi, got {value!r}")
    if positive and np.any(arr <= 0):
        raise ValueError(f"{name}: expected positive values, got {value!r}")
    if nonnegative and np.any(arr < 0):
        raise ValueError(f"{name}: expected values >= 0, got {value!r}")
    return arr


def _check_params(params: dict | None) -> dict:
    """Merges params over DEFAULT_PARAMS and validates them; returns the merged copy."""
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ValueError(f"params: expected a dict, got {type(params).__name__}")
    unknown = sorted(set(params) - set(DEFAULT_PARAMS))
    if unknown:
        raise ValueError(f"params: unknown keys {unknown}; expected keys among {sorted(DEFAULT_PARAMS)}")
    p = {**copy.deepcopy(DEFAULT_PARAMS), **copy.deepcopy(params)}
    n = p["num_symbols"]
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"num_symbols: expected a positive int, got {n!r}")
    size = p["video_size"]
    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 for v in size)):
        raise ValueError(f"video_size: expected (width, height) positive ints, got {size!r}")
    for name in ("color_output", "interacting_symbols", "rotate_at_start", "rescale_at_start",
                 "lateral_motion_at_start"):
        if not isinstance(p[name], (bool, np.bool_)):
            raise ValueError(f"{name}: expected a bool, got {p[name]!r}")
    if p["scale_function_type"] not in SCALE_FUNCTIONS:
        raise ValueError(f"scale_function_type: expected one of {SCALE_FUNCTIONS}, got "
                         f"{p['scale_function_type']!r}")
    labels = p["symbol_labels"]
    if isinstance(labels, (str, bytes)) or not isinstance(labels, Iterable):
        raise ValueError(f"symbol_labels: expected a sequence of labels, got {labels!r}")
    if len(list(labels)) == 0:
        raise ValueError("symbol_labels: expected at least one label")
    if not isinstance(p["split"], str):
        raise ValueError(f"split: expected a str, got {p['split']!r}")
    for name in ("data_dir", "background_data_dir"):
        d = p[name]
        if d is not None and not os.path.isdir(d):
            raise ValueError(f"{name}: expected an existing directory or None, got {d!r}")
    _as_ranges("scale_limits", p["scale_limits"], n, positive=True)
    _as_ranges("scale_period_limits", p["scale_period_limits"], n, positive=True)
    _as_ranges("rotation_speed_limits", p["rotation_speed_limits"], n)
    _as_ranges("position_speed_limits", p["position_speed_limits"], n, nonnegative=True)
    return p


def _check_debug_options(options: dict | None) -> dict:
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise ValueError(f"debug_options: expected a dict, got {type(options).__name__}")
    unknown = sorted(set(options) - set(DEFAULT_DEBUG_OPTIONS))
    if unknown:
        raise ValueError(f"debug_options: unknown keys {unknown}; expected keys among "
                         f"{sorted(DEFAULT_DEBUG_OPTIONS)}")
    return {**DEFAULT_DEBUG_OPTIONS, **options}


# ---------------------------------------------------------------------------------------
# Images, hitboxes and the bank of sprites (host side)

def _image_files(directory: str) -> list[str]:
    if not os.path.isdir(directory):
        return []
    return sorted(os.path.join(directory, f) for f in os.listdir(directory)
                  if pathlib.Path(f).suffix.lower() in IMAGE_SUFFIXES)


def load_symbol(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Reads a symbol image.

    Returns:
        (rgba, premultiplied): (h, w, 4) uint8 with straight alpha, and (h, w, 4) float32
        in [0, 1] with colour premultiplied by alpha. Transparency comes from the alpha
        channel if the image has one, else from the brightest channel (dark = clear).
    """
    from PIL import Image

    with Image.open(path) as im:
        has_alpha = im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info
        if has_alpha:
            rgba = np.asarray(im.convert("RGBA"), np.uint8)
            alpha = rgba[..., 3:].astype(np.float32) / 255
            premult = np.concatenate([rgba[..., :3].astype(np.float32) / 255 * alpha, alpha], -1)
            return rgba, premult.astype(np.float32)
        rgb = np.asarray(im.convert("RGB"), np.float32) / 255
    alpha = rgb.max(-1, keepdims=True)
    straight = np.where(alpha > 0, rgb / np.maximum(alpha, 1e-6), 0.0)
    rgba = np.round(np.concatenate([straight, alpha], -1) * 255).astype(np.uint8)
    return rgba, np.concatenate([rgb, alpha], -1).astype(np.float32)


def text_symbol(text: str, size: int = FONT_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """A white label drawn with DejaVu Sans Bold on a clear background; as load_symbol."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(font_path(), size)
    x0, y0, x1, y1 = font.getbbox(text, anchor="mm")
    w = max(int(math.ceil(x1 - x0)) + 4, int(size * 1.25))
    h = max(int(math.ceil(y1 - y0)) + 4, int(size * 1.25))
    canvas = Image.new("L", (w, h), 0)
    ImageDraw.Draw(canvas).text((w / 2, h / 2), text, fill=255, font=font, anchor="mm")
    alpha = np.asarray(canvas, np.float32)[..., None] / 255
    rgba = np.concatenate([np.full((h, w, 3), 255, np.uint8), np.asarray(canvas)[..., None]], -1)
    return rgba, np.concatenate([np.repeat(alpha, 3, -1), alpha], -1).astype(np.float32)


def hitbox(alpha: np.ndarray, name: str = "image") -> np.ndarray:
    """Convex hull of the pixels with alpha >= HITBOX_ALPHA.

    Args:
        alpha: (h, w) in [0, 1].

    Returns:
        (V, 2) float64 vertices (x, y) in pixels relative to the image centre, y down,
        counter-clockwise as seen with y up.
    """
    import shapely

    rows, cols = np.nonzero(alpha >= HITBOX_ALPHA)
    if len(rows) == 0:
        raise ValueError(f"{name}: no pixel with alpha >= {HITBOX_ALPHA}, so no hitbox")
    corners = np.concatenate([np.stack([cols + dx, rows + dy], -1) for dx in (0, 1) for dy in (0, 1)])
    hull = shapely.MultiPoint(corners.astype(np.float64)).convex_hull
    if hull.geom_type != "Polygon":  # a line or point: widen it to a polygon
        hull = hull.buffer(0.5, cap_style="square", join_style="mitre")
    hull = shapely.geometry.polygon.orient(hull, 1.0)
    vertices = np.asarray(hull.exterior.coords, np.float64)[:-1]
    h, w = alpha.shape
    return vertices - np.array([w / 2, h / 2])


@struct.dataclass
class Bank:
    """Device arrays of every symbol image and background a video may draw from."""

    sprites: jax.Array        # (K, h, w, 4) float32, premultiplied RGBA, images centred, zero padded
    centres: jax.Array        # (K, 2) float32, image centre (x, y) inside its padded sprite
    vertices: jax.Array       # (K, V, 2) float32, hitbox hulls (repeating the last vertex as padding)
    radii: jax.Array          # (K,) float32, area-equivalent radius of the hitbox at scale 1
    label_starts: jax.Array   # (n_labels,) int32, first sprite of each label
    label_counts: jax.Array   # (n_labels,) int32
    backgrounds: jax.Array    # (B, H, W, 3) float32 in [0, 1]; B >= 1 (zeros when unused)
    bg_label_starts: jax.Array  # (n_bg_labels,) int32
    bg_label_counts: jax.Array  # (n_bg_labels,) int32; empty when backgrounds are black


def _pad_to(arrays: Sequence[np.ndarray], h: int, w: int):
    out = np.zeros((len(arrays), h, w) + arrays[0].shape[2:], arrays[0].dtype)
    offsets = []
    for i, a in enumerate(arrays):
        y, x = (h - a.shape[0]) // 2, (w - a.shape[1]) // 2
        out[i, y:y + a.shape[0], x:x + a.shape[1]] = a
        offsets.append((x, y))
    return out, np.asarray(offsets, np.float64)


class _HostBank:
    """Images and paths on the host, for messages; :attr:`device` for the kernels."""

    def __init__(self, p: dict, max_images_per_label: int | None):
        labels = [str(label) for label in p["symbol_labels"]]
        self.labels, self.paths, self.rgba, premult, self.hulls = labels, [], [], [], []
        self.label_of, starts, counts = [], [], []
        for li, label in enumerate(labels):
            if p["data_dir"] is None:
                items = [(font_path(), text_symbol(label))]
            else:
                folder = os.path.join(p["data_dir"], p["split"], label)
                files = _image_files(folder)[:max_images_per_label]
                if not files:
                    raise ValueError(f"data_dir: no images for label {label!r} in {folder}")
                items = [(f, load_symbol(f)) for f in files]
            starts.append(len(self.paths))
            counts.append(len(items))
            for path, (rgba, pm) in items:
                self.paths.append(path)
                self.rgba.append(rgba)
                premult.append(pm)
                self.hulls.append(hitbox(pm[..., 3], path))
                self.label_of.append(li)
        h = max(a.shape[0] for a in premult)
        w = max(a.shape[1] for a in premult)
        sprites, offsets = _pad_to(premult, h, w)
        sizes = np.array([[a.shape[1], a.shape[0]] for a in premult], np.float64)
        centres = offsets + sizes / 2
        V = max(len(v) for v in self.hulls)
        vertices = np.stack([np.concatenate([v, np.repeat(v[-1:], V - len(v), 0)]) for v in self.hulls])
        areas = np.array([_polygon_area(v) for v in self.hulls])
        self.radii = np.sqrt(areas / np.pi)
        self.circumradii = np.array([np.linalg.norm(v, axis=-1).max() for v in self.hulls])
        # farthest drawn pixel from an image's centre: its half diagonal
        self.reach = float(np.max(np.linalg.norm(sizes / 2, axis=-1)))

        W, H = p["video_size"]
        self.bg_labels, self.bg_paths, self.bg_images = [], [], []
        bg_starts, bg_counts = [], []
        if p["background_data_dir"] is not None and p["background_labels"] is not None:
            from PIL import Image

            for label in p["background_labels"]:
                folder = os.path.join(p["background_data_dir"], p["split"], str(label))
                files = _image_files(folder)[:max_images_per_label]
                if not files:
                    raise ValueError(f"background_data_dir: no images for label {label!r} in {folder}")
                bg_starts.append(len(self.bg_paths))
                bg_counts.append(len(files))
                self.bg_labels.append(str(label))
                for f in files:
                    with Image.open(f) as im:
                        self.bg_images.append(np.asarray(
                            im.convert("RGB").resize((W, H), Image.Resampling.BILINEAR), np.uint8))
                    self.bg_paths.append(f)
        self.bg_label_of = np.repeat(np.arange(len(bg_counts)), bg_counts).astype(int)
        backgrounds = (np.stack(self.bg_images).astype(np.float32) / 255 if self.bg_images
                       else np.zeros((1, H, W, 3), np.float32))
        self.device = Bank(
            sprites=jnp.asarray(sprites, jnp.float32), centres=jnp.asarray(centres, jnp.float32),
            vertices=jnp.asarray(vertices, jnp.float32), radii=jnp.asarray(self.radii, jnp.float32),
            label_starts=jnp.asarray(starts, jnp.int32), label_counts=jnp.asarray(counts, jnp.int32),
            backgrounds=jnp.asarray(backgrounds), bg_label_starts=jnp.asarray(bg_starts, jnp.int32),
            bg_label_counts=jnp.asarray(bg_counts, jnp.int32))


def _polygon_area(v: np.ndarray) -> float:
    x, y = v[:, 0], v[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


# ---------------------------------------------------------------------------------------
# State and dynamics (jnp, one video; vmapped for batches)

@struct.dataclass
class Video:
    """What is drawn once per video."""

    sprite: jax.Array       # (S,) int32, index into the bank
    label: jax.Array        # (S,) int32, index into symbol_labels
    background: jax.Array   # () int32, index into the backgrounds, -1 for black
    period: jax.Array       # (S,) float32, frames per scale cycle
    phase: jax.Array        # (S,) float32, scale-cycle phase at frame 0, in cycles
    scale0: jax.Array       # (S,) float32, the scale of "constant" symbols
    scale_lo: jax.Array     # (S,) float32
    scale_hi: jax.Array     # (S,) float32


@struct.dataclass
class SymbolStates:
    """Every symbol's state at one frame; stacked over frames and videos by generate."""

    step: jax.Array              # () int32, frame number
    position: jax.Array          # (S, 2) float32, centre (x, y) in pixels, y down
    velocity: jax.Array          # (S, 2) float32, pixels per frame
    angle: jax.Array             # (S,) float32, radians in [-pi, pi), clockwise on screen
    angular_velocity: jax.Array  # (S,) float32, radians per frame
    scale: jax.Array             # (S,) float32
    scale_velocity: jax.Array    # (S,) float32, d scale / d frame
    hits: jax.Array              # (S, 4) bool, hitbox touching the left, right, top, bottom edge
    overlaps: jax.Array          # (S, S) bool, hitboxes overlapping (symmetric, False diagonal)


def _wrap_angle(a):
    return jnp.mod(a + jnp.pi, 2 * jnp.pi) - jnp.pi


def scale_at(kind: str, video: Video, t):
    """Scale and its derivative per frame at frame t, for every symbol: ((S,), (S,))."""
    lo, hi = video.scale_lo, video.scale_hi
    t = jnp.asarray(t, jnp.float32)
    if kind == "constant":
        return video.scale0, jnp.zeros_like(video.scale0)
    u = t / video.period + video.phase
    if kind == "sine":
        mid, amp = (lo + hi) / 2, (hi - lo) / 2
        w = 2 * jnp.pi / video.period
        return mid + amp * jnp.sin(2 * jnp.pi * u), amp * w * jnp.cos(2 * jnp.pi * u)
    f = u - jnp.floor(u)  # triangle: lo at f = 0, hi at f = 1/2
    slope = 2 * (hi - lo) / video.period
    return lo + (hi - lo) * (1 - jnp.abs(2 * f - 1)), jnp.where(f < 0.5, slope, -slope)


def transform(vertices, position, angle, scale):
    """Hitbox vertices placed in the frame: (S, V, 2) from (S, V, 2), (S, 2), (S,), (S,)."""
    c, s = jnp.cos(angle)[:, None], jnp.sin(angle)[:, None]
    x, y = vertices[..., 0] * scale[:, None], vertices[..., 1] * scale[:, None]
    return jnp.stack([c * x - s * y, s * x + c * y], -1) + position[:, None, :]


def _bounds(vertices, angle, scale, size):
    """Where each centre may be for its hitbox to lie in the frame: lo, hi (S, 2)."""
    placed = transform(vertices, jnp.zeros(angle.shape + (2,)), angle, scale)
    return -placed.min(1), size - placed.max(1)


def _overlaps(polygons):
    """(S, S) bool: pairs of convex polygons (S, V, 2) that overlap (separating axes)."""
    edges = jnp.roll(polygons, -1, 1) - polygons
    axes = jnp.stack([-edges[..., 1], edges[..., 0]], -1)  # (S, V, 2); padding gives zero axes
    S = polygons.shape[0]
    proj = jnp.einsum("ivd,jwd->ijwv", polygons, axes)  # polygon i on the edge normals of j
    lo, hi = proj.min(-1), proj.max(-1)  # (S, S, V)
    own_lo, own_hi = jnp.diagonal(lo).T, jnp.diagonal(hi).T  # (S, V): j on its own normals
    # apart on one of j's normals (zero normals never separate)
    apart = jnp.any((hi < own_lo[None]) | (lo > own_hi[None]), -1)  # (S, S) [i, j]
    return ~(apart | apart.T) & ~jnp.eye(S, dtype=bool)


def _settle(position, velocity, velocity_before, lo, hi):
    """Puts hitboxes touching (or sunk into) an edge exactly onto it; see the module doc.

    Returns:
        position (S, 2), velocity (S, 2) with no component out of a touched edge, and
        touching (S, 4) bool in WALL_LABELS order.
    """
    gaps_lo, gaps_hi = position - lo, hi - position  # (S, 2): x then y
    # wall contacts in the physics: the normal velocity turned inwards this step
    bounced_lo = (velocity_before < 0) & (velocity > 0)
    bounced_hi = (velocity_before > 0) & (velocity < 0)
    near_lo = gaps_lo < 0.01 * jnp.abs(velocity_before) + 2 * TOUCH
    near_hi = gaps_hi < 0.01 * jnp.abs(velocity_before) + 2 * TOUCH
    at_lo = (bounced_lo & near_lo) | (gaps_lo < TOUCH)
    at_hi = (bounced_hi & near_hi) | (gaps_hi < TOUCH)
    position = jnp.where(at_lo, lo, jnp.where(at_hi, hi, position))
    position = jnp.clip(position, lo, hi)
    at_lo, at_hi = position <= lo, position >= hi
    velocity = jnp.where(at_lo & (velocity < 0), -velocity, velocity)
    velocity = jnp.where(at_hi & (velocity > 0), -velocity, velocity)
    touching = jnp.stack([at_lo[:, 0], at_hi[:, 0], at_lo[:, 1], at_hi[:, 1]], -1)
    return position, velocity, touching


class _Dynamics:
    """The pure functions of one video, closed over the static parameters.

    Hashable by those parameters, so instances with equal ones share compiled code.
    """

    def __init__(self, p: dict, backend: str, sprite_reach: float):
        self.S = int(p["num_symbols"])
        self.W, self.H = (int(v) for v in p["video_size"])
        self.interacting = bool(p["interacting_symbols"])
        self.kind = p["scale_function_type"]
        self.rotate_at_start = bool(p["rotate_at_start"])
        self.rescale_at_start = bool(p["rescale_at_start"])
        self.lateral = bool(p["lateral_motion_at_start"])
        self.color = bool(p["color_output"])
        ranges = {name: _as_ranges(name, p[name], self.S).astype(np.float32) for name in RANGE_PARAMS}
        self._ranges = ranges
        self.backend = backend
        # drawing window: any bank image at the largest scale, plus the bilinear taps
        half = int(math.ceil(sprite_reach * float(ranges["scale_limits"][:, 1].max()))) + 2
        self.window = (min(2 * half, self.H), min(2 * half, self.W))
        self._config = (self.S, self.W, self.H, self.interacting, self.kind, self.rotate_at_start,
                        self.rescale_at_start, self.lateral, self.color, backend, self.window,
                        tuple((k, v.tobytes()) for k, v in ranges.items()))
        # physics coordinates: pixels shifted so everything, walls included, is positive
        self.offset = float(self.W + self.H + 2)
        self.reach = float(self.W + self.H)

    def __hash__(self):
        return hash(self._config)

    def __eq__(self, other):
        return isinstance(other, _Dynamics) and self._config == other._config

    @property
    def ranges(self):
        return {k: jnp.asarray(v) for k, v in self._ranges.items()}

    @property
    def size(self):
        return jnp.array([self.W, self.H], jnp.float32)

    # -- drawing a video -------------------------------------------------------------
    def init(self, bank: Bank, key) -> tuple[Video, SymbolStates]:
        S = self.S
        # One draw of every uniform number the video needs: each jax.random call compiles
        # its own threefry, and a dozen of them took seconds to compile.
        n_each = 10 * S + 2
        u = jax.random.uniform(key, (n_each + PLACEMENT_TRIES * S * 2,))
        k = [u[i * S:(i + 1) * S] for i in range(10)]
        u_bg = u[10 * S:10 * S + 2]
        u_place = u[n_each:].reshape(PLACEMENT_TRIES, S, 2)
        n_labels = bank.label_starts.shape[0]
        label = jnp.minimum(jnp.floor(k[0] * n_labels).astype(jnp.int32), n_labels - 1)
        within = jnp.floor(k[1] * bank.label_counts[label]).astype(jnp.int32)
        sprite = bank.label_starts[label] + jnp.minimum(within, bank.label_counts[label] - 1)
        n_bg = bank.bg_label_starts.shape[0]
        if n_bg:
            bg_label = jnp.minimum(jnp.floor(u_bg[0] * n_bg).astype(jnp.int32), n_bg - 1)
            bg_within = jnp.floor(u_bg[1] * bank.bg_label_counts[bg_label]).astype(jnp.int32)
            background = bank.bg_label_starts[bg_label] + jnp.minimum(bg_within, bank.bg_label_counts[bg_label] - 1)
        else:
            background = jnp.int32(-1)

        uniform = lambda uu, r: r[:, 0] + (r[:, 1] - r[:, 0]) * uu
        lo, hi = self.ranges["scale_limits"][:, 0], self.ranges["scale_limits"][:, 1]
        period = uniform(k[4], self.ranges["scale_period_limits"])
        if self.rescale_at_start:
            phase = k[5]
            scale0 = uniform(k[5], self.ranges["scale_limits"])
        else:
            # start at the middle of the range, growing or shrinking
            half = (k[5] < 0.5).astype(jnp.float32) * 0.5
            phase = half + (0.25 if self.kind == "triangle" else 0.0)
            scale0 = (lo + hi) / 2
        video = Video(sprite=sprite, label=label, background=background, period=period,
                      phase=phase, scale0=scale0, scale_lo=lo, scale_hi=hi)

        angle = (-jnp.pi + 2 * jnp.pi * k[6]) if self.rotate_at_start else jnp.zeros(S)
        angular_velocity = uniform(k[7], self.ranges["rotation_speed_limits"])
        speed = uniform(k[8], self.ranges["position_speed_limits"])
        if self.lateral:
            direction = jnp.minimum(jnp.floor(k[9] * 4), 3.0) * (jnp.pi / 2)
        else:
            direction = k[9] * (2 * jnp.pi)
        velocity = speed[:, None] * jnp.stack([jnp.cos(direction), jnp.sin(direction)], -1)
        scale, scale_velocity = scale_at(self.kind, video, 0.0)

        vertices = bank.vertices[sprite]
        blo, bhi = _bounds(vertices, angle, scale, self.size)
        tries = blo + (bhi - blo) * u_place
        if self.interacting and S > 1:
            # prefer a placement whose discs are apart
            r = self._radius(bank, video, scale)
            d = jnp.linalg.norm(tries[:, :, None] - tries[:, None, :], axis=-1) + jnp.eye(S) * 1e9
            ok = jnp.all(d > 2.01 * r, axis=(1, 2))
            position = tries[jnp.where(jnp.any(ok), jnp.argmax(ok), PLACEMENT_TRIES - 1)]
        else:
            position = tries[0]
        position, velocity, hits = _settle(position, velocity, velocity, blo, bhi)
        polygons = transform(vertices, position, angle, scale)
        state = SymbolStates(step=jnp.int32(0), position=position, velocity=velocity,
                             angle=_wrap_angle(angle), angular_velocity=angular_velocity,
                             scale=scale, scale_velocity=scale_velocity, hits=hits,
                             overlaps=_overlaps(polygons))
        return video, jax.tree_util.tree_map(lambda x: jnp.asarray(x), state)

    def _radius(self, bank: Bank, video: Video, scale):
        return jnp.mean(bank.radii[video.sprite] * scale)

    # -- one frame to the next ---------------------------------------------------------
    def _physics(self, position, velocity, lo, hi, radius):
        """Moves every symbol by its velocity for one frame, bouncing. (S, 2) each.

        Without interaction: one env per symbol, holding that symbol as its one agent,
        walled by its own bounds. With interaction: one env holding every symbol, walled
        by the loosest bounds (so no hitbox is bounced before it touches an edge; those
        with larger extents are then put back onto their own edge by _settle).
        """
        S, o, reach = self.S, self.offset, self.reach
        if self.interacting:
            E, A = 1, S
            lo, hi = lo.min(0, keepdims=True), hi.max(0, keepdims=True)
        else:
            E, A = S, 1
        pad = radius * (1 + 2 * (reference.CONTACT_SCALE - 1)) + WALL_PAD
        wl, wr = lo[:, 0] - pad + o, hi[:, 0] + pad + o
        wt, wb = lo[:, 1] - pad + o, hi[:, 1] + pad + o
        # long walls, crossing at the corners, so no wall ends near a contact
        far_lo, far_hi = jnp.full((E,), o - reach), jnp.full((E,), o + reach + max(self.W, self.H))
        seg = lambda x0, y0, x1, y1: jnp.stack([jnp.stack([x0, y0], -1), jnp.stack([x1, y1], -1)], 1)
        walls = jnp.stack([seg(wl, far_lo, wl, far_hi), seg(wr, far_lo, wr, far_hi),
                           seg(far_lo, wt, far_hi, wt), seg(far_lo, wb, far_hi, wb)], 1)  # (E, 4, 2, 2)
        n_model = 8 * A
        L = n_model + 4
        scenery = Scenery(
            lines=jnp.concatenate([jnp.zeros((E, n_model, 2, 2)), walls], 1),
            n_lines=jnp.full((E,), L, jnp.int32), lights=jnp.zeros((E, 1, 3)),
            n_lights=jnp.zeros((E,), jnp.int32), textures=jnp.zeros((E, 1, 3)),
            texel_starts=jnp.zeros((E, L), jnp.int32), texel_widths=jnp.zeros((E, L), jnp.int32),
            baked=jnp.ones((E, 1)), model=jnp.asarray(_agent_model()), n_agents=A)
        pos, vel = (position + o).reshape(E, A, 2), velocity.reshape(E, A, 2)
        agents = core.Agents(angles=jnp.zeros((E, A)), positions=pos, angvelocity=jnp.zeros((E, A)),
                             velocity=vel)
        moved, _ = core.physics(scenery, agents, fps=1.0, radius=radius, collision="bounce",
                                restitution=1.0, backend=self.backend)
        return moved.positions.reshape(S, 2) - o, moved.velocity.reshape(S, 2)

    def step(self, bank: Bank, video: Video, state: SymbolStates) -> SymbolStates:
        t = state.step + 1
        angle = _wrap_angle(state.angle + state.angular_velocity)
        scale, scale_velocity = scale_at(self.kind, video, t)
        vertices = bank.vertices[video.sprite]
        lo, hi = _bounds(vertices, angle, scale, self.size)
        # growing or turning against an edge pushes the symbol back in
        position = jnp.clip(state.position, lo, hi)
        radius = self._radius(bank, video, scale) if self.interacting else jnp.float32(0.0)
        moved, velocity = self._physics(position, state.velocity, lo, hi, radius)
        position, velocity, hits = _settle(moved, velocity, state.velocity, lo, hi)
        polygons = transform(vertices, position, angle, scale)
        return SymbolStates(step=t, position=position, velocity=velocity, angle=angle,
                            angular_velocity=state.angular_velocity, scale=scale,
                            scale_velocity=scale_velocity, hits=hits, overlaps=_overlaps(polygons))

    # -- pixels ------------------------------------------------------------------------
    def render(self, bank: Bank, video: Video, state: SymbolStates):
        """The frame: uint8 (H, W, 3) if color_output else (H, W, 1).

        Each symbol is drawn only in a window around it, large enough for any image of
        the bank at the largest scale; outside it its contribution would be exactly zero.
        """
        H, W = self.H, self.W
        win_h, win_w = self.window
        bg = bank.backgrounds[jnp.maximum(video.background, 0)]
        out = jnp.where(video.background >= 0, bg, 0.0)
        h, w = bank.sprites.shape[1:3]
        # gather from the whole bank with per-pixel indices (the bank is never batched)
        texels = bank.sprites.reshape(-1, 4)
        rows = jnp.arange(win_h, dtype=jnp.int32)[:, None]
        cols = jnp.arange(win_w, dtype=jnp.int32)[None, :]
        for i in range(self.S):  # later symbols on top
            px, py = state.position[i, 0], state.position[i, 1]
            x0 = jnp.clip(jnp.floor(px).astype(jnp.int32) - win_w // 2, 0, W - win_w)
            y0 = jnp.clip(jnp.floor(py).astype(jnp.int32) - win_h // 2, 0, H - win_h)
            first = video.sprite[i] * (h * w)
            cx, cy = bank.centres[video.sprite[i]]
            dx = (x0 + cols).astype(jnp.float32) + 0.5 - px
            dy = (y0 + rows).astype(jnp.float32) + 0.5 - py
            c, s = jnp.cos(state.angle[i]), jnp.sin(state.angle[i])
            # inverse of the hitbox transform: rotate by -angle, divide by scale
            u = (c * dx + s * dy) / state.scale[i] + cx - 0.5
            v = (-s * dx + c * dy) / state.scale[i] + cy - 0.5
            u0, v0 = jnp.floor(u), jnp.floor(v)
            fu, fv = (u - u0)[..., None], (v - v0)[..., None]
            u0, v0 = u0.astype(jnp.int32), v0.astype(jnp.int32)

            def tap(uu, vv):
                inside = (uu >= 0) & (uu < w) & (vv >= 0) & (vv < h)
                idx = first + jnp.clip(vv, 0, h - 1) * w + jnp.clip(uu, 0, w - 1)
                return jnp.where(inside[..., None], texels.at[idx].get(mode="promise_in_bounds"), 0.0)

            rgba = ((1 - fu) * (1 - fv) * tap(u0, v0) + fu * (1 - fv) * tap(u0 + 1, v0)
                    + (1 - fu) * fv * tap(u0, v0 + 1) + fu * fv * tap(u0 + 1, v0 + 1))
            region = jax.lax.dynamic_slice(out, (y0, x0, 0), (win_h, win_w, 3))
            region = region * (1 - rgba[..., 3:]) + rgba[..., :3]
            out = jax.lax.dynamic_update_slice(out, region, (y0, x0, 0))
        out = jnp.clip(out, 0.0, 1.0) * 255
        if not self.color:
            # ITU-R 601-2 luma, as Pillow's convert("L")
            out = (out @ jnp.array([0.299, 0.587, 0.114], jnp.float32))[..., None]
        return jnp.round(out).astype(jnp.uint8)

    def video(self, bank: Bank, key, n_frames: int):
        """(Video, states stacked over frames, frames (T, H, W, C))."""
        video, s0 = self.init(bank, key)

        def body(s, _):
            s1 = self.step(bank, video, s)
            return s1, (s1, self.render(bank, video, s1))

        # each frame is drawn inside the scan: drawing them all at the end would hold
        # every frame's float intermediates at once
        _, (rest, frames) = jax.lax.scan(body, s0, None, length=n_frames - 1)
        join = lambda a, b: jnp.concatenate([a[None], b])
        states = jax.tree_util.tree_map(join, s0, rest)
        return video, states, join(self.render(bank, video, s0), frames)


@functools.partial(jax.jit, static_argnums=0)
def _init_jit(dyn: _Dynamics, bank: Bank, key):
    return dyn.init(bank, key)


@functools.partial(jax.jit, static_argnums=0)
def _step_jit(dyn: _Dynamics, bank: Bank, video: Video, state: SymbolStates):
    return dyn.step(bank, video, state)


@functools.partial(jax.jit, static_argnums=0)
def _render_jit(dyn: _Dynamics, bank: Bank, video: Video, state: SymbolStates):
    return dyn.render(bank, video, state)


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def _generate_jit(dyn: _Dynamics, bank: Bank, key, n_videos: int, n_frames: int):
    keys = jax.vmap(lambda i: _video_key(key, i))(jnp.arange(n_videos))
    return jax.vmap(lambda k: dyn.video(bank, k, n_frames))(keys)


@functools.lru_cache(maxsize=None)
def _agent_model() -> np.ndarray:
    """The agents' (8, 2, 2) model lines; the physics ignores them, the Scenery needs them."""
    from . import scene

    return scene.agent_model()


# ---------------------------------------------------------------------------------------
# The public class

def _video_key(key, index):
    return jax.random.fold_in(key, index)


def _check_key(key):
    if not isinstance(key, jax.Array) or not (
            jnp.issubdtype(key.dtype, jax.dtypes.prng_key) or (key.dtype == jnp.uint32 and key.shape == (2,))):
        raise ValueError(f"key: expected a jax PRNG key (jax.random.key or PRNGKey), got {key!r}")


class MovingSymbols:
    """Generator of Moving Symbols videos: a Python iterator and a batched jitted generator.

    >>> ms = MovingSymbols({"num_symbols": 2, "video_size": (64, 64)}, seed=0)
    >>> frames = [next(ms) for _ in range(20)]              # PIL images, one video
    >>> batch = ms.generate(jax.random.key(0), 128, 20)      # uint8 (128, 20, 64, 64, 3)

    The iterator yields the frames of one endless video (frame 0 first) and publishes, on
    the first ``next()``, the initialisation messages (step -1), then at each frame the
    messages of that step. Video i of ``generate(jax.random.key(seed), n, T)`` is the first
    T frames of ``MovingSymbols(params, seed=seed, video_index=i)``, up to float rounding
    (see the module docstring).

    Args:
        params: a dict of parameters overriding :data:`DEFAULT_PARAMS` (see there).
        debug_options: overrides of :data:`DEFAULT_DEBUG_OPTIONS` (iterator only).
        seed: int seed of the iterator's video.
        video_index: which video of the seed's batch the iterator shows.
        backend: "kernel" (compiled physics) or "reference" (pure jnp).
        max_images_per_label: keep only the first N images (sorted by file name) of each
            label folder; every image kept is loaded to the device once.

    Raises:
        ValueError: on unknown or malformed parameters, missing images, or a video_size
            too small for the largest symbol at its largest scale.
    """

    def __init__(self, params: dict | None = None, debug_options: dict | None = None, seed: int = 0,
                 video_index: int = 0, backend: str = "kernel", max_images_per_label: int | None = None):
        self.params = _check_params(params)
        self.debug_options = _check_debug_options(debug_options)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ValueError(f"seed: expected an int, got {seed!r}")
        if isinstance(video_index, bool) or not isinstance(video_index, (int, np.integer)) or video_index < 0:
            raise ValueError(f"video_index: expected an int >= 0, got {video_index!r}")
        if backend not in core.BACKENDS:
            raise ValueError(f"backend: expected one of {core.BACKENDS}, got {backend!r}")
        if max_images_per_label is not None and (not isinstance(max_images_per_label, int)
                                                 or max_images_per_label < 1):
            raise ValueError(f"max_images_per_label: expected a positive int or None, got {max_images_per_label!r}")
        self.seed, self.video_index = int(seed), int(video_index)
        self._host = _HostBank(self.params, max_images_per_label)
        W, H = self.params["video_size"]
        biggest = 2 * self._host.circumradii.max() * _as_ranges(
            "scale_limits", self.params["scale_limits"], self.params["num_symbols"])[:, 1].max()
        if biggest > min(W, H):
            raise ValueError(f"video_size: expected at least {math.ceil(biggest)} pixels each way to fit "
                             f"the largest symbol at the largest scale, got {(W, H)}")
        self._dyn = _Dynamics(self.params, backend, self._host.reach)
        self.bank = self._host.device
        self._subscribers: list = []
        self._video = self._state = None

    # -- subscribers and messages ---------------------------------------------------------
    def add_subscriber(self, subscriber) -> None:
        """Adds an object whose ``process_message(message)`` receives every message."""
        if not callable(getattr(subscriber, "process_message", None)):
            raise ValueError(f"subscriber: expected an object with a process_message(message) method, "
                             f"got {type(subscriber).__name__}")
        self._subscribers.append(subscriber)

    def _publish(self, messages: list) -> None:
        for m in messages:
            for s in self._subscribers:
                s.process_message(m)

    def init_messages(self, video: Video) -> list[dict]:
        """The step -1 messages of a video: params, debug_options, background, symbol_init."""
        host = self._host
        W, H = self.params["video_size"]
        msgs = [{"step": -1, "type": "params", "meta": copy.deepcopy(self.params)},
                {"step": -1, "type": "debug_options", "meta": copy.deepcopy(self.debug_options)}]
        b = int(video.background)
        if b >= 0:
            bg = {"label": host.bg_labels[host.bg_label_of[b]], "image": host.bg_images[b].copy(),
                  "image_path": host.bg_paths[b]}
        else:
            bg = {"label": None, "image": np.zeros((H, W, 3), np.uint8), "image_path": None}
        msgs.append({"step": -1, "type": "background", "meta": bg})
        for i, k in enumerate(np.asarray(video.sprite)):
            msgs.append({"step": -1, "type": "symbol_init", "meta": {
                "symbol_id": i, "label": host.labels[host.label_of[k]], "image": host.rgba[k].copy(),
                "image_path": host.paths[k], "vertices": host.hulls[k].copy()}})
        return msgs

    @staticmethod
    def step_messages(state: SymbolStates, previous_overlaps: np.ndarray | None = None) -> list[dict]:
        """Messages of one frame from its (host) states: symbol_state, hit_wall, overlaps.

        Args:
            state: SymbolStates of one video at one frame (numpy or jax arrays).
            previous_overlaps: (S, S) overlaps of the frame before; None at frame 0.
        """
        st = jax.tree_util.tree_map(np.asarray, state)
        t = int(st.step)
        S = st.position.shape[0]
        msgs = []
        for i in range(S):
            msgs.append({"step": t, "type": "symbol_state", "meta": {
                "symbol_id": i, "position": st.position[i].copy(), "angle": float(st.angle[i]),
                "scale": float(st.scale[i]), "velocity": st.velocity[i].copy(),
                "angular_velocity": float(st.angular_velocity[i]),
                "scale_velocity": float(st.scale_velocity[i])}})
        for i in range(S):
            for w, label in enumerate(WALL_LABELS):
                if st.hits[i, w]:
                    msgs.append({"step": t, "type": "hit_wall", "meta": {"symbol_id": i, "wall_label": label}})
        before = np.zeros((S, S), bool) if previous_overlaps is None else np.asarray(previous_overlaps)
        for kind, change in (("start_overlap", st.overlaps & ~before), ("end_overlap", ~st.overlaps & before)):
            for i, j in zip(*np.nonzero(np.triu(change, 1))):
                msgs.append({"step": t, "type": kind, "meta": {"symbol_ids": [int(i), int(j)]}})
        return msgs

    def messages(self, video: Video, states: SymbolStates) -> list[dict]:
        """Every message of one video, from :meth:`generate`'s ``return_states`` output.

        Args:
            video: the Video of one video (index the batch: ``tree_map(lambda x: x[i], v)``).
            states: its SymbolStates stacked over frames.
        """
        st = jax.tree_util.tree_map(np.asarray, states)
        msgs = self.init_messages(video)
        previous = None
        for t in range(st.step.shape[0]):
            s = jax.tree_util.tree_map(lambda x: x[t], st)
            msgs += self.step_messages(s, previous)
            previous = s.overlaps
        return msgs

    # -- the iterator ---------------------------------------------------------------------
    def __iter__(self):
        return self

    def __next__(self):
        if self._state is None:
            key = _video_key(jax.random.key(self.seed), self.video_index)
            self._video, self._state = _init_jit(self._dyn, self.bank, key)
            self._publish(self.init_messages(self._video))
            self._previous = None
        else:
            self._state = _step_jit(self._dyn, self.bank, self._video, self._state)
        state = jax.tree_util.tree_map(np.asarray, self._state)
        self._publish(self.step_messages(state, self._previous))
        self._previous = state.overlaps
        frame = np.asarray(_render_jit(self._dyn, self.bank, self._video, self._state))
        return self._to_image(frame, state)

    def _to_image(self, frame: np.ndarray, state: SymbolStates):
        from PIL import Image, ImageDraw

        image = Image.fromarray(frame, "RGB") if self.params["color_output"] else Image.fromarray(frame[..., 0], "L")
        if self.debug_options["show_hitboxes"] or self.debug_options["show_frame_number"]:
            draw = ImageDraw.Draw(image)
            ink = (255, 0, 0) if image.mode == "RGB" else 255
            if self.debug_options["show_hitboxes"]:
                for i, k in enumerate(np.asarray(self._video.sprite)):
                    v = np.asarray(transform(jnp.asarray(self._host.hulls[k][None], jnp.float32),
                                             state.position[i:i + 1], state.angle[i:i + 1],
                                             state.scale[i:i + 1]))[0]
                    draw.polygon([tuple(p) for p in v], outline=ink)
            if self.debug_options["show_frame_number"]:
                draw.text((1, 1), str(int(state.step)), fill=ink)
        return image

    # -- batches --------------------------------------------------------------------------
    def generate(self, key, n_videos: int, n_frames: int, return_states: bool = False):
        """A batch of videos, jitted (compiled once per n_videos and n_frames).

        Args:
            key: a jax PRNG key; video i is drawn from ``jax.random.fold_in(key, i)``.
            n_videos: N, a positive int.
            n_frames: T, a positive int.
            return_states: also return (Video, SymbolStates) with leading axes (N,) and
                (N, T), for :meth:`messages`.

        Returns:
            uint8 (N, T, H, W, C) frames, C = 3 with color_output else 1; and, with
            return_states, ``(frames, videos, states)``.
        """
        _check_key(key)
        for name, v in (("n_videos", n_videos), ("n_frames", n_frames)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name}: expected a positive int, got {v!r}")
        videos, states, frames = _generate_jit(self._dyn, self.bank, key, int(n_videos), int(n_frames))
        if return_states:
            return frames, videos, states
        return frames


# ---------------------------------------------------------------------------------------
# Saving

def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, range)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.ndarray, jax.Array)):
        return np.asarray(x).tolist()
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, pathlib.PurePath):
        return str(x)
    return x


def save(directory: str, videos, messages: Sequence[Sequence[dict]] | None = None, fps: float = 10.0,
         format: str = "mp4", prefix: str = "video") -> list[str]:
    """Writes a batch of videos, and optionally their messages, to ``directory``.

    Video i goes to ``{prefix}_{i:05d}.{format}`` and its messages, one JSON object per
    line (arrays as nested lists), to ``{prefix}_{i:05d}.jsonl``.

    Args:
        directory: created if missing.
        videos: uint8 (N, T, H, W, C) with C in (1, 3), as from :meth:`MovingSymbols.generate`.
        messages: None, or N lists of messages (:meth:`MovingSymbols.messages`).
        fps: frames per second of the files.
        format: "mp4" or "gif".

    Returns:
        The paths written, videos first.
    """
    from .recording import FORMATS, Encoder

    videos = np.asarray(videos)
    if videos.ndim != 5 or videos.shape[-1] not in (1, 3) or videos.dtype != np.uint8:
        raise ValueError(f"videos: expected uint8 (N, T, H, W, 1|3), got {videos.dtype} {videos.shape}")
    if format not in FORMATS:
        raise ValueError(f"format: expected one of {FORMATS}, got {format!r}")
    if messages is not None and len(messages) != len(videos):
        raise ValueError(f"messages: expected {len(videos)} lists (one per video), got {len(messages)}")
    os.makedirs(directory, exist_ok=True)
    paths = []
    for i, video in enumerate(videos):
        with Encoder(fps=fps, format=format) as enc:
            for frame in video:
                enc(frame)
        paths.append(enc.save(os.path.join(directory, f"{prefix}_{i:05d}.{format}")))
    if messages is not None:
        for i, msgs in enumerate(messages):
            path = os.path.join(directory, f"{prefix}_{i:05d}.jsonl")
            with open(path, "w") as f:
                for m in msgs:
                    f.write(json.dumps(_jsonable(m)) + "\n")
            paths.append(path)
    return paths
