"""The messages a Moving Symbols video publishes, in the original's presence, order and timing.

Every message is ``{"step": int, "type": str, "meta": dict}``. A video's messages are:

1. at step -1, in this order: ``params``; ``debug_options`` (only where debug options were
   given); one ``symbol_init`` per symbol; ``background`` (only where both background
   settings are set);
2. then for each frame t: one ``symbol_state`` per symbol (step t), followed by the events
   of the step from t to t + 1, all with step t + 1: ``hit_wall`` (a hitbox's contact with
   an edge began), then, without ``interacting_symbols``, ``start_overlap`` and
   ``end_overlap`` (two hitboxes began or stopped overlapping; ``symbol_ids`` a tuple
   ``(i, j)``, i < j). Overlaps already present at frame 0 start at step 1, as in the
   original. Interacting symbols never overlap and publish no overlap messages.

Conventions: with ``conventions="screen"`` (the default) positions and velocities are in
pixels, x right and y down from the top-left corner, angles in radians in [-pi, pi),
positive clockwise on screen, and wall labels name the edges as seen. With
``conventions="original"`` they are the original's: y up from the bottom edge
(``y_original = height - y``, ``vy_original = -vy``), angles counter-clockwise and not
wrapped (``-angle``, ``-angular_velocity``), the hitbox ``vertices`` in the original's
pixel-index frame with y up (``x - 1/2``, ``1/2 - y``), and ``hit_wall``'s "top" and
"bottom" swapped (the original labels the bottom edge "top").
"""
from __future__ import annotations

import numpy as np

from .dynamics import WALL_LABELS

__all__ = ["init_messages", "state_messages", "event_messages", "video_messages", "MESSAGE_TYPES"]

MESSAGE_TYPES = ("params", "debug_options", "symbol_init", "background", "symbol_state", "hit_wall",
                 "start_overlap", "end_overlap")
_ORIGINAL_WALLS = ("left", "right", "bottom", "top")


def init_messages(params: dict, debug_options: dict | None, symbols: list[dict], background: dict | None,
                  conventions: str) -> list[dict]:
    """The step -1 messages.

    Args:
        params: the merged params (a shallow copy goes into the message, as the original's).
        debug_options: the merged debug options, or None (no message).
        symbols: per symbol ``{"label", "image", "image_path", "vertices"}`` (vertices in
            the screen convention).
        background: ``{"label", "image", "image_path"}`` or None (no message).
        conventions: "screen" or "original".
    """
    msgs = [{"step": -1, "type": "params", "meta": dict(params)}]
    if debug_options is not None:
        msgs.append({"step": -1, "type": "debug_options", "meta": dict(debug_options)})
    for i, s in enumerate(symbols):
        v = np.array(s["vertices"], np.float64)
        if conventions == "original":
            v = np.stack([v[:, 0] - 0.5, 0.5 - v[:, 1]], -1)
        msgs.append({"step": -1, "type": "symbol_init", "meta": {
            "symbol_id": i, "label": s["label"], "image": s["image"].copy(), "image_path": s["image_path"],
            "vertices": v}})
    if background is not None:
        msgs.append({"step": -1, "type": "background", "meta": dict(background)})
    return msgs


def state_messages(t: int, position, velocity, angle, angular_velocity, scale, scale_velocity,
                   height: int, conventions: str) -> list[dict]:
    """The symbol_state messages of frame t from one frame's numpy states ((S, 2), (S,))."""
    position = np.asarray(position, np.float64)
    velocity = np.asarray(velocity, np.float64)
    angle = np.asarray(angle, np.float64)
    angular_velocity = np.asarray(angular_velocity, np.float64)
    if conventions == "original":
        position = np.stack([position[:, 0], height - position[:, 1]], -1)
        velocity = velocity * np.array([1.0, -1.0])
        angle, angular_velocity = -angle, -angular_velocity
    else:
        angle = np.mod(angle + np.pi, 2 * np.pi) - np.pi
    return [{"step": t, "type": "symbol_state", "meta": {
        "symbol_id": i, "position": position[i].copy(), "angle": float(angle[i]), "scale": float(scale[i]),
        "velocity": velocity[i].copy(), "angular_velocity": float(angular_velocity[i]),
        "scale_velocity": float(scale_velocity[i])}} for i in range(len(position))]


def event_messages(t: int, hits, overlaps, previous_overlaps, first_overlaps, interacting: bool,
                   conventions: str) -> list[dict]:
    """The events of the step ending at frame t (t >= 1), published with step t.

    Args:
        hits: (S, 4) bool, wall contacts begun during the step.
        overlaps: (S, S) bool at frame t; previous_overlaps at frame t - 1.
        first_overlaps: at t == 1, the overlaps of frame 0 (else None): they start at step 1.
    """
    labels = _ORIGINAL_WALLS if conventions == "original" else WALL_LABELS
    msgs = [{"step": t, "type": "hit_wall", "meta": {"symbol_id": int(i), "wall_label": labels[w]}}
            for i, w in zip(*np.nonzero(np.asarray(hits)))]
    if interacting:
        return msgs
    now, before = np.asarray(overlaps), np.asarray(previous_overlaps)
    if first_overlaps is not None:  # the original's first physics step sees frame 0's overlaps begin
        starts, ends = now | before, before & ~now
    else:
        starts, ends = now & ~before, before & ~now
    for kind, change in (("start_overlap", starts), ("end_overlap", ends)):
        for i, j in zip(*np.nonzero(np.triu(change, 1))):
            msgs.append({"step": t, "type": kind, "meta": {"symbol_ids": (int(i), int(j))}})
    return msgs


def video_messages(init: list[dict], states: dict, height: int, interacting: bool, conventions: str) -> list[dict]:
    """Every message of a video from its numpy states stacked over T frames, as a
    subscriber of the iterator receives them through frame T - 1 (the events of the step
    after the last frame are not known)."""
    msgs = list(init)
    T = states["position"].shape[0]
    for t in range(T):
        msgs += state_messages(t, states["position"][t], states["velocity"][t], states["angle"][t],
                               states["angular_velocity"][t], states["scale"][t], states["scale_velocity"][t],
                               height, conventions)
        if t + 1 < T:
            msgs += event_messages(t + 1, states["hits"][t + 1], states["overlaps"][t + 1], states["overlaps"][t],
                                   states["overlaps"][0] if t == 0 else None, interacting, conventions)
    return msgs
