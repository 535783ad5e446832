"""Moving Symbols: the original's usage runs unchanged, its semantics (per-symbol range
picks, rotation signs, constant scales, label types, message sets, order and timing, the
original conventions), polygon contacts that never overlap, events against a
recomputation from the published states, the shared and disk-cached bank, the draw
kernel against its jnp twin, batched == iterator, saving and errors.

Few distinct configurations (each compiles once), small frames and batches."""
import functools
import itertools
import json
import math
import os

import jax
import numpy as np
import pytest
import shapely
from PIL import Image

from megastep_jax import moving_symbols as msym
from megastep_jax.moving_symbols import MovingSymbols, MovingSymbolsEnvironment
from megastep_jax.moving_symbols import bank as banks
from megastep_jax.moving_symbols import drawing

W, H = 40, 32  # unequal, to catch swapped axes
T = 30
BASE = {
    "num_symbols": 3, "video_size": (W, H), "scale_limits": (0.5, 0.8),
    "scale_function_type": "sine", "scale_period_limits": (10, 20),
    "rotation_speed_limits": (0.1, 0.3), "position_speed_limits": (2.0, 4.0),
    "rotate_at_start": True,
}
INTERACTING = {"num_symbols": 3, "video_size": (36, 30), "scale_limits": (0.6, 0.8),
               "scale_function_type": "sine", "scale_period_limits": (10, 20),
               "rotation_speed_limits": (0.0, 0.2), "position_speed_limits": (2.0, 4.0),
               "interacting_symbols": True, "rotate_at_start": True}


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    """The symbol banks' disk cache in a temporary folder, not the user's."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEGASTEP_JAX_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


class Recorder:
    def __init__(self):
        self.messages = []

    def process_message(self, message):
        self.messages.append(message)


def frozen(params):
    return tuple(sorted((k, tuple(map(tuple, v)) if isinstance(v, list) else v) for k, v in params.items()))


@functools.lru_cache(maxsize=None)
def run(params_items=frozen(BASE), seed=0, n_frames=T, debug=False):
    """(frames as arrays, messages, the generator) of one iterated video."""
    ms = MovingSymbols(dict(params_items), debug_options={} if debug else None, seed=seed)
    rec = Recorder()
    ms.add_subscriber(rec)
    frames = [np.asarray(next(ms)) for _ in range(n_frames)]
    return frames, rec.messages, ms


@functools.lru_cache(maxsize=None)
def batch(params_items=frozen(BASE), n=3, n_frames=T, seed=0):
    """(generator, frames, videos, states as numpy) of generate(key(seed), n, n_frames)."""
    ms = MovingSymbols(dict(params_items))
    frames, videos, states = ms.generate(jax.random.key(seed), n, n_frames, return_states=True)
    return ms, np.asarray(frames), jax.tree_util.tree_map(np.asarray, videos), jax.tree_util.tree_map(np.asarray, states)


def of_type(messages, kind):
    return [m for m in messages if m["type"] == kind]


def states(messages):
    """Arrays over (frame, symbol) from the symbol_state messages."""
    ss = of_type(messages, "symbol_state")
    n_frames = max(m["step"] for m in ss) + 1
    S = len(ss) // n_frames
    assert [m["meta"]["symbol_id"] for m in ss] == list(range(S)) * n_frames
    get = lambda k: np.array([m["meta"][k] for m in ss], np.float64).reshape(
        (n_frames, S) + np.shape(ss[0]["meta"][k]))
    return {k: get(k) for k in ("position", "angle", "scale", "velocity", "angular_velocity", "scale_velocity")}


def hitboxes(messages):
    return [m["meta"]["vertices"] for m in of_type(messages, "symbol_init")]


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
    for t, i in itertools.product(range(n_frames), range(S)):
        v = placed(hulls[i], st["position"][t, i], st["angle"][t, i], st["scale"][t, i])
        out[t, i] = [v[:, 0].min(), size[0] - v[:, 0].max(), v[:, 1].min(), size[1] - v[:, 1].max()]
    return out


def write_mnist_format(root, labels=(0, 1, 2), per_label=2, split="training"):
    """An MNIST-format folder: root/split/label/NNNN.png, RGBA (white, alpha = ink)."""
    rng = np.random.default_rng(0)
    for label in labels:
        folder = root / split / str(label)
        os.makedirs(folder, exist_ok=True)
        for k in range(per_label):
            alpha = np.zeros((14, 14), np.uint8)
            h, w = 6 + (k + hash(str(label))) % 5, 5 + k
            alpha[3:3 + h, 4:4 + w] = rng.integers(100, 256, (h, w))
            rgba = np.stack([np.where(alpha > 0, 255, 0)] * 3 + [alpha], -1).astype(np.uint8)
            Image.fromarray(rgba, "RGBA").save(folder / f"{k:04d}.png")
    return str(root)


# ---------------------------------------------------------------------------------------
# the original's users


class MovingSymbolsClassTrajectoryTracker:
    """The ICLR 2018 workshop script's subscriber, as written there (ported to Python 3)."""

    def __init__(self):
        self.symbol_classes = {}
        self.trajectories = {}

    def process_message(self, message):
        meta = message['meta']
        if message['type'] == 'symbol_init':
            self.symbol_classes[meta['symbol_id']] = meta['label']
        elif message['type'] == 'symbol_state':
            if meta['symbol_id'] not in self.trajectories:
                self.trajectories[meta['symbol_id']] = []
            self.trajectories[meta['symbol_id']].append(meta['position'])

    def get_info(self):
        sorted_keys = sorted(self.symbol_classes.keys())
        symbol_classes_np = np.array([self.symbol_classes[k] for k in sorted_keys])
        for k in sorted_keys:
            self.trajectories[k] = np.stack(self.trajectories[k], axis=0)
        trajectories_np = np.stack([self.trajectories[k] for k in sorted_keys], axis=0)
        return symbol_classes_np, trajectories_np


