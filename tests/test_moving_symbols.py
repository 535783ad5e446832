"""Moving Symbols: determinism, frames, containment, events against recomputation from the
published states, scale functions, batched == iterator, data folders, saving, errors."""
import functools
import json
import os

import jax
import numpy as np
import pytest
import shapely
from PIL import Image

from megastep_jax import moving_symbols as msym
from megastep_jax.moving_symbols import MovingSymbols

W, H = 40, 32  # unequal, to catch swapped axes
T = 60
BASE = {
    "num_symbols": 3, "video_size": (W, H), "scale_limits": (0.5, 0.8),
    "scale_function_type": "sine", "scale_period_limits": (10, 20),
    "rotation_speed_limits": (-0.3, 0.3), "position_speed_limits": (2.0, 4.0),
    "rotate_at_start": True,
}


class Recorder:
    def __init__(self):
        self.messages = []

    def process_message(self, message):
        self.messages.append(message)


@functools.lru_cache(maxsize=None)
def run(params_items=tuple(sorted(BASE.items())), seed=0, n_frames=T, video_index=0):
    """(frames as arrays (T, H, W[, 3]), messages, the MovingSymbols) of one iterated video."""
    ms = MovingSymbols(dict(params_items), seed=seed, video_index=video_index)
    rec = Recorder()
    ms.add_subscriber(rec)
    images = [next(ms) for _ in range(n_frames)]
    return images, rec.messages, ms


def items(**overrides):
    """Hashable params for run's cache (lists of ranges become tuples)."""
    frozen = lambda v: tuple(map(tuple, v)) if isinstance(v, list) else v
    return tuple(sorted((k, frozen(v)) for k, v in {**BASE, **overrides}.items()))


@pytest.fixture(scope="module")
def batch():
    """(frames, videos, states) of generate(key(0), 3, T) with BASE."""
    return run()[2].generate(jax.random.key(0), 3, T, return_states=True)


def of_type(messages, kind):
    return [m for m in messages if m["type"] == kind]


def states(messages):
    """Arrays over (frame, symbol) from the symbol_state messages."""
    ss = of_type(messages, "symbol_state")
    n_frames = max(m["step"] for m in ss) + 1
    S = len(ss) // n_frames
    get = lambda k: np.array([m["meta"][k] for m in ss], np.float64).reshape((n_frames, S) + np.shape(ss[0]["meta"][k]))
    assert [m["meta"]["symbol_id"] for m in ss] == list(range(S)) * n_frames
    return {k: get(k) for k in ("position", "angle", "scale", "velocity", "angular_velocity", "scale_velocity")}


def hitboxes(messages):
    return [m["meta"]["vertices"] for m in sorted(of_type(messages, "symbol_init"), key=lambda m: m["meta"]["symbol_id"])]


def placed(vertices, position, angle, scale):
    """Hitbox vertices in the frame (x right, y down; positive angle clockwise on screen)."""
    c, s = np.cos(angle), np.sin(angle)
    x, y = vertices[:, 0] * scale, vertices[:, 1] * scale
    return np.stack([c * x - s * y, s * x + c * y], -1) + position


def gaps(messages, size):
    """(T, S, 4) distances from each hitbox to the left, right, top and bottom edges."""
    st, hulls = states(messages), hitboxes(messages)
    n_frames, S = st["angle"].shape
    out = np.zeros((n_frames, S, 4))
    for t in range(n_frames):
        for i in range(S):
            v = placed(hulls[i], st["position"][t, i], st["angle"][t, i], st["scale"][t, i])
            out[t, i] = [v[:, 0].min(), size[0] - v[:, 0].max(), v[:, 1].min(), size[1] - v[:, 1].max()]
    return out


# ---------------------------------------------------------------------------------------

