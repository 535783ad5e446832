"""Videos of environments: encoders, triggered episode/step clips, and recorded rollouts.

- :class:`Encoder` turns frames (arrays or matplotlib figures) into mp4 or gif bytes.
- :class:`ParallelEncoder` draws frames in a pool of worker processes (matplotlib is
  the slow part) and encodes them in order in this one.
- :func:`save_video` writes the clips that episode and step triggers ask for, with the
  semantics of gymnasium's ``save_video``; :func:`capped_cubic_video_schedule`
  is the default trigger.
- :func:`record` runs a jitted rollout of an env, keeps every step's state and writes a
  video of it with a progress bar.
"""
from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing
import os
import tempfile
from collections import deque
from typing import Callable, Optional, Sequence

import jax
import numpy as np

from . import validation
from .arrdict import dotdict

__all__ = ["Encoder", "ParallelEncoder", "to_array", "capped_cubic_video_schedule",
           "save_video", "rollout_fn", "rollout", "record"]

log = logging.getLogger(__name__)

FORMATS = ("mp4", "gif")


def to_array(frame) -> np.ndarray:
    """A frame as an (H, W, 3) uint8 array.

    Args:
        frame: a matplotlib figure (drawn, then closed if pyplot owns it), or an
            (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) array; floats are read as [0, 1],
            integers as [0, 255]. Alpha is dropped.
    """
    if hasattr(frame, "canvas") and hasattr(frame, "savefig"):
        canvas = frame.canvas
        if not hasattr(canvas, "buffer_rgba"):
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            canvas = FigureCanvasAgg(frame)
        canvas.draw()
        arr = np.asarray(canvas.buffer_rgba())[..., :3].copy()
        import matplotlib.pyplot as plt
        if plt.fignum_exists(getattr(frame, "number", -1)):
            plt.close(frame)
        return arr
    arr = np.asarray(frame)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
        raise ValueError(f"frame: expected a figure or an (H, W, 1|3|4) array, got shape {arr.shape}")
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, -1)
    arr = arr[..., :3]
    if arr.dtype.kind == "f":
        arr = np.round(np.clip(arr, 0, 1) * 255)
    return np.clip(arr, 0, 255).astype(np.uint8)


def _even(arr: np.ndarray) -> np.ndarray:
    """Pads height and width to even numbers (H.264 with yuv420p needs them), with white."""
    h, w = arr.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return arr
    return np.pad(arr, ((0, h % 2), (0, w % 2), (0, 0)), constant_values=255)