def generate_moving_symbols_video(args):
    """The workshop script's per-video function (its tuple parameter unpacked in the body)."""
    seed, num_frames, params = args
    sub = MovingSymbolsClassTrajectoryTracker()
    env = MovingSymbolsEnvironment(params, seed)
    env.add_subscriber(sub)

    all_frames = []
    for _ in range(num_frames):
        frame = env.next()
        all_frames.append(np.array(frame))
    video_tensor = np.array(all_frames, dtype=np.uint8)
    symbol_classes, trajectories = sub.get_info()

    return video_tensor, symbol_classes, trajectories


@pytest.fixture(scope="module")
def mnist(tmp_path_factory):
    return write_mnist_format(tmp_path_factory.mktemp("mnist"))


@pytest.fixture(scope="module")
def workshop(mnist):
    """The workshop's 'mnist_training_slow_fast' dataset, 6 videos of 20 frames, as its
    generate_all_moving_symbol_videos makes them (the pool's map as a plain map)."""
    params = {'data_dir': mnist, 'split': 'training', 'color_output': False, 'symbol_labels': range(3),
              'position_speed_limits': [(1, 3), (7, 9)]}
    arg_tups = [(seed, 20, params) for seed in range(123, 123 + 6)]
    video_data = list(map(generate_moving_symbols_video, arg_tups))
    videos, symbol_classes, trajectories = zip(*video_data)
    return params, np.stack(videos, 0), np.stack(symbol_classes, 0), np.stack(trajectories, 0)


def test_the_workshop_script_runs_with_only_the_import_changed(workshop):
    params, videos, classes, trajectories = workshop
    assert videos.shape == (6, 20, 64, 64) and videos.dtype == np.uint8  # "L" frames, one symbol
    assert videos.max() > 200
    assert classes.shape == (6, 1) and classes.dtype.kind == "i"  # int labels stay ints
    assert set(classes.ravel()) <= {0, 1, 2}
    assert trajectories.shape == (6, 1, 20, 2)
    speeds = np.linalg.norm(np.diff(trajectories, axis=2), axis=-1)
    # one symbol per video, and each video's symbol is slow or fast: both ranges occur
    typical = np.median(speeds, axis=(1, 2))
    assert np.all((typical <= 3.01) | (typical >= 6.99)), typical
    assert np.any(typical <= 3.01) and np.any(typical >= 6.99)


def test_the_original_generator_protocol_and_attributes(mnist):
    assert MovingSymbolsEnvironment.DEFAULT_PARAMS == msym.ORIGINAL_DEFAULT_PARAMS
    assert MovingSymbolsEnvironment.DEFAULT_PARAMS["num_symbols"] == 1
    params = {'data_dir': mnist, 'symbol_labels': [0, 2], 'num_symbols': 2, 'position_speed_limits': (1, 2)}
    env = MovingSymbolsEnvironment(params, 5, 10, None)
    assert env.video_size == (64, 64) and env.fidelity == 10 and env.debug_options is None
    assert [s.id for s in env.symbols] == [0, 1] and all(s.label in (0, 2) for s in env.symbols)
    assert env.symbols[0].image.mode == "RGBA"
    first = env.send(None)
    assert first.mode == "RGB" and first.size == (64, 64)
    np.testing.assert_array_equal(env.symbols[0].position, first_state(env))
    assert iter(env) is env and next(env).size == (64, 64)
    with pytest.raises(StopIteration):
        env.throw(GeneratorExit)
    env.close()
    # the original's defaults, given nothing: one motionless symbol of label 0
    still = MovingSymbolsEnvironment({}, 0)
    a, b = np.asarray(still.next()), np.asarray(still.next())
    np.testing.assert_array_equal(a, b)
    assert still.symbols[0].label == 0


