"""Actor-critic networks: an intake built from the observation space, an MLP, LSTM or GRU core,
and policy and value heads built from the action space.

The network runs on sequences: ``obs`` leaves are ``(T, B, *feature)``, ``reset`` is
``(T, B)`` and true where ``obs[t]`` is the first observation of an episode. The LSTM
and the GRU zero their carry at those steps, so one call can span several episodes of a stream. A
rollout calls it with T = 1 each step; the PPO loss calls it on whole minibatch
sequences, starting from the carry stored at the start of the rollout.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from megastep_jax import spaces

from . import heads, matmul
from .initializers import orthogonal

__all__ = ["ActorCritic", "GRUCore", "LSTMCore", "MLPCore", "CORES", "INTAKES", "PREVIOUS_KEYS", "UnfoldConv1D",
           "gru_scan", "UnfoldImageIntake", "StackedIntake", "intake", "previous_space", "add_previous",
           "uses_previous", "stack_history"]


class MLPCore(nn.Module):
    """A ReLU layer with no memory; its carry is an empty tuple."""

    width: int

    @nn.compact
    def __call__(self, carry, x: jax.Array, reset: jax.Array):
        del reset
        y = nn.relu(nn.Dense(self.width, kernel_init=orthogonal(math.sqrt(2.0)),
                             dot_general=matmul.dot_general)(x))
        return carry, y

    @staticmethod
    def initial_carry(batch_shape: tuple[int, ...], width: int):
        del batch_shape, width
        return ()


class LSTMCore(nn.Module):
    """An LSTM scanned over time that starts afresh wherever ``reset`` is true.

    Call: ``carry ((B, width), (B, width)), x (T, B, width), reset (T, B)`` ->
    ``(carry, y (T, B, width))``.
    """

    width: int

    @functools.partial(nn.scan, variable_broadcast="params", split_rngs={"params": False},
                       in_axes=0, out_axes=0)
    @nn.compact
    def __call__(self, carry, x: jax.Array, reset: jax.Array):
        zeros = jax.tree_util.tree_map(jnp.zeros_like, carry)
        carry = jax.tree_util.tree_map(lambda z, c: jnp.where(reset[..., None], z, c), zeros, carry)
        carry, y = nn.OptimizedLSTMCell(self.width, recurrent_kernel_init=orthogonal())(carry, x)
        return carry, y

    @staticmethod
    def initial_carry(batch_shape: tuple[int, ...], width: int):
        z = jnp.zeros((*batch_shape, width), jnp.float32)
        return (z, z)


def _gates(xr, xz, xn, hr, hz, hn):
    """The GRU's reset, update and candidate gates from the input projections ``x*`` and
    the recurrent ones ``h*`` (``hn`` with its bias): ``(r, z, n)``."""
    r = jax.nn.sigmoid(xr + hr)
    z = jax.nn.sigmoid(xz + hz)
    return r, z, jnp.tanh(xn + r * hn)


def _gru_gates(kernel, bias, xp, h):
    """The gates for input projections ``xp (..., 3w)`` and carries ``h (..., w)`` (already
    zeroed where an episode starts), all steps at once: ``(r, z, n, hn)``, ``hn`` being the
    candidate's recurrent term with its bias."""
    w = kernel.shape[0]
    hp = h @ kernel
    hn = hp[..., 2 * w:] + bias
    r, z, n = _gates(xp[..., :w], xp[..., w:2 * w], xp[..., 2 * w:], hp[..., :w], hp[..., w:2 * w], hn)
    return r, z, n, hn


def gru_scan(kernel: jax.Array, bias: jax.Array, h0: jax.Array, xp: jax.Array, reset: jax.Array):
    """A GRU over a sequence (see :class:`GRUCore`), differentiated by hand.

    Args:
        kernel: ``(w, 3w)`` recurrent kernel (reset, update, candidate gates).
        bias: ``(w,)`` the candidate's recurrent bias.
        h0: ``(*B, w)`` carry before the first step.
        xp: ``(T, *B, 3w)`` input projections (with their biases).
        reset: ``(T, *B)`` bool, the carry is zeroed before step ``t``.

    Returns:
        ``(carry (*B, w), y (T, *B, w))``, ``y[t]`` the carry after step ``t``.

    Autodiff of the scan keeps every gate of every step and runs some forty small
    operations per step backwards. Here the forward pass keeps only its outputs; the
    backward pass recomputes all the gates at once from them (one matrix product over the
    whole sequence), runs a reverse scan of one product and two elementwise steps per step
    for the carry's gradient, and forms the weights' gradients as whole-sequence products
    (T 32, B 16, width 64, one core: value and gradient 1,369 -> 823 us). Being a
    ``custom_vjp``, it has reverse-mode derivatives only (``jax.grad``, ``jax.vjp``;
    ``jax.jvp`` raises). A ``custom_jvp`` written as a linear scan that reverse mode
    transposes worked too, but its transposed loop was 1.5-2 ms slower per update, so
    networks that need forward mode should use the LSTM or MLP core.
    """
    return _gru_scan(kernel, bias, h0, xp, jnp.asarray(reset, bool))


