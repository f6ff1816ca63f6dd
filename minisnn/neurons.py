"""Spiking neurons: surrogate gradients, the unified neuron model, and LIF / IF / PLIF / LIAF layers.

One discrete model covers all five papers (DESIGN.md)::

    charge: u[t] = decay·h[t−1] + gain·x[t] + (1 − decay)·v_rest        h[0] = v0
    fire:   s[t] = Θ(u[t] − v_th)     Θ(0) = 1; the backward pass uses the surrogate g'(u − v_th)
    reset:  hard  h[t] = u[t]·(1 − s[t]) + v_reset·s[t]      soft (v_reset=None)  h[t] = u[t] − v_th·s[t]

A layer maps a time-first input ``[T, N, ...]`` to spikes ``[T, N, ...]`` and keeps no state between
calls. It runs either **fused** (one autograd node; forward and BPTT in C, :mod:`minisnn.core`) or
**unrolled** (a Python loop over t of ordinary autograd ops: the reference semantics, and the template
for custom neurons). Both give identical spikes and gradients.
"""
import numpy as np

from . import core
from . import functional as F
from .autograd import Tensor, is_grad_enabled, make, tensor, unbroadcast
from .nn import Module, Parameter, is_recording

# ----------------------------------------------------------------------------- surrogate gradients


class Surrogate:
    """Θ(x) forward, g'(x) backward, where g is a smooth primitive of Θ. ``kind``/``param`` feed the C core."""
    kind = None

    def __init__(self, param):
        if not param > 0:
            raise ValueError(f"{type(self).__name__}: parameter must be > 0, got {param}")
        self.param = float(param)

    def grad(self, x):
        x = np.asarray(x)
        x = x if np.issubdtype(x.dtype, np.floating) else x.astype(np.float64)
        return core.surrogate_grad(x, self.kind, np.asarray(self.param, dtype=x.dtype))

    def __repr__(self):
        return f"{type(self).__name__}({self.param})"


class Sigmoid(Surrogate):
    """g(x) = σ(αx);  g'(x) = α·σ(αx)·(1 − σ(αx))   (spikingjelly's default, α = 4)."""
    kind = "sigmoid"

    def __init__(self, alpha=4.0):
        super().__init__(alpha)

    def primitive(self, x):
        return 0.5 * (1 + np.tanh(0.5 * self.param * np.asarray(x)))  # σ(αx) without overflow


class ATan(Surrogate):
    """g(x) = arctan(π/2·αx)/π + 1/2;  g'(x) = (α/2) / (1 + (π/2·αx)²)   (snntorch's default, α = 2)."""
    kind = "atan"

    def __init__(self, alpha=2.0):
        super().__init__(alpha)

    def primitive(self, x):
        return np.arctan(np.pi / 2 * self.param * np.asarray(x)) / np.pi + 0.5


class Rectangle(Surrogate):
    """g(x) = clip(x/a + 1/2, 0, 1);  g'(x) = 1/a on |x| < a/2, else 0   (STAA a = 1; ASA/TA-SNN a = 0.5)."""
    kind = "rectangle"

    def __init__(self, width=1.0):
        super().__init__(width)

    def primitive(self, x):
        return np.clip(np.asarray(x) / self.param + 0.5, 0, 1)


class Triangle(Surrogate):
    """g'(x) = (1/γ²)·max(0, γ − |x|);  g = its integral, a piecewise quadratic from 0 (x ≤ −γ) to 1 (x ≥ γ)."""
    kind = "triangle"

    def __init__(self, gamma=1.0):
        super().__init__(gamma)

    def primitive(self, x):
        z = np.clip(np.asarray(x) / self.param, -1, 1)
        return np.where(z < 0, 0.5 * (1 + z) ** 2, 1 - 0.5 * (1 - z) ** 2)


# ----------------------------------------------------------------------------- the two execution paths