def first_state(env):
    return env._last[1]["position"][0]


# ---------------------------------------------------------------------------------------
# the original's random settings


@pytest.fixture(scope="module")
def picks():
    params = {"num_symbols": 2, "video_size": (40, 40), "scale_limits": (0.5, 0.7),
              "scale_function_type": "constant", "rescale_at_start": False,
              "rotation_speed_limits": [(0.1, 0.2), (0.4, 0.5)],
              "position_speed_limits": [(1.0, 1.5), (3.0, 3.5)],
              "scale_period_limits": [(5, 6), (30, 31)]}
    return params, batch(frozen(params), n=40, n_frames=3)


def test_range_lists_are_drawn_at_random_per_symbol(picks):
    _, (ms, _, videos, st) = picks
    speed = np.linalg.norm(st.velocity[:, 0], axis=-1)  # (videos, symbols)
    slow, fast = (speed >= 1.0 - 1e-5) & (speed <= 1.5 + 1e-5), (speed >= 3.0 - 1e-5) & (speed <= 3.5 + 1e-5)
    assert np.all(slow | fast)
    for i in range(2):  # each symbol slow in some videos, fast in others
        assert 0.2 < slow[:, i].mean() < 0.8
    turn = np.abs(st.angular_velocity[:, 0])
    low, high = (turn >= 0.1 - 1e-6) & (turn <= 0.2 + 1e-6), (turn >= 0.4 - 1e-6) & (turn <= 0.5 + 1e-6)
    assert np.all(low | high) and 0.2 < low.mean() < 0.8
    assert np.all((videos.period >= 5) & (videos.period <= 6) | (videos.period >= 30) & (videos.period <= 31))


def test_rotation_signs_are_random(picks):
    _, (_, _, _, st) = picks
    negative = (st.angular_velocity[:, 0] < 0).mean()
    assert 0.25 < negative < 0.75


def test_constant_scales_are_random_even_without_rescale_at_start(picks):
    _, (_, _, _, st) = picks
    s = st.scale
    np.testing.assert_array_equal(s, np.broadcast_to(s[:, :1], s.shape))  # constant in time
    assert s.min() >= 0.5 - 1e-6 and s.max() <= 0.7 + 1e-6
    assert s.std() > 0.03  # not the middle value for all


def original_sine(period, amplitude, x_offset, y_offset):
    return lambda x: amplitude * math.sin((x - x_offset) * (2 * math.pi / period)) + y_offset


def original_triangle(p, a, x_offset, y_offset):
    def f(x):
        in_ = math.fmod(x - x_offset, p) + 7 * p / 4
        return 4 * a / p * (math.fabs(math.fmod(in_, p) - p / 2) - p / 4) + y_offset
    return f


@pytest.mark.parametrize("kind, rescale", [("sine", True), ("triangle", False)])
def test_scale_functions_are_the_originals(kind, rescale):
    if kind == "sine":  # BASE's batch
        ms, _, videos, st = batch()
        st = jax.tree_util.tree_map(lambda x: x[:, :25], st)
    else:
        params = {**BASE, "scale_function_type": kind, "rescale_at_start": rescale, "num_symbols": 2}
        ms, _, videos, st = batch(frozen(params), n=4, n_frames=25)
    make = original_sine if kind == "sine" else original_triangle
    for v, i in itertools.product(range(3), range(2)):
        lo, hi = videos.scale_lo[v, i], videos.scale_hi[v, i]
        f = make(videos.period[v, i], (hi - lo) / 2, videos.offset[v, i], (hi + lo) / 2)
        np.testing.assert_allclose(st.scale[v, :, i], [f(t) for t in range(25)], atol=2e-5)
        if not rescale:  # starting at the middle of the range
            np.testing.assert_allclose(st.scale[v, 0, i], (lo + hi) / 2, atol=1e-5)
        # the derivative, against a finite difference as the original computes it
        np.testing.assert_allclose(st.scale_velocity[v, 3, i], (f(3.001) - f(3)) / 0.001, atol=2e-3)


# ---------------------------------------------------------------------------------------
# messages