@jax.custom_vjp
def _gru_scan(kernel, bias, h0, xp, reset):
    # The three gates' inputs enter the scan as separate arrays: slicing them inside the
    # step's fused elementwise kernel kept XLA's CPU backend from vectorising it (2.7x
    # slower forward).
    w = kernel.shape[0]
    kr, kz, kn = kernel[:, :w], kernel[:, w:2 * w], kernel[:, 2 * w:]

    def step(h, inputs):
        xr, xz, xn, rt = inputs
        h = jnp.where(rt[..., None], 0.0, h)
        _, z, n = _gates(xr, xz, xn, h @ kr, h @ kz, h @ kn + bias)
        h = (1.0 - z) * n + z * h
        return h, h

    return jax.lax.scan(step, h0, (xp[..., :w], xp[..., w:2 * w], xp[..., 2 * w:], reset))


def _gru_fwd(kernel, bias, h0, xp, reset):
    carry, y = _gru_scan(kernel, bias, h0, xp, reset)
    return (carry, y), (kernel, bias, h0, xp, reset, y)


def _gru_bwd(residuals, cotangents):
    kernel, bias, h0, xp, reset, y = residuals
    g_carry, g_y = cotangents
    w = kernel.shape[0]
    mask = ~reset[..., None]
    h_prev = jnp.concatenate([h0[None], y[:-1]], axis=0) * mask  # each step's carry, after the reset
    r, z, n, hn = _gru_gates(kernel, bias, xp, h_prev)
    # With a = dL/dh' (h' the step's output): dL/d(candidate's pre-activation) = a * dn_pre,
    # and the gradients of the three gates' pre-activations are a times these:
    dn_pre = (1.0 - z) * (1.0 - n * n)
    dr_pre = dn_pre * hn * r * (1.0 - r)
    dz_pre = (h_prev - n) * z * (1.0 - z)
    coef_n = dn_pre * r
    kernel_t = kernel.T

    def back(c, inputs):
        gy, zt, cr, cz, cn, mt = inputs
        a = gy + c
        c = (a * zt + jnp.concatenate([a * cr, a * cz, a * cn], axis=-1) @ kernel_t) * mt
        return c, a

    last = g_y[-1] + g_carry  # the carry out is y[-1]
    g_y = jnp.concatenate([g_y[:-1], last[None]], axis=0)
    g_h0, a = jax.lax.scan(back, jnp.zeros_like(h0), (g_y, z, dr_pre, dz_pre, coef_n, mask),
                           reverse=True)
    g_r, g_z, g_n = a * dr_pre, a * dz_pre, a * dn_pre
    g_hp = jnp.concatenate([g_r, g_z, a * coef_n], axis=-1)
    g_kernel = matmul.weight_grad(h_prev, g_hp)
    g_bias = jnp.sum((a * coef_n).reshape(-1, w), axis=0)
    return g_kernel, g_bias, g_h0, jnp.concatenate([g_r, g_z, g_n], axis=-1), None


_gru_scan.defvjp(_gru_fwd, _gru_bwd)