def multistep_fused(x, decay, gain, v0=0.0, v_th=1.0, v_reset=0.0, v_rest=0.0, surrogate=None,
                    detach_reset=False, output="spike", trace=None):
    """The whole sequence as ONE autograd node: forward and BPTT over T run in the C core.

    ``x`` is [T, N, ...]; ``decay``, ``gain``, ``v0`` are floats or Tensors broadcastable to one step
    ([N, ...]); their gradients are summed back to their own shapes. ``output`` is ``"spike"`` (s),
    ``"membrane"`` (u, pre-reset) or ``"both"`` (a [2, T, N, ...] stack of s and u); the backward
    takes gradients with respect to both. A dict passed as ``trace`` receives the arrays ``s`` and ``u``.
    """
    x = tensor(x)
    surrogate = surrogate or Sigmoid()
    T, step = x.shape[0], x.shape[1:]
    M = int(np.prod(step))
    params = [v if isinstance(v, Tensor) else Tensor(np.asarray(v, x.dtype)) for v in (decay, gain, v0)]
    flat = [p.data.astype(x.dtype, copy=False) if p.size == 1 else
            np.broadcast_to(p.data.astype(x.dtype, copy=False), step).ravel() for p in params]
    x2 = np.ascontiguousarray(x.data).reshape(T, M)
    kw = dict(v_th=v_th, v_reset=v_reset, v_rest=v_rest)
    keep_u = output != "spike" or trace is not None or (is_grad_enabled() and any(p.requires_grad for p in [x] + params))
    s, u = core.lif_forward(x2, *flat, **kw, keep_u=keep_u)
    out = np.stack([s, u]) if output == "both" else {"spike": s, "membrane": u}[output]

    def backward(g):
        g = np.ascontiguousarray(g)
        gs, gu = (g, None) if output == "spike" else (None, g) if output == "membrane" else (g[0], g[1])
        gs, gu = (None if a is None else a.reshape(T, M) for a in (gs, gu))
        gx, gc, gd, gv = core.lif_backward(gs, gu, x2, u, *flat, **kw, detach_reset=detach_reset,
                                           surrogate=surrogate.kind, sg_param=surrogate.param,
                                           param_grads=params[0].requires_grad or params[1].requires_grad)
        return (gx.reshape(x.shape),) + tuple(unbroadcast(a.reshape(step), p.shape) if p.requires_grad else None
                                              for a, p in zip((gc, gd, gv), params))
    if trace is not None:
        trace.update(s=s.reshape(x.shape), u=u.reshape(x.shape))
    return make(out.reshape((2,) * (output == "both") + x.shape), [x] + params, backward)


def multistep_unrolled(x, decay, gain, v0=0.0, v_th=1.0, v_reset=0.0, v_rest=0.0, surrogate=None,
                       detach_reset=False, output="spike", trace=None):
    """:func:`multistep_fused` as a loop over t of plain autograd ops (reference semantics): same returns and trace."""
    x = tensor(x)
    surrogate = surrogate or Sigmoid()
    h = v0 if isinstance(v0, Tensor) else Tensor(np.broadcast_to(np.asarray(v0, x.dtype), x.shape[1:]))
    spikes, mems = [], []
    for t in range(x.shape[0]):
        u = decay * h + gain * x[t] + (1 - decay) * v_rest
        s = F.spike(u - v_th, surrogate)
        r = s.detach() if detach_reset else s
        h = u * (1 - r) + v_reset * r if v_reset is not None else u - v_th * r
        spikes.append(s)
        mems.append(u)
    if trace is not None:
        trace.update(s=np.stack([s.data for s in spikes]), u=np.stack([u.data for u in mems]))
    if output == "spike":
        return F.stack(spikes)
    return F.stack(mems) if output == "membrane" else F.stack([F.stack(spikes), F.stack(mems)])


# ----------------------------------------------------------------------------- neuron layers