class Encoder:
    """A context manager that encodes frames into a video.

    >>> with Encoder(fps=20) as encoder:
    ...     for frame in frames:
    ...         encoder(frame)
    >>> encoder.save("video.mp4")   # or: bytes in encoder.value

    Frames are (H, W, 1|3) arrays or matplotlib figures (see :func:`to_array`); every
    frame must have the size of the first. mp4 (H.264) frames with an odd height or width
    are padded by one white row or column, since the codec needs even sizes. mp4 is encoded
    in this process with PyAV (no ffmpeg subprocess is forked). In a gif,
    Pillow merges identical consecutive frames into one shown for their summed duration,
    so the timing is kept but the decoded frame count can be smaller.

    Args:
        fps: frames per second, > 0.
        format: ``"mp4"`` or ``"gif"``.
    """

    def __init__(self, fps: float = 20, format: str = "mp4"):
        if not (isinstance(fps, (int, float)) and np.isfinite(fps) and fps > 0):
            raise ValueError(f"fps: expected a positive number, got {fps!r}")
        if format not in FORMATS:
            raise ValueError(f"format: expected one of {FORMATS}, got {format!r}")
        self.fps = fps
        self.format = format
        self.value: Optional[bytes] = None
        self.shape: Optional[tuple] = None
        self.n_frames = 0
        self._writer = None
        self._frames: list = []
        self._dir = None

    def __enter__(self):
        return self

    def __call__(self, frame) -> None:
        """Appends one frame."""
        arr = to_array(frame)
        if self.format == "mp4":
            arr = _even(arr)
        if self.shape is None:
            self.shape = arr.shape
        elif arr.shape != self.shape:
            raise ValueError(f"frame: expected every frame to be {self.shape[:2]} like the first, "
                             f"got {arr.shape[:2]}")
        if self.format == "mp4":
            if self._writer is None:
                self._open_mp4()
            self._writer.write_frame(arr)
        else:
            self._frames.append(arr)
        self.n_frames += 1

    def _open_mp4(self) -> None:
        # PyAV encodes in this process (imageio's pyav plugin). imageio's ffmpeg plugin
        # would fork an ffmpeg subprocess from a multithreaded JAX process instead, which
        # Python warns may deadlock.
        import imageio.v3 as iio

        self._dir = tempfile.TemporaryDirectory()
        self._path = os.path.join(self._dir.name, "video.mp4")
        self._writer = iio.imopen(self._path, "w", plugin="pyav")
        self._writer.init_video_stream("libx264", fps=self.fps, pixel_format="yuv420p")

    def close(self) -> None:
        """Finishes the video; its bytes are then in :attr:`value`."""
        if self.value is not None:
            return
        if self.n_frames == 0:
            self.value = b""
            return
        if self.format == "mp4":
            self._writer.close()
            self._writer = None  # collected now, not at interpreter exit after PyAV is torn down
            with open(self._path, "rb") as f:
                self.value = f.read()
            self._dir.cleanup()
        else:
            import io

            import imageio.v3 as iio

            buf = io.BytesIO()
            iio.imwrite(buf, np.stack(self._frames), extension=".gif",
                        duration=1000.0 / self.fps, loop=0)
            self.value = buf.getvalue()
            self._frames = []

    def __exit__(self, *exc):
        self.close()

    def save(self, path: str) -> str:
        """Writes the video to ``path`` (closing the encoder first); returns the path."""
        self.close()
        if not self.value:
            raise ValueError("encoder: no frames were encoded, nothing to save")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "wb") as f:
            f.write(self.value)
        return path

    def notebook(self):
        """Shows the video in a Jupyter notebook."""
        import base64

        from IPython.display import HTML, display

        self.close()
        b64 = base64.b64encode(self.value).decode()
        if self.format == "gif":
            return display(HTML(f'<img src="data:image/gif;base64,{b64}">'))
        return display(HTML(f'<video controls><source type="video/mp4" src="data:video/mp4;base64,{b64}"></video>'))


def _draw(f, args, kwargs):
    return to_array(f(*args, **kwargs))