def test_determinism_by_seed():
    a, ma, _ = run()
    b, mb, _ = run.__wrapped__(items(), seed=0, n_frames=20)
    for x, y in zip(a[:20], b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    sa, sb = states(ma), states([m for m in mb])
    np.testing.assert_array_equal(sa["position"][:20], sb["position"])
    c, _, _ = run(items(), seed=1, n_frames=T)
    assert any(not np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, c))


def test_frames_have_the_requested_size_and_mode(batch):
    images, _, ms = run()
    assert all(im.mode == "RGB" and im.size == (W, H) for im in images)
    assert max(np.asarray(im).max() for im in images) > 200  # the white symbols are drawn
    grey, _, _ = run(items(color_output=False), n_frames=3)
    assert all(im.mode == "L" and im.size == (W, H) for im in grey)
    assert batch[0].shape == (3, T, H, W, 3) and batch[0].dtype == np.uint8


def test_init_messages():
    _, messages, ms = run()
    init = [m for m in messages if m["step"] == -1]
    assert [m["type"] for m in init] == ["params", "debug_options", "background"] + ["symbol_init"] * 3
    assert init[0]["meta"] == {**msym.DEFAULT_PARAMS, **BASE}
    assert init[1]["meta"] == msym.DEFAULT_DEBUG_OPTIONS
    assert init[2]["meta"]["label"] is None and not init[2]["meta"]["image"].any()  # black
    for i, m in enumerate(init[3:]):
        meta = m["meta"]
        assert meta["symbol_id"] == i and meta["label"] in [str(d) for d in range(10)]
        assert meta["image"].ndim == 3 and meta["image"].shape[2] == 4 and meta["image"].dtype == np.uint8
        assert meta["image_path"] == msym.font_path()
        v = meta["vertices"]
        assert v.ndim == 2 and v.shape[1] == 2 and len(v) >= 3
        # the hull holds every opaque pixel of the image
        h, w = meta["image"].shape[:2]
        rows, cols = np.nonzero(meta["image"][..., 3] >= 128)
        hull = shapely.Polygon(v + [w / 2, h / 2])
        assert hull.buffer(1e-6).contains(shapely.MultiPoint(np.stack([cols + 0.5, rows + 0.5], -1)))
    # every step's messages come in order
    steps = [m["step"] for m in messages]
    assert steps == sorted(steps) and steps[-1] == T - 1


def test_symbols_stay_inside_the_frame():
    _, messages, _ = run()
    g = gaps(messages, (W, H))
    assert g.min() >= -1e-3


def test_hit_wall_fires_exactly_when_a_hitbox_touches_an_edge():
    _, messages, _ = run()
    g = gaps(messages, (W, H))
    fired = np.zeros(g.shape, bool)
    for m in of_type(messages, "hit_wall"):
        fired[m["step"], m["meta"]["symbol_id"], msym.WALL_LABELS.index(m["meta"]["wall_label"])] = True
    assert fired.sum() >= 10  # enough bounces to mean something
    assert np.all(np.abs(g[fired]) <= 1e-3), g[fired].max()
    assert np.all(g[~fired] >= msym.TOUCH - 1e-3), g[~fired].min()
    # at a hit the velocity does not point out of that edge
    v = states(messages)["velocity"]
    out_of = np.stack([-v[..., 0], v[..., 0], -v[..., 1], v[..., 1]], -1)
    assert np.all(out_of[fired] <= 1e-6)


def test_without_interaction_velocity_changes_only_by_wall_bounces():
    _, messages, _ = run()
    v = states(messages)["velocity"]
    fired = np.zeros(v.shape[:2] + (4,), bool)
    for m in of_type(messages, "hit_wall"):
        fired[m["step"], m["meta"]["symbol_id"], msym.WALL_LABELS.index(m["meta"]["wall_label"])] = True
    changed = np.abs(np.diff(v, axis=0)) > 1e-5  # (T-1, S, 2): x, y
    hit_x = fired[1:, :, 0] | fired[1:, :, 1]
    hit_y = fired[1:, :, 2] | fired[1:, :, 3]
    assert not np.any(changed[..., 0] & ~hit_x) and not np.any(changed[..., 1] & ~hit_y)
    # speeds are kept: reflections only
    np.testing.assert_allclose(np.abs(v), np.broadcast_to(np.abs(v[:1]), v.shape), rtol=1e-5)


