"""Relevance propagation for spiking networks (EventRPG, Sun et al., ICLR 2024, §2–4 and appendix D).

The model's prediction is redistributed backwards, layer by layer, so that every layer's relevance sums
to the same constant (Definition 1, eq. 1)::

    linear / conv   αβ rule per time step (eq. 3, 6, 7), biases ignored so conservation is exact
    pools           average pooling = a linear layer with weights 1/k²; max pooling = winner-take-all
    pass-through    BatchNorm, Flatten, Dropout, Identity, ReLU, gates with ``relevance_rule = "identity"``
    spiking layers  SLTRP: redistribute over time with γ[t] (eq. 9–11, C kernel), or
                    SLRP: identity, and every linear layer sees time-averaged inputs (§3.3)

:func:`explain` runs the model once (eval mode, no graph), stores each layer's per-step input and each
neuron's membranes, then walks the layers backwards. Products: saliency maps, CAM / RelCAM at any
layer, the baselines Grad-CAM, Grad-CAM++ and SAM, and the faithfulness metrics A.D. / A.I. (§5.1.1).
"""
import contextlib
from dataclasses import dataclass, field

import numpy as np

from . import autograd, core
from . import functional as F
from . import nn
from .autograd import Tensor, no_grad
from .neurons import BaseNeuron

MODES, INITS = ("sltrp", "slrp"), ("clrp", "logit", "onehot")
PASS_THROUGH = (nn.BatchNorm2d, nn.Flatten, nn.Dropout, nn.Identity, nn.ReLU)
RULED = PASS_THROUGH + (BaseNeuron, nn.Linear, nn.Conv2d, nn.AvgPool2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d)

# ----------------------------------------------------------------------------- helpers


def _safe_div(a, b):
    """(a / b with 0 where b == 0, mask of b != 0): the paper's "0/0 := 0". The zeros of b become ones and the
    quotient is multiplied by the mask: exact for finite a, and ~10x faster than a masked np.divide(where=)."""
    nz = b != 0
    q = a / (b + ~nz)
    q *= nz
    return q, nz


def _linear_op(fn, x):
    """Apply the linear map ``fn`` to ``x`` once; return (fn(x), transpose) with transpose(g) = Jᵀ·g, the input-gradient
    of ``fn`` from the autograd graph of this one call (for max pooling: g routed to each window's arg-max of ``x``)."""
    xt = Tensor(x, requires_grad=True)
    with autograd.enable_grad():
        out = fn(xt)

    def transpose(g):
        xt.grad = None
        out.backward(np.asarray(g, out.dtype))
        return xt.grad
    return out.data, transpose


def _check_ab(alpha, beta, *arrays):
    """Check α + β = 1; return ``arrays`` as float arrays of one dtype (float32 unless one of them is float64)."""
    if not (np.isfinite(alpha) and np.isfinite(beta) and abs(alpha + beta - 1) < 1e-9):
        raise ValueError(f"alpha + beta must be 1 (paper convention, eq. 3), got alpha={alpha}, beta={beta}")
    dtype = np.result_type(*arrays, np.float32)
    return [np.asarray(a, dtype) for a in arrays]


# ----------------------------------------------------------------------------- the αβ rule (eq. 3, 6, 7)


def _ab_rule(xp, xn, R, pos, neg, alpha, beta):
    """The αβ rule for a linear map W = W⁺ + W⁻ given as pairs of functions on arrays: ``pos = (fwd, tr)`` with
    fwd(v) = W⁺v and tr(g, v) = W⁺ᵀg for inputs shaped like v (a conv's transpose is its input-gradient), likewise
    ``neg`` for W⁻ (None: W⁻ = 0, as in pools); ``xn=None``: x⁻ = 0.

    Σ_i z⁺_ij = (W⁺x⁺ + W⁻x⁻)_j and Σ_i z⁻_ij = (W⁺x⁻ + W⁻x⁺)_j; every z⁺_ij ≥ 0 and every z⁻_ij ≤ 0,
    so the ratios lie in [0, 1] and a denominator is 0 only when all its terms are. Then
    R_i = x⁺_i·(W⁺ᵀs⁺ + W⁻ᵀs⁻)_i + x⁻_i·(W⁻ᵀs⁺ + W⁺ᵀs⁻)_i with s± = (α|β)·R / Σz±.
    Returns (R_in, lost) with lost shaped like R.
    """
    R_in, lost = np.zeros(xp.shape, R.dtype), np.zeros_like(R)
    for coef, pairs in ((alpha, ((xp, pos), (xn, neg))), (beta, ((xn, pos), (xp, neg)))):
        if coef == 0:
            continue
        ops = [(v, op) for v, op in pairs if op is not None and v is not None]
        Z = sum((fwd(v) for v, (fwd, _) in ops), np.zeros_like(R))   # Σ_i z±_ij
        s, nz = _safe_div(coef * R, Z)
        lost += coef * R * ~nz
        for v, (_, tr) in ops:
            R_in += v * tr(s, v)
    return R_in, lost