class BaseNeuron(Module):
    """Shared machinery: parameters of the model above, fused/unrolled dispatch, recording of membranes.

    Subclasses define :meth:`coefficients` -> (decay, gain) as floats or Tensors. While recording (``nn.recording()``),
    ``extras`` holds ``u``, ``s``, ``h`` (post-reset), each [T, N, ...], and ``decay``, ``gain``, ``v0``.
    """
    output = "spike"

    def __init__(self, v_threshold=1.0, v_reset=0.0, surrogate=None, detach_reset=False, v0=0.0, fused=True):
        super().__init__()
        if not np.isfinite(v_threshold):
            raise ValueError(f"v_threshold must be finite, got {v_threshold}")
        self.v_threshold, self.v_reset, self.v0 = float(v_threshold), v_reset, v0
        self.surrogate = surrogate or Sigmoid(4.0)
        if not isinstance(self.surrogate, Surrogate):
            raise TypeError(f"surrogate must be a neurons.Surrogate, got {type(self.surrogate).__name__}")
        self.detach_reset, self.fused = bool(detach_reset), bool(fused)

    v_rest = property(lambda self: 0.0 if self.v_reset is None else float(self.v_reset))

    def coefficients(self):
        raise NotImplementedError

    def forward(self, x):
        x = tensor(x)
        if x.ndim < 2:
            raise ValueError(f"{type(self).__name__}: input must be time-first [T, N, ...], got shape {x.shape}")
        if not np.isfinite(x.data).all():   # a NaN membrane never fires and never recovers: the output would look valid
            raise ValueError(f"{type(self).__name__}: input current holds NaN or inf (a NaN weight or input upstream?)")
        decay, gain = self.coefficients()
        run, trace = multistep_fused if self.fused else multistep_unrolled, {} if is_recording() else None
        out = run(x, decay, gain, self.v0, self.v_threshold, self.v_reset, self.v_rest, self.surrogate,
                  self.detach_reset, "membrane" if self.output == "analog" else "spike", trace)
        s = trace["s"] if trace else out.data if self.output == "spike" else out.data >= self.v_threshold
        self.n_neurons = int(np.prod(s.shape[2:]))
        self.spike_rate = None if self.training else float(s.mean())
        self.extras = None  # membranes are kept only while recording (nn.recording())
        if trace:
            c, d, v0 = (np.asarray(v.data if isinstance(v, Tensor) else v) for v in (decay, gain, self.v0))
            u = trace["u"]
            h = u * (1 - s) + self.v_rest * s if self.v_reset is not None else u - self.v_threshold * s
            self.extras = {"u": u, "s": s, "h": h, "decay": c, "gain": d, "v0": v0}
        return F.relu(out) if self.output == "analog" else out

    def extra_repr(self):
        reset = "soft" if self.v_reset is None else f"hard to {self.v_reset}"
        return f"v_threshold={self.v_threshold}, reset={reset}, surrogate={self.surrogate}, fused={self.fused}"


class LIF(BaseNeuron):
    """Leaky integrate-and-fire, spikingjelly's ``LIFNode`` conventions.

    decay_input=True:  u = (1 − 1/τ)·h + x/τ + v_reset/τ     (H = V + (x − (V − V_reset))/τ)
    decay_input=False: u = (1 − 1/τ)·h + x + v_reset/τ        (EventRPG's TET LIF: τ = 2, u = h/2 + x)
    Other presets pass ``decay``/``gain`` directly (ASA/TA-SNN: decay=0.3, gain=1, v_threshold=0.3).
    ``decay`` may also be an array (e.g. per channel, shape [C, 1, 1]): a fixed per-neuron leak.
    """

    def __init__(self, tau=2.0, v_threshold=1.0, v_reset=0.0, decay_input=True, surrogate=None,
                 detach_reset=False, decay=None, gain=None, v0=0.0, fused=True):
        super().__init__(v_threshold, v_reset, surrogate, detach_reset, v0, fused)
        if not tau > 1.0 and decay is None:
            raise ValueError(f"LIF: tau must be > 1, got {tau}")
        self.decay = 1.0 - 1.0 / tau if decay is None else decay
        self.gain = (1.0 / tau if decay_input else 1.0) if gain is None else gain

    def coefficients(self):
        return self.decay, self.gain


class IF(BaseNeuron):
    """Integrate-and-fire: u = h + x (decay = gain = 1). HSD's converted neuron: v_reset=None, v0 = v_th/2."""

    def coefficients(self):
        return 1.0, 1.0


class PLIF(BaseNeuron):
    """Parametric LIF (Fang et al. 2021): learnable w with decay = 1 − sigmoid(w), gain = sigmoid(w), initialised
    so that sigmoid(w) = 1/init_tau (one w per layer, as in spikingjelly)."""

    def __init__(self, init_tau=2.0, v_threshold=1.0, v_reset=0.0, surrogate=None, detach_reset=False, fused=True):
        super().__init__(v_threshold, v_reset, surrogate, detach_reset, 0.0, fused)
        if not init_tau > 1:
            raise ValueError(f"PLIF: init_tau must be > 1, got {init_tau}")
        self.w = Parameter(np.array(-np.log(init_tau - 1.0), dtype=np.float32))

    def coefficients(self):
        k = F.sigmoid(self.w)
        return 1 - k, k


class LIAF(LIF):
    """Leaky integrate-and-analog-fire: outputs ReLU(u[t]) (analog); the spike still drives the reset."""
    output = "analog"