def overlap_events(messages, n_frames):
    got = set()
    for kind in ("start_overlap", "end_overlap"):
        for m in of_type(messages, kind):
            got.add((kind, m["step"], tuple(m["meta"]["symbol_ids"])))
    return got


def recomputed_overlap_events(messages):
    st, hulls = states(messages), hitboxes(messages)
    n_frames, S = st["angle"].shape
    expected, before = set(), np.zeros((S, S), bool)
    for t in range(n_frames):
        polys = [shapely.Polygon(placed(hulls[i], st["position"][t, i], st["angle"][t, i], st["scale"][t, i]))
                 for i in range(S)]
        now = np.zeros((S, S), bool)
        for i in range(S):
            for j in range(i + 1, S):
                now[i, j] = polys[i].intersection(polys[j]).area > 1e-6
        for i, j in zip(*np.nonzero(now & ~before)):
            expected.add(("start_overlap", t, (int(i), int(j))))
        for i, j in zip(*np.nonzero(~now & before)):
            expected.add(("end_overlap", t, (int(i), int(j))))
        before = now
    return expected


@pytest.mark.parametrize("interacting", [False, True])
def test_overlap_events_match_a_recomputation_from_the_states(interacting):
    # small frame, big symbols: many overlaps
    params = items(video_size=(36, 30), scale_limits=(0.7, 0.9), interacting_symbols=interacting)
    _, messages, _ = run(params, seed=3, n_frames=80)
    expected = recomputed_overlap_events(messages)
    got = overlap_events(messages, 80)
    assert got == expected
    if not interacting:
        assert len(got) >= 4


def test_interacting_symbols_bounce_off_each_other():
    # constant scales and no turning: the discs do not grow into each other
    params = items(num_symbols=2, video_size=(40, 34), scale_limits=(0.7, 0.9), interacting_symbols=True,
                   rotation_speed_limits=(0.0, 0.0), scale_function_type="constant")
    _, messages, ms = run(params, seed=3, n_frames=80)
    v = states(messages)["velocity"]
    fired = np.zeros(v.shape[:2], bool)
    for m in of_type(messages, "hit_wall"):
        fired[m["step"], m["meta"]["symbol_id"]] = True
    changed = np.any(np.abs(np.diff(v, axis=0)) > 1e-5, -1)
    assert np.any(changed & ~fired[1:])  # a change of velocity away from any edge
    # elastic, equal masses: total kinetic energy is kept through symbol-symbol contacts
    energy = (v ** 2).sum((-1, -2))
    np.testing.assert_allclose(energy, energy[0], rtol=1e-4)
    # the discs (common radius: mean area-equivalent radius at the current scales) stay apart
    p, scale = states(messages)["position"], states(messages)["scale"]
    radii = np.asarray(ms.bank.radii)[np.asarray(ms._video.sprite)]
    r = (radii * scale).mean(-1)
    ratio = np.linalg.norm(p[:, 0] - p[:, 1], axis=-1) / (2 * r)
    assert ratio.min() >= 0.99, ratio.min()