def _ab_chunked(xp, xn, R, maps, cols, alpha, beta):
    """:func:`_ab_rule` over cache-sized chunks of rows [n, ...] (images or feature vectors) on every core
    (:func:`core.chunked`); ``cols``: a conv's column bytes per row. Returns (R_in, lost summed per row)."""
    R_in, lost = np.empty(xp.shape, R.dtype), np.empty(len(R), R.dtype)

    def chunk(n0, n1):
        R_in[n0:n1], lost_rows = _ab_rule(xp[n0:n1], None if xn is None else xn[n0:n1], R[n0:n1], *maps, alpha, beta)
        lost[n0:n1] = lost_rows.reshape(n1 - n0, -1).sum(-1)
    core.chunked(chunk, len(R), 2 * xp[0].nbytes + 4 * R[0].nbytes + cols)
    return R_in, lost


def _split(x):
    return np.maximum(x, 0), np.minimum(x, 0)


def _rows(a, k):
    """``a`` with every axis but the last ``k`` folded into one (rows of images, k = 3, or of vectors, k = 1)."""
    return None if a is None else a.reshape((-1,) + a.shape[a.ndim - k:])


def _dense_maps(w):
    """(W⁺, W⁻) of y = v·wᵀ as (fwd, tr) pairs for :func:`_ab_rule` (None for a zero part)."""
    return [(lambda v, w=w: v @ w.T, lambda g, v, w=w: g @ w) if w.any() else None for w in _split(w)]


def _conv_maps(w, stride, padding, shape):
    """(W⁺, W⁻) of a conv on images [m, C, H, W] as (fwd, tr) pairs: functional's own forward and input-gradient
    kernels, per chunk of images. Also returns the column bytes per image (the chunk size)."""
    geo = F._ConvGeometry(shape, *w.shape[2:], stride, *F._pair(padding, "padding"))

    def maps(w):
        w2, wt = w.reshape(len(w), -1), w.transpose(2, 3, 1, 0).copy()
        return (lambda v: geo.forward(v, w2, np.empty((len(v), len(w), geo.Ho, geo.Wo), v.dtype)),
                lambda g, v: geo.input_grad(geo.widen(g), wt))
    return [maps(p) if p.any() else None for p in _split(w)], geo.K * geo.L * w.itemsize


def _layer_maps(layer, x):
    """``layer``'s (W⁺, W⁻) for rows like ``x`` (see :func:`_ab_rule`) and the column bytes per row."""
    if isinstance(layer, nn.Linear):
        return _dense_maps(layer.weight.data), 0
    if isinstance(layer, nn.Conv2d):
        return _conv_maps(layer.weight.data, layer.stride, layer.padding, x.shape)
    if isinstance(layer, nn.AvgPool2d):
        _, kh, kw, sh, sw, Ho, Wo = F._pool_args(x[:1], layer.kernel_size, layer.stride, "avg")
        return [(lambda v: F._avg_forward(v, np.empty(v.shape[:2] + (Ho, Wo), v.dtype), kh, kw, sh, sw),
                 lambda g, v: F._avg_backward(g, np.empty_like(v), kh, kw, sh, sw)), None], 0
    oh, ow = F._pair(layer.output_size, "output_size")   # AdaptiveAvgPool2d (the rule check in _forward)
    Ph, Pw = F._adaptive_matrix(x.shape[2], oh, x.dtype), F._adaptive_matrix(x.shape[3], ow, x.dtype)
    return [(lambda v: Ph @ v @ Pw.T, lambda g, v: Ph.T @ g @ Pw), None], 0


def alpha_beta(x, w, R, alpha=1.0, beta=0.0, return_lost=False):
    """The αβ rule (eq. 3; eq. 7 per time step) for one linear map y = x·wᵀ, bias ignored.

    x [..., in], w [out, in], R [..., out] ->  R_i = Σ_j R_j·(α·z⁺_ij/Σ_i' z⁺_i'j + β·z⁻_ij/Σ_i' z⁻_i'j)
    with z⁺_ij = w⁺_ij x⁺_i + w⁻_ij x⁻_i, z⁻_ij = w⁺_ij x⁻_i + w⁻_ij x⁺_i, α + β = 1 (the paper's convention).
    Montavon's α_M β_M rule (α_M − β_M = 1, the negative part subtracted) is this rule with α = α_M,
    β = −β_M (α2β1 ↔ alpha=2, beta=−1). Conservation (appendix D.1): Σ_i R_i = Σ_j R_j − lost, where
    lost = Σ_j R_j·(α·[Σz⁺_j = 0] + β·[Σz⁻_j = 0]) is the relevance a zero denominator could not pass.
    Returns R_in (and ``lost`` shaped like R if ``return_lost``).
    """
    x, w, R = _check_ab(alpha, beta, x, w, R)
    if w.ndim != 2 or x.shape[-1] != w.shape[1] or R.shape != x.shape[:-1] + (w.shape[0],):
        raise ValueError(f"alpha_beta: shapes x {x.shape}, w {w.shape}, R {R.shape} do not fit x @ w.T")
    R_in, lost = _ab_rule(*_split(x), R, *_dense_maps(w), alpha, beta)
    return (R_in, lost) if return_lost else R_in


