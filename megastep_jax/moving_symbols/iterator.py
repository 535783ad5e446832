"""The generators: :class:`MovingSymbols` and the original's drop-in :class:`MovingSymbolsEnvironment`.

Both yield one video's frames as PIL images (the Python generator protocol: ``next``,
``send``, ``throw``, ``close``) and publish messages to subscribers; both make batches of
videos in one jitted call with ``generate``. They differ only in their constructor's
signature and their defaults (``DEFAULT_PARAMS``).

The iterator computes its video a chunk of frames at a time in one jitted call (8
frames, then 16 at a time), and serves frames and messages from that buffer.
"""
from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .. import validation
from . import bank as banks
from . import messages as msg
from .dynamics import Dynamics, SymbolStates, Video, transform
from .drawing import DRAW_BACKENDS, draw
from .params import (DEFAULT_PARAMS, ORIGINAL_DEFAULT_PARAMS, check_conventions, check_debug_options,
                     check_params)

__all__ = ["MovingSymbols", "MovingSymbolsEnvironment", "Symbol"]

FIRST_CHUNK, CHUNK = 8, 16


# ---------------------------------------------------------------------------------------
# Jitted entry points, shared by every generator with equal static parameters

def _frames(dyn: Dynamics, bank: banks.Bank, video: Video, states: SymbolStates):
    """uint8 frames of states stacked over leading axes (..., T) of one or many videos."""
    lead = states.angle.shape[:-1]  # (T,) for one video, (N, T) for a batch
    n = int(np.prod(lead))
    S = dyn.S
    sprite = jnp.broadcast_to(jnp.expand_dims(video.sprite, -2), lead + (S,))
    background = jnp.broadcast_to(video.background[..., None], lead)
    frames = draw(dyn.draw_backend, bank, sprite.reshape(n, S), background.reshape(n),
                  states.position.reshape(n, S, 2), states.angle.reshape(n, S), states.scale.reshape(n, S),
                  dyn.color)
    return frames.reshape(lead + frames.shape[1:])


def _last(states: SymbolStates) -> SymbolStates:
    return jax.tree_util.tree_map(lambda x: x[-1], states)


@functools.partial(jax.jit, static_argnums=(0, 4))
def _start(dyn: Dynamics, bank: banks.Bank, seed, index, n: int):
    """(video, its first n states, their frames, the last state) of a seed's video."""
    key = jax.random.fold_in(jax.random.key(seed), index)
    video, states = dyn.states(bank, key, n)
    return video, states, _frames(dyn, bank, video, states), _last(states)


@functools.partial(jax.jit, static_argnums=(0, 4))
def _more(dyn: Dynamics, bank: banks.Bank, video: Video, state: SymbolStates, n: int):
    """(the n states after ``state``, their frames, the last of them)."""
    (states,) = dyn.more_states(bank, video, state, n)
    return states, _frames(dyn, bank, video, states), _last(states)


@functools.partial(jax.jit, static_argnums=(0, 3, 4, 5))
def _generate(dyn: Dynamics, bank: banks.Bank, key, n_videos: int, n_frames: int, want_states: bool):
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n_videos))
    videos, states = jax.vmap(lambda k: dyn.states(bank, k, n_frames))(keys)
    frames = _frames(dyn, bank, videos, states)
    return (frames, videos, states) if want_states else (frames, None, None)


def _check_key(key):
    if not isinstance(key, jax.Array) or not (
            jnp.issubdtype(key.dtype, jax.dtypes.prng_key) or (key.dtype == jnp.uint32 and key.shape == (2,))):
        raise ValueError(f"key: expected a jax PRNG key (jax.random.key or PRNGKey), got {key!r}")


# ---------------------------------------------------------------------------------------

@dataclass
class Symbol:
    """One symbol of a video, as the original's ``env.symbols`` entries: its ``id``,
    ``label`` (as given), ``image`` (the cropped RGBA PIL image), ``image_path``,
    ``vertices`` (hitbox, screen convention), and its state at the last frame yielded
    (``position``, ``angle``, ``scale``, ``velocity``, ``angular_velocity``, in the
    generator's conventions; None before the first frame)."""

    id: int
    label: Any
    image: Any
    image_path: str
    vertices: np.ndarray
    position: np.ndarray | None = None
    angle: float | None = None
    scale: float | None = None
    velocity: np.ndarray | None = None
    angular_velocity: float | None = None