@pytest.mark.parametrize("kind", ["sine", "triangle", "constant"])
def test_scale_functions_follow_their_shape_within_limits(kind):
    limits = [(0.5, 0.8), (0.6, 0.7), (0.55, 0.65)]
    params = items(scale_function_type=kind, scale_limits=limits, scale_period_limits=(8, 16))
    _, messages, ms = run(params, seed=2, n_frames=40)
    st = states(messages)
    s, ds = st["scale"], st["scale_velocity"]
    lo, hi = np.array(limits).T
    assert np.all(s >= lo - 1e-5) and np.all(s <= hi + 1e-5)
    if kind == "constant":
        np.testing.assert_array_equal(s, np.broadcast_to(s[:1], s.shape))
        np.testing.assert_array_equal(ds, 0.0)
        return
    assert np.all(s.max(0) - s.min(0) > 0.8 * (hi - lo))  # periods <= 16 frames: full swings
    if kind == "sine":
        # a sampled sine about the middle: s[t-1] + s[t+1] - 2 s[t] = k (s[t] - mid), k < 0
        mid = (lo + hi) / 2
        second = s[:-2] + s[2:] - 2 * s[1:-1]
        for i in range(3):
            k = np.linalg.lstsq((s[1:-1, i] - mid[i])[:, None], second[:, i], rcond=None)[0][0]
            assert k < 0
            np.testing.assert_allclose(second[:, i], k * (s[1:-1, i] - mid[i]), atol=1e-5)
    else:
        # constant speed, reversing only at the limits
        d = np.diff(s, axis=0)
        for i in range(3):
            speed = np.abs(ds[0, i])
            steady = np.isclose(np.abs(d[:, i]), speed, atol=1e-5)
            turns = ~steady
            assert steady.mean() > 0.6
            # a step that is not steady straddles a limit
            near = np.minimum(np.minimum(s[:-1, i], s[1:, i]) - lo[i], hi[i] - np.maximum(s[:-1, i], s[1:, i]))
            assert np.all(near[turns] <= speed + 1e-5)
            np.testing.assert_allclose(np.abs(ds[:, i]), speed, atol=1e-6)


def test_start_options():
    params = items(rotate_at_start=False, rescale_at_start=False, lateral_motion_at_start=True,
                   scale_function_type="triangle",
                   position_speed_limits=[(1.0, 1.5), (2.0, 2.5), (3.0, 3.5)])
    _, messages, _ = run(params, seed=5, n_frames=2)
    st = states(messages)
    np.testing.assert_array_equal(st["angle"][0], 0.0)
    np.testing.assert_allclose(st["scale"][0], 0.65, atol=1e-6)
    v = st["velocity"][0]
    assert np.all(np.min(np.abs(v), -1) < 1e-5)  # along an axis
    speed = np.linalg.norm(v, axis=-1)
    assert np.all((speed >= [1.0, 2.0, 3.0]) & (speed <= [1.5, 2.5, 3.5]))


def test_batched_generation_equals_the_iterator(batch):
    images, messages, ms = run()
    frames, videos, sts = batch
    assert frames.shape == (3, T, H, W, 3)
    np.testing.assert_array_equal(frames[0], np.stack([np.asarray(im) for im in images]))
    # and the messages rebuilt from the batch's states are the iterator's
    first = jax.tree_util.tree_map(lambda x: x[0], (videos, sts))
    rebuilt = ms.messages(*first)
    assert [(m["step"], m["type"]) for m in rebuilt] == [(m["step"], m["type"]) for m in messages]
    assert overlap_events(rebuilt, T) == overlap_events(messages, T)
    # compiled separately (a scan over a batch, a step at a time), the two can differ in
    # the last bit of a float
    for name, value in states(messages).items():
        np.testing.assert_allclose(states(rebuilt)[name], value, atol=1e-5, err_msg=name)
    # another video of the batch is the iterator's video_index
    other, _, _ = run(items(), seed=0, n_frames=5, video_index=2)
    np.testing.assert_array_equal(frames[2, :5], np.stack([np.asarray(im) for im in other]))
    assert not np.array_equal(frames[1], frames[0])


