"""Plots of megastep_jax environments: the plan view and first-person strips.

Plotting follows megastep's split between getting a state and plotting it. Getting the
state (:func:`core_state`, or an env's ``state`` method) is fast and runs where the arrays
live; it returns a dotdict of **numpy** arrays for one env. Plotting
(:func:`plot_state`, :func:`plot_plan`, :func:`plot_images`) is slow, needs only numpy
and matplotlib, and is a plain module-level function, so it can be shipped to a pool of
worker processes (see :class:`megastep_jax.recording.ParallelEncoder`).

The state dotdict of one env, as the functions here read it (``A`` agents):

- ``scenery``: a dotdict, from :func:`scenery_state`:

  - ``lines`` (L, 2, 2) float, endpoints in metres; the first ``n_agents * 8`` are the
    agents' models (their stored coordinates are ignored), then the walls;
  - ``textures`` (T, 3) float, gamma-decoded texel colours;
  - ``texel_starts``, ``texel_widths`` (L,) int: line j owns
    ``textures[texel_starts[j]:texel_starts[j] + texel_widths[j]]``;
  - ``lights`` (N, 3) float, (x, y, intensity);
  - ``model`` (8, 2, 2) float, the agent model in the agent frame;
  - ``n_agents`` int.

- ``agents``: a dotdict with ``positions`` (A, 2) and ``angles`` (A,) in degrees.
- ``fov`` (optional, default 130): the field of view in degrees, for the wedges.
- ``obs`` (optional): a dotdict of first-person images, each (A, C, H, W) in [0, 1];
  keys named ``rgb`` (or any 3-channel image) are gamma-encoded for display, 1-channel
  images (depth ``d``) are shown as they are. Other entries (e.g. ``imu``) are skipped.
- ``seen`` (optional): (T,) bool, texels to highlight (Explorer); the others are faded.
- ``bars`` (optional): a dotdict of name -> (A,) values, drawn as one bar chart each,
  one bar per agent (Deathmatch's ``health``, ``inflicted``). A top-level ``health``
  (A,) is drawn as a bar chart too.
- ``hits`` (optional): (A, A) bool, ``[i, j]`` when agent i hit agent j on the last step
  (Deathmatch); drawn as a dashed line from i to j in i's colour.
- ``text`` (optional): a list of strings written in the plan's lower-left corner.

The agent of index ``a`` is drawn in matplotlib's colour ``C{a}`` everywhere: its wedge,
its strip's title and its bars.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from .arrdict import dotdict
from .scene import MODEL_COLORS

__all__ = [
    "BACKGROUND", "MODEL_COLOURS", "gamma_encode", "scenery_state", "core_state",
    "texel_centres", "plot_plan", "plot_images", "plot_bars", "plot_state", "figure",
]

BACKGROUND = "#c6c1b3"
"""The plan's floor colour, as in megastep's plots."""
MODEL_COLOURS = MODEL_COLORS
"""(8, 3) display colours of the agent model's lines (:data:`megastep_jax.scene.MODEL_COLORS`,
megastep's values), used when the state has no agent texels."""
WEDGE_RADIUS = 1.0
"""Radius in metres of the field-of-view wedges."""
ZOOM_RADIUS = 2.5
"""Half-width in metres of the view when zoomed on an agent."""
PAD = 1.0
"""Clearance in metres around the plan in the whole-plan view."""


def gamma_encode(x):
    """Decoded (linear) colours in [0, 1] to display colours: ``x**(1/2.2)``."""
    return np.clip(np.asarray(x, np.float64), 0, 1) ** (1 / 2.2)


def _take(x, e):
    """Indexes the env axis when there is one (leading dimension of a batch)."""
    return np.asarray(x)[e]