def alpha_beta_conv(x, w, R, stride=1, padding=0, alpha=1.0, beta=0.0, return_lost=False):
    """The αβ rule of :func:`alpha_beta` for a 2-D convolution (x [..., C, H, W], w [O, C, kh, kw]), bias ignored:
    Σ_i z±_ij are convolutions of x⁺ / x⁻ with w⁺ / w⁻, and R flows back through the conv's input-gradient."""
    x, w, R = _check_ab(alpha, beta, x, w, R)
    if w.ndim != 4 or x.ndim < 4 or x.shape[-3] != w.shape[1]:
        raise ValueError(f"alpha_beta_conv: x {x.shape} must be [..., C, H, W] for weights w {w.shape} [O, C, kh, kw]")
    maps, _ = _conv_maps(w, stride, padding, _rows(x, 3).shape)
    R_in, lost = _ab_rule(*_split(_rows(x, 3)), _rows(R, 3), *maps, alpha, beta)
    return (R_in.reshape(x.shape), lost.reshape(R.shape)) if return_lost else R_in.reshape(x.shape)


def residual_add(a, b, R):
    """Relevance of y = a + b split in proportion to the positive parts: R_a = R·a⁺/(a⁺ + b⁺), R_b likewise; where
    a⁺ + b⁺ = 0 nothing is passed (returned as lost). Returns (R_a, R_b, lost)."""
    ap, bp = np.maximum(a, 0), np.maximum(b, 0)
    share, nz = _safe_div(ap, ap + bp)
    R_a = R * share
    return R_a, np.where(nz, R - R_a, 0), np.where(nz, 0, R)


# ----------------------------------------------------------------------------- SLTRP (eq. 8–14)


def sltrp_gamma(h_prev, current, decay, gain, alpha=1.0, beta=0.0, clamp_input=False):
    """Share of relevance sent to the previous step (eq. 9) for f(V, I) = c·V[t−1] + d·I[t] (eq. 8):

    γ[t] = α·c V⁺[t−1] / (c V⁺[t−1] + d I⁺[t]) + β·c V⁻[t−1] / (c V⁻[t−1] + d I⁻[t]),   0/0 := 0.
    Our neuron: c = decay, d = gain, V[t−1] = h[t−1] the post-reset membrane (h[0] = v0), I = the layer's
    input. The (1 − c)·v_rest term acts like a bias and is ignored. ``clamp_input=True`` uses max(I, 0) as
    the reference code does (then I⁻ = 0 and the β part sends all of a negative membrane's share back).
    """
    dtype = np.result_type(h_prev, current)
    c, d = np.asarray(decay, dtype), np.asarray(gain, dtype)
    if clamp_input:
        current = np.maximum(current, 0)
    gamma = 0
    for coef, part in ((alpha, np.maximum), (beta, np.minimum)):
        if coef != 0:  # α·cV±/(cV± + dI±)
            cv, den = c * part(h_prev, 0), d * part(current, 0)
            den += cv
            g = _safe_div(cv, den)[0]
            gamma = gamma + (g if coef == 1 else coef * g)
    return gamma


def sltrp_recursion(R_out, gamma):
    """SLTRP through one spiking layer, eq. 10–11, for arrays [T, ...] (every neuron independently).

    R_in[T] = R_out[T]; for t = T … 2:  R_in[t−1] = γ[t]·R_in[t] + R_out[t−1];  R_in[t] ← (1 − γ[t])·R_in[t].
    Finally the share γ[1]·R_in[1] goes to the initial membrane v0 (γ[1] = 0 when v0 = 0): R_init [...].
    Closed form (eq. 12):  R_in[t] = (1 − γ[t])·(R_out[t] + Σ_{i>t} R_out[i]·Π_{j=t+1..i} γ[j]).
    Proposition 1 (eq. 13), k < T:  Σ_{t≤k} R_in[t] + R_init = Σ_{t≤k} R_out[t] + Σ_{i>k} R_out[i]·Π_{j=k+1..i} γ[j];
    eq. 14 (per-neuron conservation over time):  Σ_t R_in[t] + R_init = Σ_t R_out[t].
    Runs in the C core (``minisnn.core.sltrp``) or its NumPy twin. Returns (R_in, R_init).
    """
    R_out = np.asarray(R_out)
    if R_out.dtype not in (np.float32, np.float64):
        R_out = R_out.astype(np.float64 if R_out.dtype.kind == "f" else np.float32)
    if R_out.ndim < 1 or R_out.shape[0] < 1:
        raise ValueError(f"R_out must be [T, ...] with T >= 1, got shape {R_out.shape}")
    gamma = np.asarray(gamma)
    if gamma.shape != R_out.shape:
        raise ValueError(f"gamma must have the shape of R_out {R_out.shape}, got {gamma.shape}")
    flat = lambda a: np.ascontiguousarray(a.reshape(len(R_out), -1), dtype=R_out.dtype)  # noqa: E731
    r_in, r_init = core.sltrp(flat(R_out), flat(gamma))
    return r_in.reshape(R_out.shape), r_init.reshape(R_out.shape[1:])