def test_message_presence_and_order():
    _, messages, ms = run()
    kinds = [(m["step"], m["type"]) for m in messages]
    assert kinds[:4] == [(-1, "params"), (-1, "symbol_init"), (-1, "symbol_init"), (-1, "symbol_init")]
    assert messages[0]["meta"] == {**msym.DEFAULT_PARAMS, **BASE}
    assert not any(m["type"] in ("debug_options", "background") for m in messages)
    # then per frame t: the S symbol_state of t, then the events of step t + 1
    rest = messages[4:]
    t, i = 0, 0
    while i < len(rest):
        assert [m["type"] for m in rest[i:i + 3]] == ["symbol_state"] * 3 and all(m["step"] == t for m in rest[i:i + 3])
        i += 3
        events = []
        while i < len(rest) and rest[i]["type"] != "symbol_state":
            events.append(rest[i])
            i += 1
        assert all(m["step"] == t + 1 for m in events)
        order = [msym.MESSAGE_TYPES.index(m["type"]) for m in events]
        assert order == sorted(order)  # hit_wall, then start_overlap, then end_overlap
        t += 1
    assert t == T
    for m in of_type(messages, "start_overlap") + of_type(messages, "end_overlap"):
        assert isinstance(m["meta"]["symbol_ids"], tuple) and m["meta"]["symbol_ids"][0] < m["meta"]["symbol_ids"][1]
    # given debug options (even empty) a debug_options message follows params
    _, debug_messages, _ = run(debug=True, n_frames=2)
    assert [m["type"] for m in debug_messages[:2]] == ["params", "debug_options"]
    assert debug_messages[1]["meta"] == msym.DEFAULT_DEBUG_OPTIONS


def test_symbols_stay_inside_and_hit_wall_fires_at_contact_begin():
    _, messages, _ = run()
    g = gaps(messages, (W, H))
    assert g.min() >= -1e-3
    v = states(messages)["velocity"]
    fired = np.zeros(g.shape, bool)
    for m in of_type(messages, "hit_wall"):
        if m["step"] < T:  # the events of step T (after the last frame) have no state to check
            fired[m["step"], m["meta"]["symbol_id"], msym.WALL_LABELS.index(m["meta"]["wall_label"])] = True
    assert fired.sum() >= 8
    # a bounce (the normal velocity turned inwards) is a contact that began in that step
    out_of = np.stack([-v[..., 0], v[..., 0], -v[..., 1], v[..., 1]], -1)  # speed out of each edge
    bounced = (out_of[:-1] > 1e-6) & (out_of[1:] < -1e-6)
    assert np.all(fired[1:][bounced])
    # and a contact is a bounce or a touch
    touching = g < msym.TOUCH + 1e-4
    assert np.all((bounced | touching[1:])[fired[1:]])
    assert not fired[0].any()
    # without interaction velocities change only by wall bounces, keeping their speeds
    np.testing.assert_allclose(np.abs(v), np.broadcast_to(np.abs(v[:1]), v.shape), rtol=1e-5)


def recomputed_overlap_events(messages):
    """The original's overlap events from the states: those of frame 0 start at step 1."""
    st, hulls = states(messages), hitboxes(messages)
    n_frames, S = st["angle"].shape
    expected, before = set(), np.zeros((S, S), bool)
    for t in range(n_frames):
        polys = [shapely.Polygon(placed(hulls[i], st["position"][t, i], st["angle"][t, i], st["scale"][t, i]))
                 for i in range(S)]
        now = np.zeros((S, S), bool)
        for i, j in itertools.combinations(range(S), 2):
            now[i, j] = polys[i].intersection(polys[j]).area > 1e-6
        for i, j in zip(*np.nonzero(now & ~before)):
            expected.add(("start_overlap", max(t, 1), (int(i), int(j))))
        for i, j in zip(*np.nonzero(~now & before)):
            expected.add(("end_overlap", max(t, 1), (int(i), int(j))))
        before = now
    return expected


def overlap_events(messages):
    return {(m["type"], m["step"], m["meta"]["symbol_ids"]) for m in messages
            if m["type"] in ("start_overlap", "end_overlap")}


def test_overlap_events_match_a_recomputation_from_the_states():
    frames, messages, _ = run(frozen({**BASE, "video_size": (36, 30), "scale_limits": (0.7, 0.9)}), seed=3,
                              n_frames=40)
    got = overlap_events(messages)
    # the last step's events need frame 40, which the subscriber saw but the states do not hold
    got = {e for e in got if e[1] < 40}
    assert got == recomputed_overlap_events(messages)
    assert len(got) >= 4


def test_messages_rebuilt_from_a_batch_are_the_iterators():
    frames, messages, ms = run()
    ms2, bframes, videos, st = batch()
    np.testing.assert_array_equal(bframes[0], np.stack(frames))
    first = jax.tree_util.tree_map(lambda x: x[0], (videos, st))
    rebuilt = ms.messages(*first)
    upto = [m for m in messages if not (m["step"] == T and m["type"] != "symbol_state")]
    assert [(m["step"], m["type"]) for m in rebuilt] == [(m["step"], m["type"]) for m in upto]
    for name, value in states(messages).items():
        np.testing.assert_allclose(states(rebuilt)[name], value, atol=1e-5, err_msg=name)
    assert not np.array_equal(bframes[1], bframes[0])