class GRUCore(nn.Module):
    """A GRU scanned over time that starts afresh wherever ``reset`` is true.

    The gates' input projections do not depend on the carry, so they are one matrix
    product over the whole sequence, outside the scan; each step of the scan is one
    ``(B, width) x (width, 3 width)`` product. With ``h`` the carry after the reset
    (zeros where ``reset[t]``), ``xr, xz, xn`` the input projections (with their biases)
    and ``hr, hz, hn`` the recurrent ones (``hn`` with its own bias):
    ``r = sigmoid(xr + hr)``, ``z = sigmoid(xz + hz)``, ``n = tanh(xn + r * hn)``,
    ``h' = (1 - z) * n + z * h``; the output is ``h'``. The backward pass is written by
    hand (:func:`gru_scan`), so the core has reverse-mode derivatives only.

    Call: ``carry (B, width), x (T, B, F), reset (T, B)`` -> ``(carry, y (T, B, width))``
    (``B`` may be several axes).
    """

    width: int

    @nn.compact
    def __call__(self, carry, x: jax.Array, reset: jax.Array):
        w = self.width
        xp = nn.Dense(3 * w, kernel_init=orthogonal(), dot_general=matmul.dot_general,
                      name="input")(x)    # (T, *B, 3w)
        kernel = self.param("recurrent_kernel", orthogonal(), (w, 3 * w))
        bias = self.param("recurrent_bias", nn.initializers.zeros, (w,))   # the candidate's
        return gru_scan(kernel, bias, carry, xp, reset)

    @staticmethod
    def initial_carry(batch_shape: tuple[int, ...], width: int):
        return jnp.zeros((*batch_shape, width), jnp.float32)


CORES = {"mlp": MLPCore, "lstm": LSTMCore, "gru": GRUCore}


def stack_history(x: jax.Array, history: jax.Array, reset: jax.Array):
    """Each step's features next to those of the K - 1 steps before it in its episode.

    A frame stack over the intake's features, without a scan: lag ``j`` of step ``t`` is
    step ``t - j``'s features where no episode started in ``(t - j, t]``, else zeros;
    before the sequence it comes from ``history``, which a previous call returned (already
    zeroed relative to its own last step).

    Args:
        x: ``(T, *B, F)`` features.
        history: ``(*B, K - 1, F)`` features of the K - 1 steps before ``x[0]``, the most
            recent first (zeros for fresh streams).
        reset: ``(T, *B)`` bool, true where ``x[t]`` starts an episode.

    Returns:
        ``(stacked (T, *B, K * F)`` (lag 0, 1, ..., K - 1 along the features),
        ``history (*B, K - 1, F)`` for the step after ``x[-1]``).
    """
    T, k1 = x.shape[0], history.shape[-2]
    if k1 == 0:
        return x, history
    seg = jnp.cumsum(jnp.asarray(reset, jnp.int32), axis=0)  # episode index within the call
    past = jnp.moveaxis(history[..., ::-1, :], -2, 0).astype(x.dtype)  # (K-1, *B, F) oldest first
    full = jnp.concatenate([past, x], axis=0)
    seg_full = jnp.concatenate([jnp.zeros((k1, *seg.shape[1:]), seg.dtype), seg], axis=0)
    lags = [x]
    for j in range(1, k1 + 1):
        same = seg_full[k1 - j:k1 - j + T] == seg
        lags.append(jnp.where(same[..., None], full[k1 - j:k1 - j + T], 0.0))
    return jnp.concatenate(lags, axis=-1), jnp.stack([lag[-1] for lag in lags[:k1]], axis=-2)


# -- image intakes as matrix products ------------------------------------------------
# XLA's CPU convolutions are slow for the few channels of a pixel strip (3 colours, 8-16
# features). The same convolution as strided slices ("unfold") and one matrix product is
# several times faster there, and has the same parameters and outputs as ``nn.Conv``.