def _sltrp_layer(x, extras, R, alpha, beta, clamp_input):
    """γ (eq. 9) from the recorded membranes (h[t−1] after reset, h[0] = v0) and input, per neuron chunk; eq. 10–11."""
    if not isinstance(extras, dict) or not {"h", "decay", "gain", "v0"} <= set(extras):
        raise ValueError("SLTRP needs the neuron's recorded 'h', 'decay', 'gain', 'v0' (BaseNeuron.extras); this "
                         "spiking layer did not record them. Use mode='slrp' or record them in its forward.")
    h, T = extras["h"], len(extras["h"])
    gamma = np.empty(h.shape, np.result_type(h, x))
    per_neuron = lambda k, dtype: np.broadcast_to(np.asarray(extras[k], dtype), h.shape[1:]).reshape(-1)  # noqa: E731
    v0, c, d = per_neuron("v0", h.dtype), per_neuron("decay", gamma.dtype), per_neuron("gain", gamma.dtype)
    h2, x2, g2 = h.reshape(T, -1), x.reshape(T, -1), gamma.reshape(T, -1)

    def chunk(m0, m1):
        h_prev = np.concatenate([v0[None, m0:m1], h2[:-1, m0:m1]])
        g2[:, m0:m1] = sltrp_gamma(h_prev, x2[:, m0:m1], c[m0:m1], d[m0:m1], alpha, beta, clamp_input)
    core.chunked(chunk, h2.shape[1], 8 * T * gamma.itemsize)
    return sltrp_recursion(R, gamma)


# ----------------------------------------------------------------------------- one rule per layer type


def _rule(layer, x, extras, R, mode, alpha, beta, clamp_input):
    """Relevance at ``layer``'s input from R at its output -> (R_in, lost or None, R_init or None).

    ``x`` is the recorded per-step input [T, N, ...] (SLRP: R has no T axis); ``lost`` is summed over R's feature
    axes (None: nothing lost)."""
    slrp = mode == "slrp"
    identity = isinstance(layer, PASS_THROUGH) or getattr(layer, "relevance_rule", None) == "identity"
    if identity or (slrp and isinstance(layer, BaseNeuron)):   # SLRP's spiking layers: R^(l-1) = R^(l) (§3.3, eq. 14)
        return R.reshape(x.shape[1:] if slrp else x.shape), None, None
    if isinstance(layer, BaseNeuron):
        R_in, R_init = _sltrp_layer(x, extras, R, alpha, beta, clamp_input)
        return R_in, None, R_init
    if isinstance(layer, nn.MaxPool2d):  # winner-take-all: everything to each window's arg-max
        v = x.mean(0) if slrp else x
        pool = lambda t: F.max_pool2d(t, layer.kernel_size, layer.stride)  # noqa: E731
        return _linear_op(pool, _rows(v, 3))[1](_rows(R, 3)).reshape(v.shape), None, None
    xp, xn = (x, None) if x.min() >= 0 else _split(x)   # spikes and event counts have no negative part
    if slrp:  # §3.3: z±_ij from the time-averaged x⁺ and x⁻
        xp, xn = xp.mean(0), None if xn is None else xn.mean(0)
    k = 1 if isinstance(layer, nn.Linear) else 3   # rows of vectors or of images
    R_in, lost = _ab_chunked(_rows(xp, k), _rows(xn, k), _rows(R, k), *_layer_maps(layer, _rows(xp, k)), alpha, beta)
    return R_in.reshape(xp.shape), lost.reshape(R.shape[:R.ndim - k]), None


# ----------------------------------------------------------------------------- explain


def layers_of(model):
    """[(name, module)] of a Sequential with nested Sequentials flattened (names are dotted paths)."""
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"model must be an nn.Sequential, got {type(model).__name__}")
    out = []
    for name, m in model._modules.items():
        out += [(f"{name}.{n}", s) for n, s in layers_of(m)] if isinstance(m, nn.Sequential) else [(name, m)]
    return out