def test_determinism_by_seed():
    a, ma, _ = run()
    b, mb, _ = run.__wrapped__(frozen(BASE), seed=0, n_frames=10)
    for x, y in zip(a[:10], b):
        np.testing.assert_array_equal(x, y)
    c, _, _ = run(frozen(BASE), seed=1, n_frames=10)
    assert any(not np.array_equal(x, y) for x, y in zip(a, c))


# ---------------------------------------------------------------------------------------
# polygon contacts


@pytest.fixture(scope="module")
def contacts():
    return batch(frozen(INTERACTING), n=6, n_frames=40)


def test_interacting_hitboxes_never_overlap(contacts):
    ms, _, videos, st = contacts
    hulls = [ms._symbols_host.hulls[k] for k in videos.sprite.ravel()]
    hulls = np.array(hulls, dtype=object).reshape(videos.sprite.shape)
    worst = 0.0
    for v, t in itertools.product(range(st.position.shape[0]), range(40)):
        polys = [shapely.Polygon(placed(hulls[v, i], st.position[v, t, i], st.angle[v, t, i], st.scale[v, t, i]))
                 for i in range(3)]
        for a, b in itertools.combinations(polys, 2):
            worst = max(worst, a.intersection(b).area)
    assert worst < 1e-3, worst
    assert not st.overlaps.any()


def test_interacting_symbols_bounce_off_each_other(contacts):
    ms, _, videos, st = contacts
    v = st.velocity
    walls = st.hits.any(-1)  # (videos, T, S)
    changed = np.any(np.abs(np.diff(v, axis=1)) > 1e-4, -1)
    assert np.any(changed & ~walls[:, 1:])  # a change of velocity without a wall contact
    # elastic, equal masses, no rotation: kinetic energy is kept
    energy = (v ** 2).sum((-1, -2))
    np.testing.assert_allclose(energy, energy[:, :1] * np.ones_like(energy), rtol=1e-3)


def test_interacting_symbols_publish_no_overlap_messages(contacts):
    ms, _, videos, st = contacts
    msgs = ms.messages(*jax.tree_util.tree_map(lambda x: x[0], (videos, st)))
    assert not overlap_events(msgs)
    assert of_type(msgs, "symbol_state")


# ---------------------------------------------------------------------------------------
# conventions


def test_original_conventions_on_a_hand_computed_case(tmp_path):
    # an opaque 8 x 8 square: the hull of its pixel centres is [-3.5, 3.5]^2; moving along
    # an axis at 3 px per frame, turning 0.25 rad per frame, in a 32 x 24 frame
    folder = tmp_path / "sq" / "training" / "s"
    os.makedirs(folder)
    Image.fromarray(np.full((8, 8, 4), 255, np.uint8), "RGBA").save(folder / "0.png")
    params = {"data_dir": str(tmp_path / "sq"), "symbol_labels": ["s"], "num_symbols": 1, "video_size": (32, 24),
              "position_speed_limits": (3, 3), "lateral_motion_at_start": True, "rotation_speed_limits": (0.25, 0.25)}
    n = 30
    for seed in range(6):  # until the symbol moves vertically
        screen = MovingSymbolsEnvironment(params, seed)
        original = MovingSymbolsEnvironment(params, seed, conventions="original")
        rs, ro = Recorder(), Recorder()
        screen.add_subscriber(rs)
        original.add_subscriber(ro)
        for _ in range(n):
            np.testing.assert_array_equal(np.asarray(screen.next()), np.asarray(original.next()))
        if abs(states(rs.messages)["velocity"][0, 0, 1]) > 0:
            break
    s, o = states(rs.messages), states(ro.messages)
    # hand-computed motion in screen coordinates: y moves 3 px a frame, mirrored at the
    # walls of its box [3.5, 20.5] (the square does not turn its hitbox past the frame? it
    # does: the bounds change with the angle, so compare against the published bounds)
    y0, vy0 = s["position"][0, 0, 1], s["velocity"][0, 0, 1]
    w = s["angular_velocity"][0, 0]
    assert abs(w) == pytest.approx(0.25)
    expected_y, y, vy = [], y0, vy0
    for t in range(n):
        expected_y.append(y)
        angle = s["angle"][0, 0] + w * (t + 1)
        half = 3.5 * (abs(math.cos(angle)) + abs(math.sin(angle)))  # the square's half extent
        y = y + vy
        if y < half and vy < 0:
            y, vy = 2 * half - y, -vy
        elif y > 24 - half and vy > 0:
            y, vy = 2 * (24 - half) - y, -vy
        y = min(max(y, half), 24 - half)
    np.testing.assert_allclose(s["position"][:, 0, 1], expected_y, atol=1e-3)
    # the original's conventions: y up, velocity y flipped, angles counter-clockwise unwrapped
    np.testing.assert_allclose(o["position"][:, 0, 1], 24 - np.array(expected_y), atol=1e-3)
    np.testing.assert_allclose(o["velocity"][..., 1], -s["velocity"][..., 1], atol=1e-6)
    np.testing.assert_allclose(o["position"][..., 0], s["position"][..., 0], atol=1e-6)
    unwrapped = o["angle"][0, 0] + o["angular_velocity"][0, 0] * np.arange(n)
    np.testing.assert_allclose(o["angle"][:, 0], unwrapped, atol=1e-4)
    assert np.abs(o["angle"]).max() > math.pi  # not wrapped
    assert np.all(np.abs(s["angle"]) <= math.pi) and np.all(s["angle"] >= -math.pi)
    np.testing.assert_allclose(np.mod(s["angle"] + o["angle"] + math.pi, 2 * math.pi) - math.pi, 0, atol=1e-4)
    # hit_wall: the screen's bottom edge is the original's "top"
    swap = {"left": "left", "right": "right", "top": "bottom", "bottom": "top"}
    hs = [(m["step"], m["meta"]["wall_label"]) for m in of_type(rs.messages, "hit_wall")]
    ho = [(m["step"], m["meta"]["wall_label"]) for m in of_type(ro.messages, "hit_wall")]
    assert hs and ho == [(t, swap[label]) for t, label in hs]
    assert {label for _, label in hs} == {"top", "bottom"}
    # vertices: the original's pixel-index frame, y up
    vs, vo = hitboxes(rs.messages)[0], hitboxes(ro.messages)[0]
    np.testing.assert_allclose(vs[:, 0].min(), -3.5) and np.testing.assert_allclose(vs[:, 1].max(), 3.5)
    np.testing.assert_allclose(vo, np.stack([vs[:, 0] - 0.5, 0.5 - vs[:, 1]], -1))