@pytest.mark.slow
def test_reference_backend_makes_the_same_video():
    kernel, kernel_messages, _ = run()
    ref = MovingSymbols(dict(items()), seed=0, backend="reference")
    rec = Recorder()
    ref.add_subscriber(rec)
    frames = [np.asarray(next(ref)) for _ in range(12)]
    for a, b in zip(kernel, frames):
        assert np.abs(np.asarray(a).astype(int) - b).max() <= 1
    np.testing.assert_allclose(states(rec.messages)["position"], states(kernel_messages)["position"][:12],
                               atol=1e-3)


# ---------------------------------------------------------------------------------------
# images from folders

def make_dataset(root, split="training"):
    """Labels 'a' (RGBA squares), 'b' (light crosses on black, no alpha); backgrounds."""
    rng = np.random.default_rng(0)
    for k in range(2):
        a = np.zeros((12, 10, 4), np.uint8)
        a[2:10, 2:8] = [200, 50 * k, 30, 255]
        os.makedirs(root / "symbols" / split / "a", exist_ok=True)
        Image.fromarray(a, "RGBA").save(root / "symbols" / split / "a" / f"{k}.png")
        b = np.zeros((9, 9), np.uint8)
        b[4, 1:8] = b[1:8, 4] = 255
        os.makedirs(root / "symbols" / split / "b", exist_ok=True)
        Image.fromarray(b, "L").save(root / "symbols" / split / "b" / f"{k}.bmp")
    for label, colour in (("sky", (40, 80, 200)), ("grass", (30, 160, 40))):
        os.makedirs(root / "bg" / split / label, exist_ok=True)
        img = np.broadcast_to(np.array(colour, np.uint8), (20, 30, 3)) + rng.integers(0, 3, (20, 30, 3)).astype(np.uint8)
        Image.fromarray(img, "RGB").save(root / "bg" / split / label / "0.png")


def test_symbols_and_backgrounds_from_folders(tmp_path):
    make_dataset(tmp_path)
    params = {"data_dir": str(tmp_path / "symbols"), "symbol_labels": ["a", "b"], "num_symbols": 2,
              "video_size": (24, 20), "position_speed_limits": (1, 2),
              "background_data_dir": str(tmp_path / "bg"), "background_labels": ["sky", "grass"]}
    ms = MovingSymbols(params, seed=1)
    rec = Recorder()
    ms.add_subscriber(rec)
    frames = [np.asarray(next(ms)) for _ in range(6)]
    bg = of_type(rec.messages, "background")[0]["meta"]
    assert bg["label"] in ("sky", "grass") and bg["image"].shape == (20, 24, 3)
    assert bg["image_path"].startswith(str(tmp_path / "bg" / "training" / bg["label"]))
    for m in of_type(rec.messages, "symbol_init"):
        meta = m["meta"]
        assert meta["image_path"].startswith(str(tmp_path / "symbols" / "training" / meta["label"]))
        v = meta["vertices"]
        if meta["label"] == "a":  # the opaque 6 x 8 rectangle, centred on (5, 6)
            np.testing.assert_allclose([v[:, 0].min(), v[:, 0].max(), v[:, 1].min(), v[:, 1].max()],
                                       [-3, 3, -4, 4])
        else:  # the cross, from brightness
            assert meta["image"][4, 4, 3] == 255 and meta["image"][0, 0, 3] == 0
            np.testing.assert_allclose([v[:, 0].min(), v[:, 0].max()], [-3.5, 3.5])
    # pixels no symbol covers show the background
    st = states(rec.messages)
    covered = np.zeros((20, 24), bool)
    ys, xs = np.mgrid[0:20, 0:24] + 0.5
    for i, v in enumerate(hitboxes(rec.messages)):
        poly = shapely.Polygon(placed(v, st["position"][0, i], st["angle"][0, i], st["scale"][0, i]))
        covered |= shapely.contains_xy(poly.buffer(2.0), xs, ys)
    np.testing.assert_array_equal(frames[0][~covered], bg["image"][~covered])
    assert np.all(bg["image"][~covered] > 0)