def _frames(x, ndim=(3, 4, 5)):
    """``x`` as a finite float array [T, N, ...] (integer event counts become float32)."""
    x = x.data if isinstance(x, Tensor) else np.asarray(x)
    if x.dtype.kind in "biu":
        x = x.astype(np.float32)
    if x.ndim not in ndim or x.dtype.kind != "f" or not np.all(np.isfinite(x)):
        raise ValueError(f"x must be finite float frames [T, N, ...] ({'/'.join(map(str, ndim))}-D), "
                         f"got a {x.dtype} array of shape {x.shape}")
    return x


def _forward(model, x, record=True):
    """Eval-mode forward layer by layer -> (layers, per-layer inputs, per-layer neuron extras, output).
    ``record=False``: the neurons keep no membranes (extras None), as fast as inference."""
    layers = layers_of(model)
    for name, m in layers:
        if not isinstance(m, RULED) and getattr(m, "relevance_rule", None) != "identity":
            raise TypeError(f"no relevance rule for layer {name!r} ({type(m).__name__}); supported: "
                            f"{', '.join(c.__name__ for c in RULED)}; multiplicative gates can set the class "
                            "attribute relevance_rule = 'identity'")
    x = _frames(x)
    was_training = model.training
    model.eval()
    xs, extras, h = [], [], Tensor(x)
    try:
        with no_grad(), nn.recording() if record else contextlib.nullcontext():
            for _, layer in layers:
                xs.append(h.data)
                h = layer(h)
                extras.append(layer.extras if isinstance(layer, BaseNeuron) else None)
    finally:
        model.train(was_training)
    if h.ndim != 3 or h.shape[:2] != x.shape[:2]:
        raise ValueError(f"the model must map [T, N, ...] to [T, N, K]; got output shape {h.shape}")
    return layers, xs, extras, h.data


def _targets(out, target):
    """Class per sample: ``target`` (int or [N] ints) or the arg-max of the time-mean output."""
    T, N, K = out.shape
    if target is None:
        return out.mean(0).argmax(-1)
    t = np.asarray(target)
    if t.ndim > 1 or t.size not in (1, N) or not np.issubdtype(t.dtype, np.integer) or t.min() < 0 or t.max() >= K:
        raise ValueError(f"target must be an int or {N} class indices in [0, {K}), got {target!r}")
    return np.broadcast_to(t.reshape(-1), (N,)).astype(np.int64)


def init_relevance(out, target, init="clrp"):
    """Output relevance [T, N, K] (spec §4), per time step:
    ``clrp``: 1 − 1/K at the target, −1/K elsewhere (the reference code's simplified CLRP, Gu et al. 2018);
    ``logit``: the target's logit at the target, 0 elsewhere (standard LRP); ``onehot``: 1 at the target."""
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    T, N, K = out.shape
    onehot = np.zeros((N, K), out.dtype)
    onehot[np.arange(N), target] = 1
    if init == "clrp":
        return np.broadcast_to(onehot - 1.0 / K, out.shape).astype(out.dtype)
    return out * onehot if init == "logit" else np.broadcast_to(onehot, out.shape).copy()


@dataclass
class Explanation:
    """Result of :func:`explain`.

    input: relevance at the model input ([T, N, ...] SLTRP, [N, ...] SLRP; None if stopped early);
    layers: {name: relevance at that layer's input}; activations: {name: that layer's output [T, N, ...]};
    output_relevance: the initial relevance; target [N]; output: logits [T, N, K];
    conservation: {"output": sums of the initial relevance, name: {"relevance": sums at the layer's
    input, "lost": relevance lost to zero denominators, "init": R_init totals}}; sums are per step and
    sample [T, N] (SLTRP; "init" is [N]) or per sample [N] (SLRP).
    """
    input: np.ndarray
    layers: dict
    conservation: dict
    target: np.ndarray
    output: np.ndarray
    output_relevance: np.ndarray
    mode: str
    activations: dict = field(repr=False, default_factory=dict)

    def __repr__(self):
        shape = None if self.input is None else self.input.shape
        return f"Explanation(mode={self.mode!r}, input shape {shape}, targets {self.target}, layers {list(self.layers)})"

    def residuals(self):
        """{name: per-sample Σ R_out − Σ R_in − lost − R_init} for every layer walked (≈ 0 = conserved)."""
        res, prev = {}, self.conservation["output"]
        total = lambda a: a.reshape(-1, a.shape[-1]).sum(0)  # noqa: E731  (sum over T if present)
        for name in self.layers:
            c = self.conservation[name]
            res[name] = total(prev) - total(c["relevance"]) - total(c["lost"]) - c["init"]
            prev = c["relevance"]
        return res