class _Generator:
    DEFAULT_PARAMS: dict = DEFAULT_PARAMS

    def _setup(self, params, seed, fidelity, debug_options, video_index, backend, max_images_per_label,
               conventions):
        self.params, ranges = check_params(params, type(self).DEFAULT_PARAMS, with_ranges=True)
        self.debug_options = check_debug_options(debug_options)
        self.seed = validation.nonnegative_int("seed", seed)
        if self.seed >= 2 ** 32:
            raise ValueError(f"seed: expected an int in [0, 2**32), got {seed!r}")
        self.video_index = validation.nonnegative_int("video_index", video_index)
        self.fidelity = validation.positive_int("fidelity", fidelity)
        validation.one_of("backend", backend, DRAW_BACKENDS)
        validation.positive_int("max_images_per_label", max_images_per_label, or_none=True)
        self.conventions = check_conventions(conventions)
        p = self.params
        self.video_size = p["video_size"]
        self._symbols_host = banks.symbol_bank(p["data_dir"], p["split"], p["symbol_labels"], max_images_per_label)
        self._backgrounds = banks.background_bank(p["background_data_dir"], p["split"], p["background_labels"],
                                                  tuple(p["video_size"]), max_images_per_label)
        W, H = p["video_size"]
        biggest = 2 * self._symbols_host.circumradii.max() * ranges["scale_limits"][:, 1].max()
        if biggest > min(W, H):
            raise ValueError(f"video_size: expected at least {math.ceil(biggest)} pixels each way to fit "
                             f"the largest symbol at the largest scale, got {(W, H)}")
        self._dyn = Dynamics(p, ranges, self.fidelity, backend)
        self.bank = banks.device_bank(self._symbols_host, self._backgrounds)
        self._subscribers: list = []
        self._video = None
        self._t = 0
        self._last_yield = None
        self.debug_image = None

    # -- the video's settings (lazily: computed with the first frames) ----------------------
    def _ensure_started(self):
        if self._video is not None:
            return
        video, states, frames, self._last_state = _start(self._dyn, self.bank, np.uint32(self.seed),
                                                         np.int32(self.video_index), FIRST_CHUNK)
        self._device_video = video
        self._video = jax.tree_util.tree_map(np.asarray, video)
        self._buffer = (0, jax.tree_util.tree_map(np.asarray, states), np.asarray(frames))
        host, v = self._symbols_host, self._video
        self._symbol_info = [{"label": host.labels[host.label_of[k]], "image": host.rgba[k],
                              "image_path": host.paths[k], "vertices": host.hulls[k]} for k in v.sprite]
        bg = None
        if int(v.background) >= 0:
            b, hb = int(v.background), self._backgrounds
            bg = {"label": hb.labels[hb.label_of[b]], "image": hb.images[b].copy(), "image_path": hb.paths[b]}
        self._background_info = bg
        self._init_messages = msg.init_messages(self.params, self.debug_options, self._symbol_info, bg,
                                                self.conventions)

    @property
    def symbols(self) -> list[Symbol]:
        """The video's symbols (see :class:`Symbol`); their states are those of the last
        frame yielded."""
        self._ensure_started()
        if not hasattr(self, "_symbol_objects"):
            self._symbol_objects = [Symbol(i, s["label"], Image.fromarray(s["image"], "RGBA"), s["image_path"],
                                           s["vertices"].copy()) for i, s in enumerate(self._symbol_info)]
            if self._t > 0:
                self._update_symbols(*self._last)
        return self._symbol_objects

    # -- subscribers ----------------------------------------------------------------------
    def add_subscriber(self, subscriber) -> None:
        """Adds an object whose ``process_message(message)`` receives every message."""
        if not callable(getattr(subscriber, "process_message", None)):
            raise ValueError(f"subscriber: expected an object with a process_message(message) method, "
                             f"got {type(subscriber).__name__}")
        self._subscribers.append(subscriber)

    def _publish(self, messages: list) -> None:
        for m in messages:
            for s in self._subscribers:
                s.process_message(dict(m))

    # -- the buffer of computed frames -------------------------------------------------------
    def _state_at(self, t: int):
        """(numpy states of frame t as a dict, frame t) computing chunks as needed."""
        while True:
            base, states, frames = self._buffer
            if t < base + len(frames):
                i = t - base
                return {name: getattr(states, name)[i] for name in
                        ("position", "velocity", "angle", "angular_velocity", "scale", "scale_velocity",
                         "hits", "overlaps")}, frames[i]
            new_states, new_frames, self._last_state = _more(self._dyn, self.bank, self._device_video,
                                                             self._last_state, CHUNK)
            # keep frame t - 1's overlaps reachable: re-base at the first new frame, and
            # remember the last state of the old chunk
            self._previous_overlaps = states.overlaps[-1]
            self._buffer = (base + len(frames), jax.tree_util.tree_map(np.asarray, new_states), np.asarray(new_frames))

    def _overlaps_at(self, t: int):
        base, states, _ = self._buffer
        if t >= base:
            return states.overlaps[t - base]
        return self._previous_overlaps

    def _update_symbols(self, t: int, st: dict):
        m = msg.state_messages(t, st["position"], st["velocity"], st["angle"], st["angular_velocity"], st["scale"],
                               st["scale_velocity"], self.video_size[1], self.conventions)
        for s, mm in zip(self._symbol_objects, m):
            for k in ("position", "angle", "scale", "velocity", "angular_velocity"):
                setattr(s, k, mm["meta"][k])

    # -- the generator protocol -------------------------------------------------------------
    def __iter__(self):
        return self

    def send(self, _value=None):
        """The next frame (a PIL image, "RGB" or "L"); publishes its messages first."""
        first = self._video is None
        self._ensure_started()
        t = self._t
        if first:
            self._publish(self._init_messages)
        st, frame = self._state_at(t)
        if self._subscribers:
            self._publish(msg.state_messages(t, st["position"], st["velocity"], st["angle"], st["angular_velocity"],
                                             st["scale"], st["scale_velocity"], self.video_size[1], self.conventions))
        nxt, _ = self._state_at(t + 1)
        if self._subscribers:
            before = self._overlaps_at(t)
            self._publish(msg.event_messages(t + 1, nxt["hits"], nxt["overlaps"], before, before if t == 0 else None,
                                             self._dyn.interacting, self.conventions))
        self._t = t + 1
        self._last = (t, st)
        if hasattr(self, "_symbol_objects"):
            self._update_symbols(t, st)
        image = Image.fromarray(frame if self._dyn.color else frame[..., 0], "RGB" if self._dyn.color else "L")
        if self.debug_options is not None:
            self.debug_image = self._debug_view(image, st, t)
            self._throttle()
        return image

    def __next__(self):
        return self.send(None)

    def next(self):
        """The next frame (the original's Python 2 spelling of ``next(env)``)."""
        return self.send(None)

    def throw(self, type=None, value=None, traceback=None):
        """Ends the generator, as the original's: raises StopIteration."""
        raise StopIteration

    def close(self):
        """Closes the generator (the original's protocol; nothing to release)."""
        try:
            self.throw(GeneratorExit)
        except (GeneratorExit, StopIteration):
            pass

    # -- debug view -------------------------------------------------------------------------
    def _throttle(self):
        rate = self.debug_options["frame_rate"]
        if rate >= 10 ** 6:
            return
        now = time.perf_counter()
        if self._last_yield is not None:
            wait = 1.0 / rate - (now - self._last_yield)
            if wait > 0:
                time.sleep(wait)
        self._last_yield = time.perf_counter()

    def _debug_view(self, image, st: dict, t: int):
        view = image.convert("RGB")
        d = ImageDraw.Draw(view)
        o = self.debug_options
        W, H = self.video_size
        polygons = [np.asarray(transform(np.asarray(s["vertices"], np.float32), st["position"][i],
                                         np.float32(st["angle"][i]), np.float32(st["scale"][i])))
                    for i, s in enumerate(self._symbol_info)]
        if o["show_pymunk_debug"]:
            overlay = Image.new("RGBA", view.size, (0, 0, 0, 0))
            od = ImageDraw.Draw(overlay)
            for p in polygons:
                od.polygon([tuple(q) for q in p], fill=(80, 160, 255, 96), outline=(80, 160, 255, 255))
            od.rectangle([0, 0, W - 1, H - 1], outline=(200, 200, 200, 255))
            view = Image.alpha_composite(view.convert("RGBA"), overlay).convert("RGB")
            d = ImageDraw.Draw(view)
        if o["show_bounding_poly"] or o["show_hitboxes"]:
            for p in polygons:
                d.polygon([tuple(q) for q in p], outline=(255, 0, 0))
        if o["show_frame_number"]:
            try:
                font = ImageFont.truetype(banks.font_path(), o["frame_number_font_size"])
            except (OSError, FileNotFoundError):
                font = ImageFont.load_default()
            d.text((0, 0), str(t), fill=(0, 255, 0), font=font)
        return view

    # -- batches ----------------------------------------------------------------------------
    def generate(self, key, n_videos: int, n_frames: int, return_states: bool = False):
        """A batch of videos, jitted (compiled once per n_videos and n_frames).

        Args:
            key: a jax PRNG key; video i is drawn from ``jax.random.fold_in(key, i)``, so
                video i of ``generate(jax.random.key(seed), ...)`` is the video of the
                iterator with that seed and ``video_index=i`` (states equal to float
                rounding: the two are compiled apart).
            n_videos: N, a positive int.
            n_frames: T, a positive int.
            return_states: also return (Video, SymbolStates) with leading axes (N,) and
                (N, T), for :meth:`messages`.

        Returns:
            uint8 (N, T, H, W, C) frames, C = 3 with color_output else 1; and, with
            return_states, ``(frames, videos, states)``.
        """
        _check_key(key)
        n_videos = validation.positive_int("n_videos", n_videos)
        n_frames = validation.positive_int("n_frames", n_frames)
        frames, videos, states = _generate(self._dyn, self.bank, key, n_videos, n_frames, bool(return_states))
        return (frames, videos, states) if return_states else frames

    def messages(self, video: Video, states: SymbolStates) -> list[dict]:
        """Every message of one video of :meth:`generate`'s ``return_states`` output.

        Args:
            video: the Video of one video (index the batch: ``tree_map(lambda x: x[i], v)``).
            states: its SymbolStates stacked over T frames.

        Returns:
            The messages a subscriber of the iterator receives through frame T - 1 (less
            the events of the step after frame T - 1, which need frame T).
        """
        v = jax.tree_util.tree_map(np.asarray, video)
        st = {k: np.asarray(getattr(states, k)) for k in ("position", "velocity", "angle", "angular_velocity",
                                                          "scale", "scale_velocity", "hits", "overlaps")}
        host = self._symbols_host
        info = [{"label": host.labels[host.label_of[k]], "image": host.rgba[k], "image_path": host.paths[k],
                 "vertices": host.hulls[k]} for k in v.sprite]
        bg = None
        if int(v.background) >= 0:
            b, hb = int(v.background), self._backgrounds
            bg = {"label": hb.labels[hb.label_of[b]], "image": hb.images[b].copy(), "image_path": hb.paths[b]}
        init = msg.init_messages(self.params, self.debug_options, info, bg, self.conventions)
        return msg.video_messages(init, st, self.video_size[1], self._dyn.interacting, self.conventions)