class UnfoldConv1D(nn.Module):
    """A 1D convolution with SAME padding as patches times a kernel.

    Parameters (``kernel`` (k, C, F), ``bias`` (F,)) and outputs equal ``nn.Conv(F, (k,),
    strides=(s,), padding="SAME")``'s.

    Call: ``(N, W, C) -> (N, ceil(W / s), F)``.
    """

    features: int
    kernel_size: int
    stride: int
    kernel_init: Any = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        n, w, c = x.shape
        k, s = self.kernel_size, self.stride
        out = -(-w // s)
        pad = max((out - 1) * s + k - w, 0)
        x = jnp.pad(x, ((0, 0), (pad // 2, pad - pad // 2), (0, 0)))
        if k % s == 0:
            # The patches are k / s consecutive blocks of s pixels: a reshape and k / s
            # slices, cheaper (and cheaper to differentiate) than k strided slices.
            blocks = x[:, :(out - 1) * s + k].reshape(n, out - 1 + k // s, s * c)
            patches = jnp.concatenate([blocks[:, i:i + out] for i in range(k // s)], axis=-1)
        else:
            patches = jnp.stack([x[:, i:i + (out - 1) * s + 1:s] for i in range(k)], axis=2)
        kernel = self.param("kernel", self.kernel_init, (k, c, self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        return matmul.matmul(patches.reshape(n, out, k * c), kernel.reshape(k * c, self.features)) + bias


class UnfoldImageIntake(nn.Module):
    """:class:`agents.heads.MultiImageIntake` with :class:`UnfoldConv1D` convolutions.

    Same attributes, parameter names and shapes, and outputs (to float rounding); faster
    on CPU. Call: ``(..., C, H, W) -> (..., width)``.
    """

    space: Any
    width: int
    conv_features: Sequence[int] = (32, 64, 128)
    conv_kernels: Sequence[int] = (8, 4, 3)
    conv_strides: Sequence[int] = (4, 2, 2)

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        s = self.space
        if obs.shape[obs.ndim - 3:] != (s.channels, s.height, s.width):
            raise ValueError(f"obs: expected an array ending in shape "
                             f"{(s.channels, s.height, s.width)}, got shape {tuple(obs.shape)}")
        if not len(self.conv_features) == len(self.conv_kernels) == len(self.conv_strides):
            raise ValueError(
                "conv_features, conv_kernels, conv_strides: expected sequences of one length, "
                f"got {len(self.conv_features)}, {len(self.conv_kernels)}, {len(self.conv_strides)}")
        if obs.dtype == jnp.uint8:
            obs = obs / 255.0
        batch = obs.shape[:-3]
        x = jnp.swapaxes(obs.astype(jnp.float32).reshape((-1, s.channels * s.height, s.width)), -1, -2)
        for i, (f, k, st) in enumerate(zip(self.conv_features, self.conv_kernels, self.conv_strides)):
            x = nn.relu(UnfoldConv1D(f, k, st, kernel_init=orthogonal(_RELU_GAIN), name=f"Conv_{i}")(x))
        x = x.reshape((*batch, -1))
        x = nn.relu(_dense(self.width, name="Dense_0")(x))
        return nn.relu(_dense(self.width, name="Dense_1")(x))


class UnfoldConcatIntake(nn.Module):
    """:class:`agents.heads.ConcatIntake` whose image intakes are :class:`UnfoldImageIntake`."""

    space: Any
    width: int
    image_kwargs: tuple = ()

    @nn.compact
    def __call__(self, obs) -> jax.Array:
        heads.check_dict_obs(obs, self.space)
        ys = [intake(s, self.width, "unfold", self.image_kwargs, name=f"intake_{k}")(obs[k])
              for k, s in self.space]
        return nn.relu(_dense(self.width, name="Dense_0")(jnp.concatenate(ys, axis=-1)))


class StackedIntake(nn.Module):
    """A dict intake whose image observations of one height and width share ONE strip.

    Explorer's ``rgb`` (3, 1, W) and ``d`` (1, 1, W) are the same pixels seen two ways:
    stacked along channels into a (4, 1, W) strip, one :class:`UnfoldImageIntake` reads
    them (named ``intake_<first key>+<second key>...``), where :class:`UnfoldConcatIntake`
    runs one per key, about twice the convolution work. Other keys get their own intake;
    the features are concatenated and mixed by a ReLU layer. Images of different sizes
    form one group per (height, width), in key order.

    With ``merge_vectors`` the vector observations (``MultiVector``) are likewise
    concatenated into one vector read by one two-layer MLP (``intake_<key>+<key>...``),
    where otherwise each has its own: fewer, larger matrix products.

    Call: ``obs`` dict of ``(..., C_k, H, W)`` images and other leaves -> ``(..., width)``.
    """

    space: Any
    width: int
    image_kwargs: tuple = ()
    merge_vectors: bool = False

    @nn.compact
    def __call__(self, obs) -> jax.Array:
        heads.check_dict_obs(obs, self.space)
        groups: dict = {}  # (height, width) -> keys, in key order
        for k, s in self.space:
            if isinstance(s, spaces.MultiImage):
                groups.setdefault((s.height, s.width), []).append(k)
        vectors = [k for k, s in self.space if isinstance(s, spaces.MultiVector)]
        ys = []
        done = set()
        for k, s in self.space:
            if k in done:
                continue
            if self.merge_vectors and k in vectors:
                parts = [self.space_of(j) for j in vectors]
                for j, sj in zip(vectors, parts):
                    if jnp.ndim(obs[j]) < 1 or jnp.shape(obs[j])[-1] != sj.dim:
                        raise ValueError(f"obs: expected {j!r} ending in shape ({sj.dim},), "
                                         f"got shape {tuple(jnp.shape(obs[j]))}")
                merged = spaces.MultiVector(s.n_agents, sum(p.dim for p in parts))
                x = jnp.concatenate([jnp.asarray(obs[j], jnp.float32) for j in vectors], axis=-1)
                ys.append(heads.MultiVectorIntake(merged, self.width, name="intake_" + "+".join(vectors))(x))
                done.update(vectors)
                continue
            if isinstance(s, spaces.MultiImage):
                keys = groups[(s.height, s.width)]
                parts = [self.space_of(j) for j in keys]
                for j, sj in zip(keys, parts):
                    _check_image("obs", obs[j], sj, j)
                merged = spaces.MultiImage(s.n_agents, sum(p.channels for p in parts), s.height,
                                           s.width)
                x = jnp.concatenate([_unit(obs[j]) for j in keys], axis=-3)
                ys.append(UnfoldImageIntake(merged, self.width, **dict(self.image_kwargs),
                                            name="intake_" + "+".join(keys))(x))
                done.update(keys)
            else:
                ys.append(intake(s, self.width, "unfold", self.image_kwargs,
                                 name=f"intake_{k}")(obs[k]))
        return nn.relu(_dense(self.width, name="Dense_0")(jnp.concatenate(ys, axis=-1)))

    def space_of(self, key):
        return dict(self.space)[key]


def _unit(x: jax.Array) -> jax.Array:
    """Pixels as float32, uint8 scaled to [0, 1] (as the image intakes do)."""
    return x / 255.0 if x.dtype == jnp.uint8 else x.astype(jnp.float32)


def _check_image(name: str, x: jax.Array, s, key: str) -> None:
    want = (s.channels, s.height, s.width)
    if x.ndim < 3 or tuple(x.shape[x.ndim - 3:]) != want:
        raise ValueError(f"{name}: expected {key!r} ending in shape {want}, got shape {tuple(x.shape)}")


_RELU_GAIN = math.sqrt(2.0)


def _dense(features: int, gain: float = _RELU_GAIN, name: str | None = None) -> nn.Dense:
    return nn.Dense(features, kernel_init=orthogonal(gain), bias_init=nn.initializers.zeros,
                    dot_general=matmul.dot_general, name=name)


INTAKES = ("conv", "unfold", "stacked", "merged")


def intake(space, width: int, kind: str = "unfold", image_kwargs: tuple = (),
           name: str | None = None) -> nn.Module:
    """The intake for an observation space: ``heads.intake``'s, or with ``kind="unfold"``
    its image convolutions as matrix products (same parameters, faster on CPU), or with
    ``kind="stacked"`` a dict's same-sized images stacked into one strip
    (:class:`StackedIntake`; other spaces as ``"unfold"``), or with ``kind="merged"`` that
    and its vectors concatenated into one (``StackedIntake(merge_vectors=True)``)."""
    if kind not in INTAKES:
        raise ValueError(f"intake: expected one of {INTAKES}, got {kind!r}")
    space = heads.freeze_space(space)
    if kind in ("stacked", "merged") and isinstance(space, tuple) and space and all(
            isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str) for p in space):
        return StackedIntake(space, width, tuple(image_kwargs), merge_vectors=kind == "merged",
                             name=name)
    if kind in ("stacked", "merged"):
        kind = "unfold"
    if kind == "unfold" and isinstance(space, spaces.MultiImage):
        return UnfoldImageIntake(space, width, **dict(image_kwargs), name=name)
    if kind == "unfold" and isinstance(space, tuple) and space and all(
            isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str) for p in space):
        return UnfoldConcatIntake(space, width, tuple(image_kwargs), name=name)
    return heads.intake(space, width, image_kwargs=image_kwargs, name=name)


# -- the previous action and reward as inputs ------------------------------------------
# A cheap memory for a memoryless core: each stream's action and reward of the step before
# (zeros at an episode's first observation) join the observations as two more keys. The
# agent (rollout, evaluation, video) adds them to the env's observations; the env is not
# changed.

PREVIOUS_KEYS = ("prev_action", "prev_reward")


def _action_heads(action_space) -> list:
    space = heads.freeze_space(action_space)
    if isinstance(space, spaces.MultiDiscrete):
        return [(None, space)]
    if space and heads._is_items(space) and all(isinstance(s, spaces.MultiDiscrete) for _, s in space):
        return list(space)
    raise ValueError(f"action_space: expected a MultiDiscrete or a dict of them, got {action_space!r}")


def previous_space(obs_space, action_space):
    """The observation space with the previous action and reward: a dict of the env's keys
    and ``prev_action`` ``MultiVector(A, total actions)`` (one-hot per head, concatenated)
    and ``prev_reward`` ``MultiVector(A, 1)``.

    Raises:
        ValueError: if ``obs_space`` is not a dict, already has those keys, or the action
            space is not MultiDiscrete heads.
    """
    items = heads.freeze_space(obs_space)
    if not heads._is_items(items):
        raise ValueError(f"obs_space: expected a dict of spaces, got {obs_space!r}")
    if any(k in PREVIOUS_KEYS for k, _ in items):
        raise ValueError(f"obs_space: already has a key of {PREVIOUS_KEYS}")
    acts = _action_heads(action_space)
    n_agents = acts[0][1].n_agents
    out = dict(items)
    out["prev_action"] = spaces.MultiVector(n_agents, sum(s.n_actions for _, s in acts), 0.0, 1.0)
    out["prev_reward"] = spaces.MultiVector(n_agents, 1)
    return out


def add_previous(obs, action, reward: jax.Array, first: jax.Array, action_space):
    """``obs`` with ``prev_action`` and ``prev_reward`` (see :func:`previous_space`).

    Args:
        obs: dict of the env's observations, leaves ``(*batch, A, ...)``.
        action: the action taken before ``obs``, a tree like the action space of int
            ``(*batch, A)`` (or the bare array for a MultiDiscrete space); None for none
            (fresh streams).
        reward: ``(*batch, A)`` reward received with ``obs``.
        first: ``(*batch, A)`` bool, ``obs`` starts an episode: both inputs are zeros there.
        action_space: the env's action space.

    Returns:
        A dict with the env's keys and ``prev_action`` float32 ``(*batch, A, total actions)``,
        ``prev_reward`` float32 ``(*batch, A, 1)``.
    """
    acts = _action_heads(action_space)
    first = jnp.asarray(first, bool)
    if action is None:
        parts = [jnp.zeros((*first.shape, s.n_actions), jnp.float32) for _, s in acts]
    else:
        parts = [jax.nn.one_hot(action if k is None else action[k], s.n_actions, dtype=jnp.float32)
                 for k, s in acts]
    keep = (~first)[..., None]
    out = dict(obs)
    out["prev_action"] = jnp.concatenate(parts, axis=-1) * keep
    out["prev_reward"] = jnp.where(keep, jnp.asarray(reward, jnp.float32)[..., None], 0.0)
    return type(obs)(out) if isinstance(obs, dict) and type(obs) is not dict else out


def uses_previous(network) -> bool:
    """Whether ``network`` was built for :func:`previous_space`'s observations."""
    space = network.obs_space
    return heads._is_items(space) and any(k == PREVIOUS_KEYS[0] for k, _ in space)


class ActorCritic(nn.Module):
    """Intake -> core -> (policy logits, value), sharing the intake and the core.

    Attributes:
        obs_space: the env's observation space, a space or, for a dict of spaces, a tuple
            of (key, space) pairs: build with :meth:`from_spaces` to convert.
        action_space: the env's action space, likewise.
        width: features of the intake, core and heads.
        core: ``"lstm"``, ``"gru"`` or ``"mlp"``.
        image_kwargs: (name, value) pairs for the image intakes (see :func:`heads.intake`).
        intake: ``"unfold"`` (image convolutions as matrix products, fast on CPU) or
            ``"conv"`` (``nn.Conv``), the same parameters either way; or ``"stacked"``
            (a dict's same-sized images through one strip, :class:`StackedIntake`), or
            ``"merged"`` (that, and its vectors through one MLP).
        critic_keys: keys of a dict observation space that the critic alone sees
            (asymmetric actor-critic): they are left out of the intake, so the policy never
            depends on them, and join the core's output on the value's side only
            (flattened, through a ReLU layer, then mixed with it by another).
        stack: the core sees the intake's features of this many steps, the current one
            and those before it in the episode (:func:`stack_history`; zeros before the
            episode's first step); 1 for the current step alone. With ``stack > 1`` the
            carry is ``(core carry, history (..., stack - 1, width))``.
        obs_norm: (key, shift, scale) triples: the network reads a dict observation's
            ``key`` as ``(obs[key] - shift) / scale`` (fixed input normalisation, part of
            the network, so evaluation and videos see the same inputs); () for none.

    Call: ``(carry, obs (T, B, ...), reset (T, B))`` -> ``(carry, logits, value (T, B))``,
    logits being a tree of ``(T, B, n_actions)`` log-probabilities shaped like the action
    space.
    """

    obs_space: Any
    action_space: Any
    width: int = 128
    core: str = "lstm"
    image_kwargs: tuple = ()
    intake: str = "unfold"
    critic_keys: tuple = ()
    stack: int = 1
    obs_norm: tuple = ()

    @nn.compact
    def __call__(self, carry, obs, reset: jax.Array):
        if self.obs_norm:
            obs = dict(obs)
            for k, shift, scale in self.obs_norm:
                obs[k] = (obs[k] - jnp.float32(shift)) / jnp.float32(scale)
        space, seen = self.obs_space, obs
        if self.critic_keys:
            space = tuple((k, s) for k, s in self.obs_space if k not in self.critic_keys)
            heads.check_dict_obs(obs, self.obs_space)
            seen = {k: obs[k] for k, _ in space}
        x = intake(space, self.width, self.intake, self.image_kwargs, name="intake")(seen)
        if self.stack > 1:
            carry, history = carry
            x, history = stack_history(x, history, reset)
        carry, y = CORES[self.core](self.width, name="core")(carry, x, reset)
        if self.stack > 1:
            carry = (carry, history)
        logits = heads.output(self.action_space, self.width, name="policy")(y)
        v = y
        if self.critic_keys:
            lead = jnp.shape(reset)
            privileged = jnp.concatenate(
                [jnp.reshape(obs[k], (*lead, -1)).astype(jnp.float32) for k in self.critic_keys], -1)
            p = nn.relu(_dense(self.width, name="critic_intake")(privileged))
            v = nn.relu(_dense(self.width, name="critic_mix")(jnp.concatenate([y, p], -1)))
        value = heads.ValueOutput(self.width, name="value")(v)
        return carry, logits, value

    def initial_carry(self, batch_shape: tuple[int, ...]):
        """The carry of fresh streams: zeros for the LSTM and the GRU, ``()`` for the MLP; with
        ``stack > 1``, that and a zero history ``(*batch_shape, stack - 1, width)``."""
        carry = CORES[self.core].initial_carry(tuple(batch_shape), self.width)
        if self.stack > 1:
            return (carry, jnp.zeros((*batch_shape, self.stack - 1, self.width), jnp.float32))
        return carry

    @classmethod
    def from_spaces(cls, obs_space, action_space, **kwargs) -> "ActorCritic":
        """Builds the network for an env's spaces (dicts keep their key order)."""
        return cls(heads.freeze_space(obs_space), heads.freeze_space(action_space), **kwargs)

    def __post_init__(self):
        if self.intake not in INTAKES:
            raise ValueError(f"intake: expected one of {INTAKES}, got {self.intake!r}")
        if isinstance(self.stack, bool) or not isinstance(self.stack, int) or self.stack <= 0:
            raise ValueError(f"stack: expected a positive int, got {self.stack!r}")
        if self.core not in CORES:
            raise ValueError(f"core: expected one of {sorted(CORES)}, got {self.core!r}")
        keys = [k for k, _ in self.obs_space] if heads._is_items(self.obs_space) else []
        if not isinstance(self.obs_norm, tuple) or any(
                not (isinstance(t, tuple) and len(t) == 3 and t[0] in keys
                     and all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)
                             for v in t[1:]) and t[2] > 0) for t in self.obs_norm):
            raise ValueError(f"obs_norm: expected (key, shift, scale) triples with keys of the "
                             f"observation space {keys}, finite shifts and positive finite scales, "
                             f"got {self.obs_norm!r}")
        if self.critic_keys:
            if (not isinstance(self.critic_keys, tuple) or len(set(self.critic_keys)) != len(self.critic_keys)
                    or any(k not in keys for k in self.critic_keys) or len(self.critic_keys) >= len(keys)):
                raise ValueError(f"critic_keys: expected a tuple of distinct keys of the observation "
                                 f"space {keys}, leaving the actor at least one, got {self.critic_keys!r}")
        super().__post_init__()