def explain(model, x, target=None, mode="sltrp", init="clrp", alpha=1.0, beta=0.0, clamp_input=False, until=None):
    """Relevance of every layer's input for the target class (EventRPG §3, §4.1).

    ``mode="sltrp"``: linear layers per step (eq. 7), spiking layers through time (eq. 9–11);
    ``mode="slrp"``: spiking layers identity, linear layers on time-averaged inputs, relevance without a T
    axis (§3.3). ``init`` (spec §4), ``alpha`` + ``beta`` = 1 (eq. 3), ``clamp_input`` (eq. 9, reference
    code). ``until``: stop after the relevance at this layer's input (name) is known (CAMs need no more).
    Biases are ignored, so with ``init="logit"`` every layer's relevance sums to the (time-summed, or
    time-averaged for SLRP) target logit, less what ``conservation`` reports as lost and R_init.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    _check_ab(alpha, beta)
    layers, xs, extras, out = _forward(model, x, record=mode == "sltrp")   # SLRP needs no membranes
    if until is not None and until not in dict(layers):
        raise ValueError(f"until: no layer named {until!r}; layers are {[n for n, _ in layers]}")
    target = _targets(out, target)
    R0 = init_relevance(out, target, init)
    R = R0.mean(0) if mode == "slrp" else R0
    sums = lambda a: a.reshape(a.shape[:2 if mode == "sltrp" else 1] + (-1,)).sum(-1)  # noqa: E731
    cons, rel = {"output": sums(R)}, {}
    acts = {name: a for (name, _), a in zip(layers, xs[1:] + [out])}
    for i in range(len(layers) - 1, -1, -1):
        name, layer = layers[i]
        R, lost, R_init = _rule(layer, xs[i], extras[i], R, mode, alpha, beta, clamp_input)
        rel[name] = R
        init_sum = np.zeros(len(target), R.dtype) if R_init is None else R_init.reshape(len(target), -1).sum(-1)
        total = sums(R)
        cons[name] = {"relevance": total, "lost": np.zeros_like(total) if lost is None else sums(lost), "init": init_sum}
        if name == until:
            break
    return Explanation(R if i == 0 else None, rel, cons, target, out, R0, mode, acts)


# ----------------------------------------------------------------------------- maps (§4.1, spec §5)


def _layer_index(layers, layer):
    """Index of ``layer`` (name, int index, or the module); None -> the last layer before the final pooling and Flatten:
    the feature before the last FC layer (§5.1) at the reference code's ``feature_map`` (ConvSNN: the second LIF)."""
    names = [n for n, _ in layers]
    if layer is None:
        flat = [i for i, (_, m) in enumerate(layers) if isinstance(m, nn.Flatten)]
        i = flat[-1] - 1 if flat else -1
        while i > 0 and isinstance(layers[i][1], (nn.AvgPool2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d)):
            i -= 1
        if i < 0:
            raise ValueError("layer: the model has no Flatten after a spatial layer; name the layer")
        return i
    if isinstance(layer, nn.Module):
        idx = [i for i, (_, m) in enumerate(layers) if m is layer]
    elif isinstance(layer, (int, np.integer)):
        idx = [range(len(layers))[layer]] if -len(layers) <= layer < len(layers) else []
    else:
        idx = [names.index(layer)] if layer in names else []
    if not idx:
        raise ValueError(f"layer: {layer!r} is not a layer of the model; layers are {names}")
    if idx[0] == len(layers) - 1:
        raise ValueError("layer: choose a hidden layer (the last layer's output is the logits)")
    return idx[0]


def _explain_at(model, x, layer, **kw):
    """(relevance at ``layer``'s output, its activation A [T, N, ...], Explanation) — propagates only that far."""
    layers = layers_of(model)
    i = _layer_index(layers, layer)
    e = explain(model, x, until=layers[i + 1][0], **kw)
    R, A = e.layers[layers[i + 1][0]], e.activations[layers[i][0]]
    if A.ndim != 5:
        raise ValueError(f"layer: {layers[i][0]} has output shape {A.shape}; CAMs need [T, N, C, H, W]")
    return R, A, e


def saliency(model, x, target=None, mode="sltrp", **options):
    """Saliency map = relevance at the input: [T, N, P, H, W] (SLTRP) or [N, P, H, W] (SLRP) (§4.1).

    ``options``: ``init``, ``alpha``, ``beta``, ``clamp_input`` of :func:`explain`.
    """
    return explain(model, x, target, mode, **options).input


def cam(model, x, layer=None, target=None, mode="sltrp", **options):
    """SLTRP-CAM / SLRP-CAM (§4.1): relevance at ``layer``'s output summed over channels.

    [T, N, h, w] (SLTRP) or [N, h, w] (SLRP). ``layer``: name, index or module; default: the spike map before the
    final pooling (:func:`_layer_index`). Only the layers after ``layer`` are propagated through.
    """
    return _explain_at(model, x, layer, target=target, mode=mode, **options)[0].sum(-3)


