"""Moving Symbols: videos of symbols moving, rotating, scaling and bouncing inside a frame.

A video-prediction dataset generator in the manner of Moving MNIST, and a drop-in for
Ryan Szeto's ``moving-symbols`` (``MovingSymbolsEnvironment(params, seed, fidelity=10,
debug_options=None)``). Two interfaces, in :mod:`.iterator`:

- the generators (:class:`MovingSymbols`, :class:`MovingSymbolsEnvironment`) yield one
  video's frames as PIL images (mode ``"RGB"`` or ``"L"``) and publish what happens to
  subscribers (:mod:`.messages`);
- their ``generate(key, n_videos, n_frames)`` makes a batch of videos in one jitted call:
  uint8 ``(videos, frames, height, width, channels)``.

The modules: :mod:`.params` (defaults, meanings, checks), :mod:`.bank` (images, hitboxes,
the shared and disk-cached symbol bank), :mod:`.dynamics` (a video's random settings and
its motion, contacts as convex polygons), :mod:`.drawing` (the compiled draw kernel and
its jnp twin), :mod:`.messages`, :mod:`.iterator` and :mod:`.saving`. See
docs/moving_symbols.md. All randomness derives from ``seed`` or the key given to
``generate``.
"""
from .bank import Bank, clear_memory_cache, font_path, hitbox, load_symbol, text_symbol
from .drawing import draw, draw_kernel, draw_reference
from .dynamics import SEPARATION, TOUCH, WALL_LABELS, Dynamics, SymbolStates, Video, scale_at, transform
from .iterator import MovingSymbols, MovingSymbolsEnvironment, Symbol
from .messages import MESSAGE_TYPES
from .params import DEFAULT_DEBUG_OPTIONS, DEFAULT_PARAMS, ORIGINAL_DEFAULT_PARAMS
from .saving import save

__all__ = ["MovingSymbols", "MovingSymbolsEnvironment", "Symbol", "DEFAULT_PARAMS", "ORIGINAL_DEFAULT_PARAMS",
           "DEFAULT_DEBUG_OPTIONS", "save", "font_path", "WALL_LABELS", "MESSAGE_TYPES", "TOUCH", "SEPARATION",
           "Bank", "Video", "SymbolStates", "Dynamics", "scale_at", "transform", "load_symbol", "text_symbol",
           "hitbox", "draw", "draw_kernel", "draw_reference", "clear_memory_cache"]
