"""Saving Moving Symbols videos to mp4/gif files and their messages to JSON Lines."""
from __future__ import annotations

import json
import os
import pathlib
from typing import Sequence

import jax
import numpy as np

from ..recording import FORMATS, Encoder

__all__ = ["save"]


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
        videos: uint8 (N, T, H, W, C) with C in (1, 3), as from ``generate``.
        messages: None, or N lists of messages (from ``messages``).
        fps: frames per second of the files.
        format: "mp4" or "gif".

    Returns:
        The paths written, videos first.
    """
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