def relcam(model, x, layer=None, target=None, mode="sltrp", **options):
    """SLRP-/SLTRP-RelCAM (Lee et al. 2021; spec §5): w_c = Σ_hw R[c, h, w], map = Σ_c w_c·A_c.

    A = the layer's output (spikes), per step for SLTRP, time-averaged for SLRP. No ReLU (spec §5).
    """
    R, A, _ = _explain_at(model, x, layer, target=target, mode=mode, **options)
    A = A.mean(0) if mode == "slrp" else A
    return (R.sum((-2, -1), keepdims=True) * A).sum(-3)


def normalize(maps, sample_axis=0):
    """Per-sample min-max to [0, 1] over every axis but ``sample_axis`` (0/0 := 0: a constant map -> 0).

    Use ``sample_axis=1`` for time-first maps ([T, N, ...], e.g. SLTRP saliency or CAM).
    """
    maps = np.asarray(maps)
    if not np.issubdtype(maps.dtype, np.floating):
        maps = maps.astype(np.float32)
    m = np.moveaxis(maps, sample_axis, 0)
    flat = m.reshape(len(m), -1)
    if flat.shape[1] == 0:
        return maps.copy()
    lo, hi = flat.min(1, keepdims=True), flat.max(1, keepdims=True)
    out, _ = _safe_div(flat - lo, hi - lo)
    return np.moveaxis(out.astype(maps.dtype).reshape(m.shape), 0, sample_axis)


def _interp_matrix(n_in, n_out, dtype):
    """Bilinear interpolation weights [n_out, n_in], half-pixel centres (PyTorch's align_corners=False)."""
    src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    i0 = np.floor(src).astype(int)
    i1, frac = np.minimum(i0 + 1, n_in - 1), src - np.floor(src)
    M = np.zeros((n_out, n_in), dtype)
    np.add.at(M, (np.arange(n_out), i0), 1 - frac)
    np.add.at(M, (np.arange(n_out), i1), frac)
    return M


def resize(maps, size):
    """Bilinear resize of the last two axes of ``maps`` to ``size`` = (H, W)."""
    maps = np.asarray(maps)
    H, W = F._pair(size, "size")
    if maps.shape[-2:] == (H, W):
        return maps
    Mh, Mw = (_interp_matrix(n, k, maps.dtype) for n, k in zip(maps.shape[-2:], (H, W)))
    return Mh @ maps @ Mw.T


# ----------------------------------------------------------------------------- baselines: Grad-CAM(++), SAM


def _activation_and_grad(model, x, layer, target):
    """(A = ``layer``'s output [T, N, C, h, w], ∂y_c/∂A, targets) with y_c the time-mean logit of the target.

    The forward runs layer by layer; A becomes a leaf Tensor so the autograd stops there. Parameter
    gradients are restored afterwards, so this can be called in the middle of training.
    """
    layers = layers_of(model)
    i = _layer_index(layers, layer)
    params, was_training = model.parameters(), model.training
    saved = [p.grad for p in params]
    model.eval()
    try:
        with no_grad():
            h = Tensor(_frames(x))
            for _, m in layers[:i + 1]:
                h = m(h)
        A = Tensor(h.data, requires_grad=True)
        with autograd.enable_grad():
            h = A
            for _, m in layers[i + 1:]:
                h = m(h)
            t = _targets(h.data, target)
            onehot = np.zeros(h.shape[1:], h.dtype)
            onehot[np.arange(len(t)), t] = 1
            (F.mean(h, 0) * Tensor(onehot)).sum().backward()
    finally:
        model.train(was_training)
        for p, g in zip(params, saved):
            p.grad = g
    if A.ndim != 5:
        raise ValueError(f"layer: output shape {A.shape}; Grad-CAM needs [T, N, C, H, W]")
    return A.data, np.zeros_like(A.data) if A.grad is None else A.grad, t


def grad_cam(model, x, layer=None, target=None):
    """Grad-CAM (Selvaraju et al. 2017) per time step: w_c[t] = mean_hw ∂y_c/∂A[t, c], map = ReLU(Σ_c w_c A_c).

    y_c = the target's time-mean logit; A = ``layer``'s output. Returns [T, N, h, w].
    """
    A, g, _ = _activation_and_grad(model, x, layer, target)
    return np.maximum((g.mean((-2, -1), keepdims=True) * A).sum(-3), 0)


def grad_cam_pp(model, x, layer=None, target=None):
    """Grad-CAM++ (Chattopadhay et al. 2018) per time step, with the usual exp-score closed form:

    a_ij = g²_ij / (2 g²_ij + Σ_ab A_ab · g³_ij)  (0 where g = 0),  w_c = Σ_ij a_ij·ReLU(g_ij),
    map = ReLU(Σ_c w_c A_c). Returns [T, N, h, w].
    """
    A, g, _ = _activation_and_grad(model, x, layer, target)
    g2 = g * g
    a, _ = _safe_div(g2, 2 * g2 + A.sum((-2, -1), keepdims=True) * g2 * g)
    w = (a * np.maximum(g, 0)).sum((-2, -1), keepdims=True)
    return np.maximum((w * A).sum(-3), 0)