def scenery_state(scenery, e: int = 0) -> dotdict:
    """Extracts one env's scenery to numpy, cut down to its real lines, lights and texels.

    Args:
        scenery: a :class:`megastep_jax.state.Scenery` of E envs (fields with a leading
            env axis), or a dotdict with the same fields.
        e: the env to extract, ``0 <= e < E``.

    Returns:
        The ``scenery`` dotdict documented in the module docstring.
    """
    lines = np.asarray(scenery.lines)
    if lines.ndim != 4:
        raise ValueError(f"scenery.lines: expected shape (E, L, 2, 2), got {lines.shape}")
    n_envs = lines.shape[0]
    if not (isinstance(e, (int, np.integer)) and 0 <= e < n_envs):
        raise ValueError(f"e: expected an env index in [0, {n_envs}), got {e!r}")
    n_lines = int(_take(scenery.n_lines, e))
    n_lights = int(_take(scenery.n_lights, e))
    widths = _take(scenery.texel_widths, e)[:n_lines].astype(np.int64)
    starts = _take(scenery.texel_starts, e)[:n_lines].astype(np.int64)
    n_texels = int((starts + widths).max()) if n_lines else 0
    return dotdict(
        lines=lines[e, :n_lines].astype(np.float32),
        textures=_take(scenery.textures, e)[:n_texels].astype(np.float32),
        texel_starts=starts,
        texel_widths=widths,
        lights=_take(scenery.lights, e)[:n_lights].astype(np.float32),
        model=np.asarray(scenery.model, np.float32),
        n_agents=int(scenery.n_agents),
    )


def core_state(scenery, agents, e: int = 0, fov: float = 130.0, **extra) -> dotdict:
    """The plottable state of env ``e``: its scenery, its agents' poses and ``fov``.

    Envs call this from their ``state`` method and add ``obs``, ``seen``, ``bars`` or
    ``text`` (passed here as keyword arguments, or added to the result).

    Args:
        scenery: a Scenery of E envs.
        agents: a :class:`megastep_jax.state.Agents` of E envs (positions (E, A, 2),
            angles (E, A)).
        e: the env to extract.
        fov: field of view in degrees.
        **extra: further keys of the state; arrays are converted to numpy.

    Returns:
        A dotdict of numpy arrays, see the module docstring.
    """
    state = dotdict(
        scenery=scenery_state(scenery, e),
        agents=dotdict(positions=_take(agents.positions, e).astype(np.float32),
                       angles=_take(agents.angles, e).astype(np.float32)),
        fov=float(np.asarray(fov)),
    )
    for k, v in extra.items():
        state[k] = _numpy_tree(v)
    return state


def _numpy_tree(x):
    if isinstance(x, dict):
        return dotdict({k: _numpy_tree(v) for k, v in x.items()})
    if isinstance(x, (list, tuple, str, int, float)) or x is None:
        return x
    return np.asarray(x)