class ParallelEncoder:
    """Draws frames in worker processes and encodes them, in call order, in this one.

    >>> with ParallelEncoder(plotting.plot_state, fps=10) as encoder:
    ...     for state in states:
    ...         encoder(state)
    >>> encoder.save("video.mp4")

    Args:
        f: a picklable function (module level, or a classmethod) taking the arguments
            each call of the encoder gets and returning a figure or an array.
        fps: frames per second.
        N: worker processes: an int, or a float fraction of the CPUs; default half of them.
        format: ``"mp4"`` or ``"gif"``.
        max_pending: frames drawn ahead of the encoder at most; bounds the memory used.

    Workers are started with ``spawn``: forking a process that runs JAX is unsafe. So, as
    with any ``spawn`` pool, a script using this must guard its entry point with
    ``if __name__ == "__main__":``, else the workers die importing it.
    """

    def __init__(self, f: Callable, fps: float = 20, N=None, format: str = "mp4", max_pending: Optional[int] = None):
        if not callable(f):
            raise ValueError(f"f: expected a callable, got {type(f).__name__}")
        cpus = os.cpu_count() or 1
        if N is None:
            N = max(cpus // 2, 1)
        elif isinstance(N, float) and 0 < N <= 1:
            N = max(int(N * cpus), 1)
        if isinstance(N, bool) or not isinstance(N, int) or N <= 0:
            raise ValueError(f"N: expected a positive int or a fraction in (0, 1], got {N!r}")
        self.f = f
        self.N = N
        self.encoder = Encoder(fps=fps, format=format)
        self.max_pending = max_pending or 4 * N
        self._pending: deque = deque()
        self._pool = None

    def __enter__(self):
        self._pool = cf.ProcessPoolExecutor(self.N, mp_context=multiprocessing.get_context("spawn"))
        return self

    def __call__(self, *args, **kwargs) -> None:
        """Queues a frame ``f(*args, **kwargs)``."""
        if self._pool is None:
            raise ValueError("encoder: use ParallelEncoder as a context manager (with ... as encoder)")
        self._pending.append(self._pool.submit(_draw, self.f, args, kwargs))
        while len(self._pending) > self.max_pending:
            self.encoder(self._pending.popleft().result())

    def __exit__(self, exc_type, *exc):
        try:
            if exc_type is None:
                while self._pending:
                    self.encoder(self._pending.popleft().result())
            self.encoder.close()
        finally:
            for fut in self._pending:
                fut.cancel()
            self._pool.shutdown(wait=True)
            self._pool = None

    @property
    def value(self) -> Optional[bytes]:
        return self.encoder.value

    def save(self, path: str) -> str:
        return self.encoder.save(path)

    def notebook(self):
        return self.encoder.notebook()


def capped_cubic_video_schedule(episode_id: int) -> bool:
    """The default episode trigger: episodes 0, 1, 8, 27, ..., k^3, ..., 729, then every 1000th.

    Args:
        episode_id: the episode's index.

    Returns:
        Whether to record that episode.
    """
    if episode_id < 1000:
        return int(round(episode_id ** (1.0 / 3))) ** 3 == episode_id
    return episode_id % 1000 == 0


def _write(frames: Sequence, path: str, fps: float) -> str:
    if len(frames) == 0:
        raise ValueError(f"frames: no frames to write to {path}")
    fmt = os.path.splitext(path)[1].lstrip(".") or "mp4"
    with Encoder(fps=fps, format=fmt) as enc:
        for frame in frames:
            enc(frame)
    return enc.save(path)


def save_video(frames: list, video_folder: str, episode_trigger: Optional[Callable[[int], bool]] = None,
               step_trigger: Optional[Callable[[int], bool]] = None, video_length: Optional[int] = None,
               name_prefix: str = "rl-video", episode_index: int = 0, step_starting_index: int = 0,
               fps: float = 20, format: str = "mp4") -> list[str]:
    """Writes clips of one episode's frames, as the triggers ask.

    The semantics are those of ``gymnasium.utils.save_video.save_video``:

    - with no trigger, ``episode_trigger`` is :func:`capped_cubic_video_schedule`;
    - if ``episode_trigger(episode_index)``, ``frames[:video_length]`` goes to
      ``{name_prefix}-episode-{episode_index}.mp4``;
    - frame 0 comes from the reset, so frame ``i >= 1`` is step
      ``step_starting_index + i - 1``; for each such step with ``step_trigger(step)``,
      ``frames[i:i + video_length]`` (to the end if ``video_length`` is None) goes to
      ``{name_prefix}-step-{step}.mp4``.

    Args:
        frames: the episode's frames, arrays or matplotlib figures (see :func:`to_array`).
        video_folder: folder to write to; created if missing.
        episode_trigger: ``episode_index -> bool``.
        step_trigger: ``step_index -> bool``.
        video_length: frames per clip; None for the whole episode (or its rest).
        name_prefix: prepended to the file names.
        episode_index: the index of this episode.
        step_starting_index: the step index of ``frames[1]``.
        fps: frames per second.
        format: ``"mp4"`` or ``"gif"`` (the file extension follows).

    Returns:
        The paths written, in order (episode clip first).
    """
    if not isinstance(frames, list):
        log.error("Expected a list of frames, got a %s instead.", type(frames).__name__)
        frames = list(frames)
    if format not in FORMATS:
        raise ValueError(f"format: expected one of {FORMATS}, got {format!r}")
    if video_length is not None and (isinstance(video_length, bool) or not isinstance(video_length, int)
                                     or video_length <= 0):
        raise ValueError(f"video_length: expected None or a positive int, got {video_length!r}")
    if episode_trigger is None and step_trigger is None:
        episode_trigger = capped_cubic_video_schedule

    video_folder = os.path.abspath(video_folder)
    os.makedirs(video_folder, exist_ok=True)
    path_prefix = os.path.join(video_folder, name_prefix)
    written = []
    if episode_trigger is not None and episode_trigger(episode_index):
        written.append(_write(frames[:video_length], f"{path_prefix}-episode-{episode_index}.{format}", fps))
    if step_trigger is not None:
        # frame 0 comes from the reset, so steps start at frame 1
        for step_index, frame_index in enumerate(range(1, len(frames)), start=step_starting_index):
            if step_trigger(step_index):
                end = frame_index + video_length if video_length is not None else None
                written.append(_write(frames[frame_index:end], f"{path_prefix}-step-{step_index}.{format}", fps))
    return written


def rollout_fn(env, policy: Callable, length: int, keep_state: bool = True) -> Callable:
    """A jitted ``run(key, params)`` that rolls one env out for ``length`` steps.

    The one rollout helper of the project (recording, tests and examples use it):
    ``reset`` with the first half of ``key``, then ``length`` auto-resetting steps in a
    ``lax.scan``, each splitting its key into the policy's and the step's.

    Args:
        env: an env (or wrapper) with ``reset``/``step``.
        policy: ``policy(key, obs) -> action`` for one env, traceable by JAX.
        length: number of steps, a positive int.
        keep_state: whether to stack every step's state (for plots and videos).

    Returns:
        ``run(key, params) -> dotdict`` with ``obs`` (and ``state``) stacked over the
        ``length + 1`` steps (index 0 is the reset), and ``reward`` (length, A),
        ``terminated``, ``truncated`` (length,) and ``info`` of each step.
    """
    length = validation.positive_int("length", length)

    @jax.jit
    def run(key, params):
        key_reset, key_steps = jax.random.split(key)
        obs, state = env.reset(key_reset, params)

        def body(carry, key):
            obs, state = carry
            key_act, key_step = jax.random.split(key)
            action = policy(key_act, obs)
            obs, state, reward, terminated, truncated, info = env.step(key_step, state, action, params)
            out = dict(obs=obs, reward=reward, terminated=terminated, truncated=truncated, info=info)
            if keep_state:
                out["state"] = state
            return (obs, state), out

        _, traj = jax.lax.scan(body, (obs, state), jax.random.split(key_steps, length))
        cat = lambda first, rest: jax.numpy.concatenate([first[None], rest])
        traj["obs"] = jax.tree_util.tree_map(cat, obs, traj["obs"])
        if keep_state:
            traj["state"] = jax.tree_util.tree_map(cat, state, traj["state"])
        return dotdict(traj)

    return run


def rollout(env, params, policy: Callable, key, length: int):
    """Runs one env for ``length`` steps in a single jitted ``lax.scan``.

    Args:
        env: a :class:`megastep_jax.envs.Environment`.
        params: its params (None for ``env.default_params``).
        policy: ``policy(key, obs) -> action`` for one env, traceable by JAX.
        key: a PRNG key.
        length: number of steps, a positive int.

    Returns:
        A dotdict as :func:`rollout_fn`'s: ``state`` and ``obs`` stacked over the
        ``length + 1`` steps (index 0 is the reset), ``reward`` (length, A),
        ``terminated``, ``truncated`` (length,) and ``info``.
    """
    params = env.default_params if params is None else params
    return rollout_fn(env, policy, length)(key, params)


def _default_plot_state(env, params) -> tuple[Callable, Callable]:
    from . import plotting
    from .arrdict import numpyify

    plot = getattr(type(env), "plot_state", plotting.plot_state)

    def state_fn(state, obs):
        try:
            s = env.state(state, params)
        except (AttributeError, NotImplementedError) as e:
            raise ValueError("env: expected a `state(env_state, params)` method returning a numpy plot "
                             "state (see megastep_jax.plotting), or pass state_fn=") from e
        if "obs" not in s:
            s["obs"] = numpyify(obs)
        return s

    return state_fn, plot


def record(env, params, policy: Callable, key, length: int, path: str = "video.mp4", fps: float = 10,
           state_fn: Optional[Callable] = None, plot_fn: Optional[Callable] = None, N=None,
           progress: bool = True) -> str:
    """Records a video of one env following ``policy``.

    Runs :func:`rollout` (jitted), then plots each of the ``length + 1`` kept states and
    encodes them, with a tqdm progress bar. With ``N > 1`` (or None, half the CPUs, when
    there are at least two) the figures are drawn in worker processes.

    Args:
        env: the env; by default its ``state(env_state, params)`` method gives the numpy plot
            state (``obs`` is added when missing) and its ``plot_state`` (else
            :func:`megastep_jax.plotting.plot_state`) draws it.
        params: env params, None for the defaults.
        policy: ``policy(key, obs) -> action``.
        key: PRNG key.
        length: number of steps; the video has ``length + 1`` frames.
        path: output file, ``.mp4`` or ``.gif``.
        fps: frames per second.
        state_fn: ``state_fn(env_state, obs) -> numpy state dotdict``, for one step.
        plot_fn: picklable ``plot_fn(state) -> figure or array``.
        N: worker processes; 1 draws in this process (more need a ``__main__`` guard in
            scripts, see :class:`ParallelEncoder`).
        progress: whether to show the progress bar.

    Returns:
        ``path``.
    """
    from tqdm.auto import tqdm  # deferred: only recording shows a progress bar

    fmt = os.path.splitext(path)[1].lstrip(".")
    if fmt not in FORMATS:
        raise ValueError(f"path: expected a .mp4 or .gif file name, got {path!r}")
    params = env.default_params if params is None else params
    if state_fn is None:
        from .envs.protocol import Environment  # deferred: the package imports recording before envs

        if getattr(type(env), "state", Environment.state) is Environment.state:
            raise ValueError(f"env: {type(env).__name__} has no `state(env_state, params)` method to give "
                             "a numpy plot state (see megastep_jax.plotting); pass state_fn=")
    default_state, default_plot = _default_plot_state(env, params)
    state_fn = state_fn or default_state
    plot_fn = plot_fn or default_plot
    out = rollout(env, params, policy, key, length)
    states = jax.device_get(out.state)
    obss = jax.device_get(out.obs)
    take = lambda tree, t: jax.tree_util.tree_map(lambda x: x[t], tree)
    frames = (state_fn(take(states, t), take(obss, t)) for t in range(length + 1))
    bar = tqdm(total=length + 1, desc=f"recording {os.path.basename(path)}", disable=not progress)
    if N is None:
        N = max((os.cpu_count() or 1) // 2, 1)
    if N == 1:
        with Encoder(fps=fps, format=fmt) as encoder:
            for s in frames:
                encoder(plot_fn(s))
                bar.update()
    else:
        with ParallelEncoder(plot_fn, fps=fps, N=N, format=fmt) as encoder:
            for s in frames:
                encoder(s)
                bar.update()
        encoder = encoder.encoder
    bar.close()
    return encoder.save(path)