def sam(model, x, layer=None, variant="reference", gamma=0.2):
    """Spike Activation Map (Kim & Panda 2021) from ``layer``'s output spikes A [T, N, C, h, w]:

    ``"reference"`` (EventRPG's code): SAM[t'] = Σ_c Σ_{t<t'} A[t, c]·exp(−γ(t' − t));
    ``"original"`` (the SAM paper): the same trace multiplied by the current spikes A[t', c] before Σ_c.
    Returns [T, N, h, w] (SAM[1] = 0: no earlier spikes).
    """
    if variant not in ("reference", "original"):
        raise ValueError(f"variant must be 'reference' or 'original', got {variant!r}")
    layers, xs, _, _ = _forward(model, x)
    A = xs[_layer_index(layers, layer) + 1]
    trace, out = np.zeros_like(A[0]), []
    for t in range(len(A)):
        out.append((trace if variant == "reference" else trace * A[t]).sum(-3))
        trace = np.exp(-gamma) * (trace + A[t])
    return np.stack(out)


# ----------------------------------------------------------------------------- faithfulness (§5.1.1)


LAYOUTS = ("TNPHW", "TNHW", "NPHW", "NHW")


def mask_like(maps, x_shape, layout=None, normalized=False, aggregate="T", clip=False, order="norm"):
    """A map as a mask M broadcastable to the input [T, N, P, H, W] (§5.1.1; singleton T / P axes where the map has
    none). The protocol, each choice selectable (defaults first): ``aggregate`` the axes summed before masking: "T"
    (one map per sample, so SLRP and SLTRP maps are scored alike), "" (per step: frame t masked by map t), "TP";
    ``clip`` False keeps negative relevance (the per-sample min-max to [0, 1] sends the most negative value to 0 and
    zero to a middle grey), True sets it to 0 first; ``order`` "norm": min-max, then bilinear upsampling to H × W
    (the reference's order), or "resize" first.  ``layout`` names the map's axes (LAYOUTS; None: from the shape, a
    4-D map fitting [T, N, h, w] and [N, P, h, w] is an error); ``normalized``: ``maps`` are a mask already."""
    T, N, P, H, W = x_shape
    maps = np.asarray(maps)
    lead = {"TNPHW": (T, N, P), "TNHW": (T, N), "NPHW": (N, P), "NHW": (N,)}
    if layout is None:
        fits = [k for k, v in lead.items() if len(k) == maps.ndim and maps.shape[:len(v)] == v]
        if len(fits) != 1:
            raise ValueError(f"maps of shape {maps.shape} fit layouts {fits} for input {x_shape}; pass layout=")
        layout = fits[0]
    if layout not in LAYOUTS or maps.ndim != len(layout) or maps.shape[:len(lead[layout])] != lead[layout]:
        raise ValueError(f"maps of shape {maps.shape} do not match layout {layout!r} for input {x_shape}")
    if not set(aggregate) <= set("TP") or order not in ("norm", "resize"):
        raise ValueError(f"aggregate must be '', 'T', 'P' or 'TP', order 'norm' or 'resize': {aggregate!r}, {order!r}")
    for a in [a for a in aggregate if a in layout and not normalized]:
        maps, layout = maps.sum(layout.index(a)), layout.replace(a, "")
    scale = (lambda m: m) if normalized else (lambda m: normalize(np.maximum(m, 0) if clip else m, layout.index("N")))
    m = resize(scale(maps), (H, W)) if order == "norm" else scale(resize(maps, (H, W)))
    m = m if "T" in layout else m[None]
    return m if "P" in layout else m[:, :, None]


def _probabilities(model, x):
    with no_grad():
        was_training = model.training
        model.eval()
        try:
            out = model(Tensor(x)).data
        finally:
            model.train(was_training)
    z = out.mean(0)
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def average_drop_increase(model, x, maps, target=None, layout=None, normalized=False, **protocol):
    """Average Drop and Average Increase in % (Chattopadhay et al. 2018; EventRPG §5.1.1, spec §6).

    Y_c = softmax probability of class c (time-mean logits) on x; O_c on x·M with M the map as a mask
    (:func:`mask_like`, whose ``protocol`` options are accepted here); c = ``target`` or the prediction on x.
    A.D. = 100/N Σ max(0, Y_c − O_c)/Y_c  (lower is better);  A.I. = 100/N Σ 1[Y_c < O_c]  (higher is better).
    """
    x = _frames(x, ndim=(5,))
    Y = _probabilities(model, x)
    c = _targets(Y[None], target)
    O = _probabilities(model, (x * mask_like(maps, x.shape, layout, normalized, **protocol)).astype(x.dtype))
    n = np.arange(len(c))
    y, o = Y[n, c], O[n, c]
    return float(100 * np.mean(np.maximum(y - o, 0) / y)), float(100 * np.mean(y < o))