def test_backgrounds_need_both_settings(tmp_path):
    make_dataset(tmp_path)
    ms = MovingSymbols({"background_data_dir": str(tmp_path / "bg"), "video_size": (32, 32)}, seed=0)
    rec = Recorder()
    ms.add_subscriber(rec)
    next(ms)
    assert of_type(rec.messages, "background")[0]["meta"]["label"] is None


# ---------------------------------------------------------------------------------------
# saving and errors

def test_save_videos_and_messages(tmp_path, batch):
    _, _, ms = run()
    frames, videos, sts = batch
    frames = frames[:2, :8]
    msgs = [ms.messages(*jax.tree_util.tree_map(lambda x: x[i], (videos, sts))) for i in range(2)]
    msgs = [[m for m in ms_ if m["step"] < 8] for ms_ in msgs]
    paths = msym.save(str(tmp_path), frames, msgs, fps=10, format="gif")
    assert [os.path.basename(p) for p in paths] == ["video_00000.gif", "video_00001.gif",
                                                    "video_00000.jsonl", "video_00001.jsonl"]
    import imageio.v3 as iio

    gif = iio.imread(paths[0])
    assert gif.shape[:3] == (8, H, W)
    lines = open(paths[2]).read().splitlines()
    assert len(lines) == len(msgs[0])
    first = json.loads(lines[0])
    assert first["type"] == "params" and first["meta"]["video_size"] == [W, H]
    state = json.loads(lines[-1])
    assert state["step"] == 7 and isinstance(state["meta"], dict)
    mp4 = msym.save(str(tmp_path / "mp4"), frames[:1], fps=10, format="mp4")
    assert os.path.getsize(mp4[0]) > 0


@pytest.mark.parametrize("params, match", [
    ({"colour_output": True}, "unknown keys"),
    ({"num_symbols": 0}, "num_symbols"),
    ({"video_size": (64,)}, "video_size"),
    ({"video_size": (12, 12)}, "video_size: expected at least"),
    ({"scale_function_type": "square"}, "scale_function_type"),
    ({"num_symbols": 2, "position_speed_limits": [(1, 2)] * 3}, "position_speed_limits"),
    ({"scale_limits": (0.0, 1.0)}, "scale_limits"),
    ({"rotation_speed_limits": (0.3, 0.1)}, "rotation_speed_limits"),
    ({"data_dir": "/nonexistent/dir"}, "data_dir"),
    ({"symbol_labels": []}, "symbol_labels"),
])
def test_bad_parameters_raise(params, match):
    with pytest.raises(ValueError, match=match):
        MovingSymbols(params)


def test_other_errors(tmp_path):
    make_dataset(tmp_path)
    with pytest.raises(ValueError, match="data_dir: no images for label 'c'"):
        MovingSymbols({"data_dir": str(tmp_path / "symbols"), "symbol_labels": ["a", "c"]})
    with pytest.raises(ValueError, match="debug_options"):
        MovingSymbols(debug_options={"show_pymunk": True})
    _, _, ms = run()
    with pytest.raises(ValueError, match="subscriber"):
        ms.add_subscriber(object())
    with pytest.raises(ValueError, match="n_frames"):
        ms.generate(jax.random.key(0), 2, 0)
    with pytest.raises(ValueError, match="key"):
        ms.generate(0, 2, 3)
    with pytest.raises(ValueError, match="videos"):
        msym.save(str(tmp_path), np.zeros((2, 3, 4, 4, 3), np.float32))


def test_debug_options_draw_on_the_iterator_frames():
    ms = MovingSymbols(dict(items()), debug_options={"show_hitboxes": True}, seed=0)
    plain, _, _ = run()
    drawn = np.asarray(next(ms))
    assert not np.array_equal(drawn, np.asarray(plain[0]))
    assert np.any((drawn[..., 0] == 255) & (drawn[..., 1] == 0))  # red outlines