# ---------------------------------------------------------------------------------------
# the bank


def test_the_bank_is_shared_and_cached_on_disk(tmp_path, monkeypatch):
    data = write_mnist_format(tmp_path / "data", labels=("a", 7), per_label=3)
    monkeypatch.setenv("MEGASTEP_JAX_CACHE", str(tmp_path / "cache"))
    decoded = []
    real = banks.load_symbol
    monkeypatch.setattr(banks, "load_symbol", lambda p: decoded.append(p) or real(p))
    params = {"data_dir": data, "symbol_labels": ["a", 7], "num_symbols": 1, "video_size": (32, 32)}
    a = MovingSymbols(params)
    assert len(decoded) == 6 and len(os.listdir(tmp_path / "cache")) == 1
    b = MovingSymbolsEnvironment(params, 3)
    assert len(decoded) == 6 and b._symbols_host is a._symbols_host and b.bank is a.bank
    banks.clear_memory_cache()
    c = MovingSymbols(params)  # a new process, as far as the bank knows: read from disk
    assert len(decoded) == 6
    for x, y in zip(a._symbols_host.rgba, c._symbols_host.rgba):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(a._symbols_host.hulls, c._symbols_host.hulls):
        np.testing.assert_array_equal(x, y)
    # max_images_per_label is a different bank; a changed folder is decoded again
    MovingSymbols(params, max_images_per_label=1)
    assert len(decoded) == 8
    banks.clear_memory_cache()
    Image.fromarray(np.full((5, 5, 4), 255, np.uint8), "RGBA").save(tmp_path / "data" / "training" / "a" / "0009.png")
    MovingSymbols(params)
    assert len(decoded) == 8 + 7
    # labels keep their type in the messages
    rec = Recorder()
    b.add_subscriber(rec)
    b.next()
    assert of_type(rec.messages, "symbol_init")[0]["meta"]["label"] in ("a", 7)


def test_images_are_cropped_and_hulled_like_the_originals(tmp_path):
    rgba = np.zeros((12, 10, 4), np.uint8)
    rgba[2:9, 3:7] = [200, 50, 30, 255]
    rgba[5, 7] = [10, 10, 10, 1]  # faint, still inside (alpha > 0)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "x.png")
    cropped = msym.load_symbol(str(tmp_path / "x.png"))
    assert cropped.shape == (7, 5, 4)
    v = msym.hitbox(cropped)
    np.testing.assert_allclose([v[:, 0].min(), v[:, 0].max(), v[:, 1].min(), v[:, 1].max()], [-2, 2, -3, 3])
    light = np.zeros((9, 9), np.uint8)
    light[4, 1:8] = light[1:8, 4] = 255
    Image.fromarray(light, "L").save(tmp_path / "cross.bmp")
    cross = msym.load_symbol(str(tmp_path / "cross.bmp"))
    assert cross.shape == (7, 7, 4) and cross[3, 3, 3] == 255 and cross[0, 0, 3] == 0