class MovingSymbols(_Generator):
    """Generator of Moving Symbols videos: a Python iterator and a batched jitted generator.

    >>> ms = MovingSymbols({"num_symbols": 2, "video_size": (64, 64)}, seed=0)
    >>> frames = [next(ms) for _ in range(20)]              # PIL images, one video
    >>> batch = ms.generate(jax.random.key(0), 128, 20)      # uint8 (128, 20, 64, 64, 3)

    Args:
        params: a dict of parameters overriding :data:`DEFAULT_PARAMS` (see there).
        debug_options: None, or overrides of :data:`DEFAULT_DEBUG_OPTIONS` (iterator only).
        seed: int in [0, 2**32), the seed of the iterator's video.
        video_index: which video of the seed's batch the iterator shows.
        backend: "kernel" (the compiled draw kernel, on CPU) or "reference" (jnp).
        max_images_per_label: keep only the first N images (sorted by file name) of each
            label folder.
        fidelity: physics sub-steps per frame for interacting symbols (the original's).
        conventions: "screen" (default) or "original"; see :mod:`.messages`.

    Raises:
        ValueError: on unknown or malformed parameters, missing images, or a video_size
            too small for the largest symbol at its largest scale.
    """

    DEFAULT_PARAMS = DEFAULT_PARAMS

    def __init__(self, params: dict | None = None, debug_options: dict | None = None, seed: int = 0,
                 video_index: int = 0, backend: str = "kernel", max_images_per_label: int | None = None,
                 fidelity: int = 10, conventions: str = "screen"):
        self._setup(params, seed, fidelity, debug_options, video_index, backend, max_images_per_label,
                    conventions)


class MovingSymbolsEnvironment(_Generator):
    """The original's ``MovingSymbolsEnvironment``, as a drop-in: same signature, defaults,
    generator protocol, attributes (``params``, ``symbols``, ``video_size``,
    ``debug_options``, ``fidelity``) and messages.

    Args:
        params: a dict of parameters overriding :data:`DEFAULT_PARAMS` (the original's
            defaults: one motionless symbol of label 0).
        seed: int in [0, 2**32).
        fidelity: physics sub-steps per frame (for interacting symbols).
        debug_options: None, or a dict of debug options (see
            :data:`megastep_jax.moving_symbols.DEFAULT_DEBUG_OPTIONS`).
        video_index, backend, max_images_per_label, conventions: as :class:`MovingSymbols`.
    """

    DEFAULT_PARAMS = ORIGINAL_DEFAULT_PARAMS

    def __init__(self, params: dict, seed: int, fidelity: int = 10, debug_options: dict | None = None, *,
                 video_index: int = 0, backend: str = "kernel", max_images_per_label: int | None = None,
                 conventions: str = "screen"):
        self._setup(params, seed, fidelity, debug_options, video_index, backend, max_images_per_label,
                    conventions)
