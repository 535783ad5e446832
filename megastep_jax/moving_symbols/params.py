"""Parameters and debug options of Moving Symbols: defaults, meanings and checks."""
from __future__ import annotations

import os
import sys
from typing import Any, Iterable

import numpy as np

from .. import validation

__all__ = ["DEFAULT_PARAMS", "ORIGINAL_DEFAULT_PARAMS", "DEFAULT_DEBUG_OPTIONS", "CONVENTIONS",
           "SCALE_FUNCTIONS", "RANGE_PARAMS", "check_params", "check_debug_options", "ranges",
           "check_conventions"]

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
"""Default parameters of :class:`MovingSymbols`; any subset may be given.

- ``data_dir`` (str or None): the dataset directory, holding one folder per split (e.g.
  ``training``, ``testing``), each holding one folder per label (``str(label)``) with the
  symbol images (any format Pillow reads; transparency from the alpha channel, or else
  from the brightness, so light symbols on a dark background work). Each image is
  cropped to its non-transparent pixels. None: each label is drawn as text with the
  DejaVu Sans Bold font that ships with matplotlib, so nothing needs downloading.
- ``split`` (str): the split folder to sample images from.
- ``num_symbols`` (int): how many symbols each video shows.
- ``video_size`` ((int, int)): frame (width, height) in pixels.
- ``color_output`` (bool): "RGB" frames (3 channels) if True, else "L" (1 channel).
- ``symbol_labels`` (sequence): the label classes, strings or ints (anything with a
  ``str``) naming the folders of each split. Each symbol's label is drawn uniformly, then
  an image of that label uniformly. Messages carry the labels as given (an int stays an
  int).
- ``scale_limits`` ((float, float)): smallest and largest scale relative to the image's
  own size.
- ``scale_period_limits`` ((float, float) or list of them): shortest and longest duration,
  in frames, of a full scale cycle (sine and triangle).
- ``rotation_speed_limits`` ((float, float) or list of them): range of the angular speed
  in radians per frame; each symbol turns one way or the other with equal chance.
- ``position_speed_limits`` ((float, float) or list of them): range of the translational
  speed in pixels per frame.
- Given a list of ranges, each symbol draws one of them uniformly, then its value
  uniformly in that range (so ``[(1, 3), (7, 9)]`` makes each symbol slow or fast with
  equal chance). ``scale_limits`` accepts such a list too (an extension).
- ``interacting_symbols`` (bool): whether symbols bounce off each other (as their
  convex hitbox polygons).
- ``scale_function_type`` (str): how the scale evolves: "sine" (a sine wave between the
  limits), "triangle" (constant scaling speed, reversing at the limits) or "constant"
  (a scale drawn uniformly within the limits, kept throughout).
- ``rotate_at_start`` (bool): whether symbols start at a random angle (else upright).
- ``rescale_at_start`` (bool): whether sine and triangle symbols may start anywhere in
  their scale cycle; if not, they start at the middle of the range, growing or shrinking
  with equal chance.
- ``lateral_motion_at_start`` (bool): whether symbols start moving only left, right, up
  or down; they then move otherwise only after bouncing off each other.
- ``background_data_dir`` (str or None): like data_dir, for background images (pasted at
  the top-left corner of a black frame, as they are).
- ``background_labels`` (sequence or None): the background classes. Unless both this and
  background_data_dir are set, backgrounds are solid black.
"""

ORIGINAL_DEFAULT_PARAMS: dict[str, Any] = {
    **DEFAULT_PARAMS,
    "num_symbols": 1,
    "symbol_labels": [0],
    "scale_period_limits": (1, 1),
    "rotation_speed_limits": (0, 0),
    "position_speed_limits": (0, 0),
}
"""The defaults of the original's ``MovingSymbolsEnvironment.DEFAULT_PARAMS`` (one
motionless symbol of label 0), except ``data_dir``: the original's ``'../data/mnist'`` is
relative to its own source folder, ours is None (the font's glyphs)."""

DEFAULT_DEBUG_OPTIONS: dict[str, Any] = {
    "frame_number_font_size": 30,
    "show_pymunk_debug": False,
    "show_bounding_poly": False,
    "show_frame_number": False,
    "frame_rate": sys.maxsize,
    "show_hitboxes": False,
}
"""Debug options. Given any (even ``{}``), the iterator also draws a debug view of each
frame into ``debug_image`` (a PIL "RGB" image; the original showed it in a PyGame window)
and publishes a ``debug_options`` message; the frames it returns are never changed.

- ``show_pymunk_debug`` (bool): draw the physics' shapes: each hitbox filled and outlined
  and the four walls.
- ``show_bounding_poly`` (bool): outline each hitbox in red on top of the symbols.
- ``show_hitboxes`` (bool): the same as ``show_bounding_poly`` (this package's older name).
- ``show_frame_number`` (bool): write the frame number in green at the top-left corner.
- ``frame_number_font_size`` (int): its size in pixels.
- ``frame_rate`` (int): at most this many frames per second are yielded (the original's
  frame rate of its debug window); by default unlimited.
"""