def test_backgrounds_are_pasted_and_published_last(tmp_path, mnist):
    for label, colour in (("sky", (40, 80, 200)), ("grass", (30, 160, 40))):
        os.makedirs(tmp_path / "bg" / "training" / label)
        Image.fromarray(np.broadcast_to(np.array(colour, np.uint8), (20, 50, 3)).copy(), "RGB").save(
            tmp_path / "bg" / "training" / label / "0.png")
    params = {"data_dir": mnist, "symbol_labels": [0, 1], "num_symbols": 1, "video_size": (32, 32),
              "background_data_dir": str(tmp_path / "bg"), "background_labels": ["sky", "grass"]}
    env = MovingSymbolsEnvironment(params, 1)
    rec = Recorder()
    env.add_subscriber(rec)
    frame = np.asarray(env.next())
    init = [m["type"] for m in rec.messages if m["step"] == -1]
    assert init == ["params", "symbol_init", "background"]
    bg = rec.messages[2]["meta"]
    assert bg["label"] in ("sky", "grass") and bg["image"].shape == (32, 32, 3)
    assert bg["image"][:20].any() and not bg["image"][20:].any()  # pasted at the top-left
    np.testing.assert_array_equal(frame[0, 0], bg["image"][0, 0])
    only_dir = MovingSymbolsEnvironment({**params, "background_labels": None}, 1)
    rec = Recorder()
    only_dir.add_subscriber(rec)
    only_dir.next()
    assert not of_type(rec.messages, "background")


# ---------------------------------------------------------------------------------------
# drawing


def test_the_draw_kernel_equals_its_jnp_twin_on_random_scenes(tmp_path, mnist):
    if not drawing.kernel_available():
        pytest.skip("the compiled kernels are not built")
    for label in ("a", "b"):
        os.makedirs(tmp_path / "bg" / "training" / label)
        Image.fromarray(np.random.default_rng(1).integers(0, 256, (24, 30, 3), np.uint8), "RGB").save(
            tmp_path / "bg" / "training" / label / "0.png")
    ms = MovingSymbols({"data_dir": mnist, "symbol_labels": [0, 1, 2], "video_size": (30, 24),
                        "background_data_dir": str(tmp_path / "bg"), "background_labels": ["a", "b"]})
    b = ms.bank
    rng = np.random.default_rng(0)
    N, S = 64, 3
    args = (np.asarray(rng.integers(0, b.sprites.shape[0], (N, S)), np.int32),
            np.asarray(rng.integers(-1, 2, N), np.int32),
            np.asarray(rng.uniform(-10, 40, (N, S, 2)), np.float32),
            np.asarray(rng.uniform(-7, 7, (N, S)), np.float32),
            np.asarray(rng.uniform(0.2, 3, (N, S)), np.float32))
    for color in (True, False):
        k = np.asarray(drawing.draw_kernel(b, *args, color)).astype(int)
        r = np.asarray(drawing.draw_reference(b, *args, color)).astype(int)
        assert k.shape == (N, 24, 30, 3 if color else 1)
        assert np.abs(k - r).max() <= 1 and (k != r).mean() < 1e-3
        assert k.std() > 10
    # indices out of range draw nothing (and read nothing out of bounds)
    bad = (np.full((2, 1), 99, np.int32), np.array([5, -7], np.int32), np.full((2, 1, 2), 15, np.float32),
           np.zeros((2, 1), np.float32), np.ones((2, 1), np.float32))
    np.testing.assert_array_equal(np.asarray(drawing.draw_kernel(b, *bad, True)), 0)


def test_debug_options_draw_a_debug_view_and_leave_the_frames():
    frames, _, ms = run()
    dbg = MovingSymbols(dict(frozen(BASE)), debug_options={"show_bounding_poly": True, "show_frame_number": True,
                                                            "show_pymunk_debug": True, "frame_number_font_size": 9})
    frame = np.asarray(next(dbg))
    np.testing.assert_array_equal(frame, frames[0])
    view = np.asarray(dbg.debug_image)
    assert view.shape == (H, W, 3) and np.any((view[..., 0] == 255) & (view[..., 1] == 0))  # red outlines
    assert ms.debug_image is None


# ---------------------------------------------------------------------------------------
# saving and errors