def texel_centres(lines: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """Centres of the texels of each line, in texel order.

    Args:
        lines: (L, 2, 2) endpoints.
        widths: (L,) texels per line.

    Returns:
        (sum(widths), 2) points: texel k of line j sits at fraction (k + 0.5)/w_j.
    """
    widths = np.asarray(widths, np.int64)
    if widths.sum() == 0:
        return np.zeros((0, 2), np.float32)
    owner = np.repeat(np.arange(len(widths)), widths)
    first = np.cumsum(widths) - widths
    k = np.arange(widths.sum()) - first[owner]
    s = (k + 0.5) / widths[owner]
    a, b = lines[owner, 0], lines[owner, 1]
    return (a + s[:, None] * (b - a)).astype(np.float32)


def _agent_lines(model: np.ndarray, positions: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """(A, 8, 2, 2): the model rotated by each agent's angle and moved to its position."""
    t = np.deg2rad(angles)
    rot = np.stack([np.stack([np.cos(t), -np.sin(t)], -1),
                    np.stack([np.sin(t), np.cos(t)], -1)], -2)  # (A, 2, 2)
    return np.einsum("aij,lpj->alpi", rot, model) + positions[:, None, None, :]


def _check_state(state) -> None:
    for key in ("scenery", "agents"):
        if key not in state:
            raise ValueError(f"state: expected a '{key}' entry (see megastep_jax.plotting), "
                             f"got keys {sorted(state)}")
    for key in ("lines", "textures", "texel_starts", "texel_widths", "lights", "model"):
        if key not in state["scenery"]:
            raise ValueError(f"state.scenery: expected a '{key}' entry, got {sorted(state['scenery'])}")
    pos = np.asarray(state["agents"]["positions"])
    ang = np.asarray(state["agents"]["angles"])
    if pos.ndim != 2 or pos.shape[-1] != 2 or ang.shape != pos.shape[:1]:
        raise ValueError(f"state.agents: expected positions (A, 2) and angles (A,), got "
                         f"{pos.shape} and {ang.shape}")


def plot_plan(state, ax=None, zoom: Optional[int] = None, wedge_radius: float = WEDGE_RADIUS,
              zoom_radius: float = ZOOM_RADIUS, marker_size: Optional[float] = None):
    """Draws the plan of one env seen from above.

    Walls are drawn texel by texel in their (gamma-encoded) texture colours; with
    ``state.seen`` the unseen texels are faded. Lights are yellow dots whose opacity grows
    with their intensity. Each agent is its model, in its texel colours, and a wedge of
    its field of view in colour ``C{a}``.

    Args:
        state: a numpy state dotdict of one env (module docstring).
        ax: the matplotlib axes to draw on; a new figure's axes if None.
        zoom: None for the whole plan, or an agent index to centre the view on it.
        wedge_radius: radius of the field-of-view wedges in metres.
        zoom_radius: half-width of the zoomed view in metres.
        marker_size: size of a texel dot in points^2; by default chosen from the view's
            size so that dots of neighbouring texels touch.

    Returns:
        The axes.
    """
    from matplotlib.collections import LineCollection
    from matplotlib.patches import Wedge

    _check_state(state)
    sc, ag = state["scenery"], state["agents"]
    positions = np.asarray(ag["positions"], np.float32)
    angles = np.asarray(ag["angles"], np.float32)
    n_agents = len(positions)
    if zoom is not None and not (isinstance(zoom, (int, np.integer)) and 0 <= zoom < n_agents):
        raise ValueError(f"zoom: expected None or an agent index in [0, {n_agents}), got {zoom!r}")
    fov = float(state.get("fov", 130.0))
    lines = np.asarray(sc["lines"], np.float32)
    textures = np.asarray(sc["textures"], np.float32)
    starts = np.asarray(sc["texel_starts"], np.int64)
    widths = np.asarray(sc["texel_widths"], np.int64)
    n_model = 8 * int(sc.get("n_agents", n_agents))
    if ax is None:
        ax = figure(figsize=(6, 6)).add_subplot(1, 1, 1)

    ax.set_facecolor(BACKGROUND)
    ax.set_aspect(1)
    ax.set_xticks([])
    ax.set_yticks([])

    walls = lines[n_model:]
    if zoom is None:
        pts = np.concatenate([walls.reshape(-1, 2), positions], 0)
        lo, hi = (pts.min(0), pts.max(0)) if len(pts) else (np.zeros(2), np.ones(2))
        centre, half = (lo + hi) / 2, (hi - lo).max() / 2 + PAD
    else:
        centre, half = positions[zoom], zoom_radius
    ax.set_xlim(centre[0] - half, centre[0] + half)
    ax.set_ylim(centre[1] - half, centre[1] + half)
    if marker_size is None:
        # a texel is 5 cm; the axes are ~ 5 inches wide, 72 points an inch
        pts_per_m = 72 * 5 / (2 * half)
        marker_size = float(np.clip((0.06 * pts_per_m) ** 2, 0.5, 30))

    # walls, texel by texel
    wall_widths = widths[n_model:]
    if wall_widths.sum():
        xy = texel_centres(walls, wall_widths)
        idx = np.concatenate([np.arange(s, s + w) for s, w in zip(starts[n_model:], wall_widths)])
        rgba = np.ones((len(idx), 4))
        rgba[:, :3] = gamma_encode(textures[idx])
        if state.get("seen") is not None:
            seen = np.asarray(state["seen"], bool)[idx]
            rgba[~seen, 3] = 0.25
        ax.scatter(xy[:, 0], xy[:, 1], s=marker_size, c=rgba, marker="o", linewidths=0, zorder=2)

    lights = np.asarray(sc["lights"], np.float32).reshape(-1, 3)
    if len(lights):
        alpha = np.clip(lights[:, 2] / max(lights[:, 2].max(), 1e-6), 0.2, 1.0)
        rgba = np.zeros((len(lights), 4))
        rgba[:, :3] = (1.0, 1.0, 0.0)
        rgba[:, 3] = alpha
        ax.scatter(lights[:, 0], lights[:, 1], s=max(4 * marker_size, 10), c=rgba, linewidths=0, zorder=3)

    # agents: wedge of view, then the model in its own colours
    model = np.asarray(sc["model"], np.float32)
    placed = _agent_lines(model, positions, angles)
    for a in range(n_agents):
        ax.add_patch(Wedge(tuple(positions[a]), wedge_radius, angles[a] - fov / 2, angles[a] + fov / 2,
                           facecolor=f"C{a}", alpha=0.15, edgecolor="none", zorder=1))
        colours = np.empty((8, 3))
        for k in range(8):
            j = 8 * a + k
            w = widths[j] if j < len(widths) else 0
            colours[k] = (gamma_encode(textures[starts[j]:starts[j] + w].mean(0))
                          if w else MODEL_COLOURS[k])
        ax.add_collection(LineCollection(placed[a], colors=colours, linewidths=1.5, zorder=4))

    hits = state.get("hits")
    if hits is not None:
        hits = np.asarray(hits, bool)
        if hits.shape != (n_agents, n_agents):
            raise ValueError(f"state.hits: expected shape ({n_agents}, {n_agents}), got {hits.shape}")
        for i, j in zip(*np.nonzero(hits)):
            ax.plot(*positions[[i, j]].T, color=f"C{i}", linestyle="--", linewidth=1, zorder=5)

    text = state.get("text")
    if text:
        ax.annotate("\n".join(text), (0.01, 0.01), xycoords="axes fraction", ha="left", va="bottom",
                    fontsize="medium")
    return ax


def _as_display(key: str, image: np.ndarray) -> np.ndarray:
    """(C, H, W) observation -> (H, W, 3) display image in [0, 1]."""
    image = np.asarray(image, np.float64)
    if image.shape[0] == 3:
        return gamma_encode(image).transpose(1, 2, 0)
    return np.repeat(np.clip(image[:1], 0, 1), 3, 0).transpose(1, 2, 0)


def plot_images(images, axes: Optional[Sequence] = None, fig=None):
    """Draws each agent's first-person images as stacked strips, one axes per agent.

    Args:
        images: a dotdict of name -> (A, C, H, W) arrays in [0, 1]. 3-channel images are
            gamma-encoded, 1-channel images shown in grey; other shapes are skipped.
        axes: A matplotlib axes, one per agent; new ones (in one column) if None.
        fig: the figure to add axes to when ``axes`` is None.

    Returns:
        The list of axes. Agent ``a``'s axes has title ``agent #a`` in colour ``C{a}`` and
        one band per image, labelled with its name on the y axis.
    """
    images = {k: np.asarray(v) for k, v in images.items()
              if np.ndim(v) == 4 and np.shape(v)[1] in (1, 3)}
    if not images:
        raise ValueError("images: expected at least one (A, C, H, W) array with C in (1, 3)")
    n_agents = {v.shape[0] for v in images.values()}
    if len(n_agents) != 1:
        raise ValueError(f"images: expected one number of agents, got shapes "
                         f"{ {k: v.shape for k, v in images.items()} }")
    (n_agents,) = n_agents
    if axes is None:
        fig = figure(figsize=(6, 2 * n_agents)) if fig is None else fig
        axes = [fig.add_subplot(n_agents, 1, a + 1) for a in range(n_agents)]
    if len(axes) != n_agents:
        raise ValueError(f"axes: expected {n_agents} axes, one per agent, got {len(axes)}")
    for a, ax in enumerate(axes):
        for band, (k, v) in enumerate(images.items()):
            w = v.shape[-1]
            ax.imshow(_as_display(k, v[a]), extent=(0, w, band + 1, band), aspect="auto",
                      interpolation="nearest")
        ax.set_xlim(0, max(v.shape[-1] for v in images.values()))
        ax.set_ylim(len(images), 0)
        ax.set_xticks([])
        ax.set_yticks(np.arange(len(images)) + 0.5)
        ax.set_yticklabels(list(images))
        ax.set_title(f"agent #{a}", color=f"C{a}", fontweight="bold")
    return list(axes)


def plot_bars(values: np.ndarray, ax, label: str, lim: Optional[tuple] = None):
    """A horizontal bar per agent, agent 0 at the top, in the agents' colours."""
    values = np.asarray(values, np.float64).reshape(-1)
    n = len(values)
    ax.barh(np.arange(n), values, color=[f"C{a}" for a in range(n)])
    ax.set_ylim(n - 0.5, -0.5)
    ax.set_yticks([])
    ax.set_ylabel(label)
    if lim is None and np.all(values == 0):
        lim = (0, 1)  # matplotlib would centre an empty range on 0
    if lim is not None:
        ax.set_xlim(*lim)
    return ax


def figure(figsize=(12, 6), dpi: int = 100):
    """A matplotlib Figure with an Agg canvas, not registered with pyplot.

    Figures made this way are freed when dropped, so a long recording does not pile them
    up, and they work in worker processes without a display.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def plot_state(state, fig=None, zoom: Optional[int] = None):
    """megastep's standard env figure: plan on the left, strips on the right, bars below.

    Args:
        state: a numpy state dotdict of one env (module docstring).
        fig: a matplotlib figure to draw into; a new Agg figure if None.
        zoom: passed to :func:`plot_plan`.

    Returns:
        The figure.
    """
    _check_state(state)
    n_agents = len(np.asarray(state["agents"]["positions"]))
    bars = dict(state.get("bars") or {})
    if state.get("health") is not None and "health" not in bars:
        bars = {"health": state["health"], **bars}
    obs = state.get("obs") or {}
    strips = {k: v for k, v in obs.items() if np.ndim(v) == 4 and np.shape(v)[1] in (1, 3)}

    if fig is None:
        fig = figure(figsize=(12, 6) if not bars else (10, 6.5))
    n_bars = len(bars)
    if n_bars:
        # plan over the bars on the left, a column of strips on the right
        grid = fig.add_gridspec(4, n_bars + 1, height_ratios=[1, 1, 1, 0.8])
        plan = fig.add_subplot(grid[:3, :n_bars])
        strip_cell = grid[:, n_bars]
    else:
        grid = fig.add_gridspec(1, 2)
        plan = fig.add_subplot(grid[0, 0])
        strip_cell = grid[0, 1]
    plot_plan(state, ax=plan, zoom=zoom)
    if strips:
        sub = strip_cell.subgridspec(n_agents, 1, hspace=0.6)
        plot_images(strips, axes=[fig.add_subplot(sub[a]) for a in range(n_agents)])
    for i, (name, values) in enumerate(bars.items()):
        plot_bars(values, fig.add_subplot(grid[3, i]), name, lim=(0, 1) if name == "health" else None)
    if n_bars:  # room for the bars' labels and ticks
        fig.subplots_adjust(left=0.05, right=0.98, top=0.95, bottom=0.05, wspace=0.3, hspace=0.3)
    else:
        fig.subplots_adjust(left=0.01, right=0.99, top=0.95, bottom=0.04, wspace=0.15)
    return fig