CONVENTIONS = ("screen", "original")
SCALE_FUNCTIONS = ("sine", "triangle", "constant")
RANGE_PARAMS = ("scale_limits", "scale_period_limits", "rotation_speed_limits",
                "position_speed_limits")


def check_conventions(conventions: str) -> str:
    return validation.one_of("conventions", conventions, CONVENTIONS)


def ranges(name: str, value, positive: bool = False, nonnegative: bool = False) -> np.ndarray:
    """One (lo, hi) range or a list of them, as an (R, 2) float64 array; ValueError if bad."""
    try:
        arr = np.asarray(value, np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected (lo, hi) or a list of (lo, hi) ranges, got {value!r}") from None
    if arr.shape == (2,):
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] < 1:
        raise ValueError(f"{name}: expected (lo, hi) or a non-empty list of (lo, hi) ranges, got shape "
                         f"{arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr[:, 0] > arr[:, 1]):
        raise ValueError(f"{name}: expected finite ranges with lo <= hi, got {value!r}")
    if positive and np.any(arr <= 0):
        raise ValueError(f"{name}: expected positive values, got {value!r}")
    if nonnegative and np.any(arr < 0):
        raise ValueError(f"{name}: expected values >= 0, got {value!r}")
    return arr


def _range_checks(p: dict) -> dict[str, np.ndarray]:
    return {
        "scale_limits": ranges("scale_limits", p["scale_limits"], positive=True),
        "scale_period_limits": ranges("scale_period_limits", p["scale_period_limits"], positive=True),
        "rotation_speed_limits": ranges("rotation_speed_limits", p["rotation_speed_limits"]),
        "position_speed_limits": ranges("position_speed_limits", p["position_speed_limits"], nonnegative=True),
    }


def check_params(params: dict | None, defaults: dict = DEFAULT_PARAMS, with_ranges: bool = False):
    """Merges params over ``defaults`` and validates them.

    Returns:
        The merged dict (a shallow copy, as the original's), and with ``with_ranges``
        also the four range parameters as (R, 2) arrays.

    Raises:
        ValueError: naming the first bad or unknown key.
    """
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ValueError(f"params: expected a dict, got {type(params).__name__}")
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise ValueError(f"params: unknown keys {unknown}; expected keys among {sorted(defaults)}")
    p = {**defaults, **params}
    validation.positive_int("num_symbols", p["num_symbols"])
    size = p["video_size"]
    if not isinstance(size, (tuple, list)) or len(size) != 2:
        raise ValueError(f"video_size: expected (width, height) positive ints, got {size!r}")
    for v in size:
        validation.positive_int("video_size", v)
    for name in ("color_output", "interacting_symbols", "rotate_at_start", "rescale_at_start",
                 "lateral_motion_at_start"):
        if not isinstance(p[name], (bool, np.bool_)):
            raise ValueError(f"{name}: expected a bool, got {p[name]!r}")
    validation.one_of("scale_function_type", p["scale_function_type"], SCALE_FUNCTIONS)
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
    bl = p["background_labels"]
    if bl is not None and (isinstance(bl, (str, bytes)) or not isinstance(bl, Iterable) or len(list(bl)) == 0):
        raise ValueError(f"background_labels: expected None or a non-empty sequence of labels, got {bl!r}")
    ranges = _range_checks(p)
    return (p, ranges) if with_ranges else p


def range_arrays(p: dict) -> dict[str, np.ndarray]:
    """The four range parameters of checked params as (R, 2) arrays."""
    return _range_checks(p)


def check_debug_options(options: dict | None) -> dict | None:
    """None stays None (no debug view); a dict is merged over DEFAULT_DEBUG_OPTIONS."""
    if options is None:
        return None
    if not isinstance(options, dict):
        raise ValueError(f"debug_options: expected a dict or None, got {type(options).__name__}")
    unknown = sorted(set(options) - set(DEFAULT_DEBUG_OPTIONS))
    if unknown:
        raise ValueError(f"debug_options: unknown keys {unknown}; expected keys among "
                         f"{sorted(DEFAULT_DEBUG_OPTIONS)}")
    merged = {**DEFAULT_DEBUG_OPTIONS, **options}
    for name in ("show_pymunk_debug", "show_bounding_poly", "show_frame_number", "show_hitboxes"):
        if not isinstance(merged[name], (bool, np.bool_)):
            raise ValueError(f"debug_options: {name}: expected a bool, got {merged[name]!r}")
    validation.positive_int("debug_options: frame_number_font_size", merged["frame_number_font_size"])
    validation.positive_int("debug_options: frame_rate", merged["frame_rate"])
    return merged