def test_save_videos_and_messages(tmp_path):
    ms, frames, videos, st = batch()
    frames = frames[:2, :8]
    msgs = [ms.messages(*jax.tree_util.tree_map(lambda x: x[i], (videos, st))) for i in range(2)]
    msgs = [[m for m in ms_ if m["step"] < 8] for ms_ in msgs]
    paths = msym.save(str(tmp_path), frames, msgs, fps=10, format="gif")
    assert [os.path.basename(p) for p in paths] == ["video_00000.gif", "video_00001.gif",
                                                    "video_00000.jsonl", "video_00001.jsonl"]
    import imageio.v3 as iio

    assert iio.imread(paths[0]).shape[:3] == (8, H, W)
    lines = open(paths[2]).read().splitlines()
    assert len(lines) == len(msgs[0])
    first = json.loads(lines[0])
    assert first["type"] == "params" and first["meta"]["video_size"] == [W, H]


@pytest.mark.parametrize("params, match", [
    ({"colour_output": True}, "unknown keys"),
    ({"num_symbols": 0}, "num_symbols"),
    ({"video_size": (64,)}, "video_size"),
    ({"video_size": (12, 12)}, "video_size: expected at least"),
    ({"scale_function_type": "square"}, "scale_function_type"),
    ({"position_speed_limits": [(1, 2), (3,)]}, "position_speed_limits"),
    ({"position_speed_limits": []}, "position_speed_limits"),
    ({"scale_limits": (0.0, 1.0)}, "scale_limits"),
    ({"rotation_speed_limits": (0.3, 0.1)}, "rotation_speed_limits"),
    ({"data_dir": "/nonexistent/dir"}, "data_dir"),
    ({"symbol_labels": []}, "symbol_labels"),
])
def test_bad_parameters_raise(params, match):
    with pytest.raises(ValueError, match=match):
        MovingSymbols(params)


def test_other_errors(mnist):
    with pytest.raises(ValueError, match="data_dir: no images for label 7"):
        MovingSymbolsEnvironment({"data_dir": mnist, "symbol_labels": [0, 7]}, 0)
    with pytest.raises(ValueError, match="debug_options: unknown keys"):
        MovingSymbolsEnvironment({}, 0, debug_options={"show_pymunk": True})
    with pytest.raises(ValueError, match="seed"):
        MovingSymbolsEnvironment({}, -1)
    with pytest.raises(ValueError, match="fidelity"):
        MovingSymbolsEnvironment({}, 0, 0)
    with pytest.raises(ValueError, match="conventions"):
        MovingSymbols(conventions="pygame")
    with pytest.raises(ValueError, match="frame_rate"):
        MovingSymbols(debug_options={"frame_rate": 0})
    _, _, ms = run()
    with pytest.raises(ValueError, match="subscriber"):
        ms.add_subscriber(object())
    with pytest.raises(ValueError, match="n_frames"):
        ms.generate(jax.random.key(0), 2, 0)
    with pytest.raises(ValueError, match="key"):
        ms.generate(0, 2, 3)
    with pytest.raises(ValueError, match="videos"):
        msym.save("/tmp/unused", np.zeros((2, 3, 4, 4, 3), np.float32))


def test_separating_axis_tests_agree_with_shapely():
    from megastep_jax.moving_symbols import dynamics

    rng = np.random.default_rng(0)
    hulls = []
    for _ in range(2):
        pts = rng.normal(size=(12, 2)) * [4, 6]
        hull = shapely.MultiPoint(pts).convex_hull
        v = np.asarray(shapely.geometry.polygon.orient(hull, 1.0).exterior.coords)[:-1]
        hulls.append(np.concatenate([v, np.repeat(v[-1:], 12 - len(v), 0)]))  # padded as the bank
    vertices = np.stack(hulls).astype(np.float32)
    body = dynamics.body_hulls(vertices)
    test = jax.jit(lambda pos, ang, sc: (
        dynamics.pair_penetration(dynamics.pair_geometry(dynamics.posed(vertices, body, ang, sc), 0, 1),
                                  pos[1] - pos[0]),
        dynamics.penetration(*dynamics.transform(vertices, pos, ang, sc))))
    agree = 0
    for _ in range(200):
        pos = rng.uniform(0, 14, (2, 2)).astype(np.float32)
        ang, sc = rng.uniform(-4, 4, 2).astype(np.float32), rng.uniform(0.5, 1.5, 2).astype(np.float32)
        (d1, n1), (d2, n2) = test(pos, ang, sc)
        a, b = (shapely.Polygon(placed(hulls[i][:len(hulls[i])], pos[i], ang[i], sc[i])) for i in range(2))
        area = a.intersection(b).area
        np.testing.assert_allclose(d1, d2, atol=1e-4)
        if abs(float(d1)) > 1e-3:
            assert (float(d1) > 0) == (area > 0)
        if float(d1) > 0:  # moving b by the depth along the normal separates them
            moved = shapely.affinity.translate(b, *(np.asarray(n1) * (float(d1) + 1e-3)))
            assert a.intersection(moved).area < 1e-4
            agree += 1
    assert agree > 20
