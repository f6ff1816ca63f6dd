"""STAA-SNN: the Spatial-Temporal Attention Aggregator (Zhang, Yu et al., CVPR 2025, §3).

The plain LIF charge (eq. 1)  V[t] = H[t−1] + (1/τ)(I[t] − (H[t−1] − V_reset))  adds the input to the
leaked state. STAA replaces that addition by an attention aggregator (eq. 6–14)::

    X[t] = I[t] + Pos[t]                                   position encoding, eq. 11
    U[t] = M ⊙ GC2(H[t−1]) + N ⊙ GC1(X[t])                  global context + adaptive LIF, eq. 6–10, 13
    V[t] = U[t] ⊙ σ(Conv2(ReLU(Conv1(α·AvgPool(U[t])))))    step attention, eq. 12, 14
    S[t] = Θ(V[t] − v_th);   H[t] = V_reset·S[t] + V[t]·(1 − S[t])        eq. 2–3 (hard reset)

with the rectangular surrogate ∂S/∂V = 1[|V − v_th| < a/2]/a, a = 1 (eq. 5). During training, Time-Step Random
Dropout (TSRD, §3.2) replaces the aggregator at a step by the plain V[t] = H[t−1] + I[t]. Eq. 7–12 are followed as
written; what the paper leaves open is RECONSTRUCTED, each piece in one small function below: where eq. 13's ⊕ puts
eq. 6's M, N, their shape and start, SA's initial gate, TSRD's draw, the fixed encoding and the placements of §4.3
(Fig. 2 is lost); Table 6 / §4.3's ablations are arguments (``sa_pool``, ``alpha``, ``pe``, ``pe_learn``). With
Pos = 0, zero GC output and SA gates of 1, STAALIF *is* the adaptive LIF, M = 1 − 1/τ, N = 1/τ (tests).
"""
import time

import numpy as np

from .. import functional as F
from .. import models, neurons, train
from ..autograd import Tensor, tensor
from ..claims import Claim
from ..nn import Linear, Module, Parameter, _fold, is_recording
from . import experiment_data, loaders

# ----------------------------------------------------------------------------- RECONSTRUCTED pieces


def init_coefficients(channels, tau, dtype=np.float32):
    """RECONSTRUCTED (spec §2): eq. 6's M, N ("coefficient matrices that dynamically adjust through iterative
    learning"; shape and start not given) per channel, [C, 1, 1], from M = 1 − 1/τ, N = 1/τ: eq. 1 (V_reset = 0)."""
    M = np.full((channels, 1, 1), 1.0 - 1.0 / tau, dtype)
    return M, np.full((channels, 1, 1), 1.0 / tau, dtype)


def init_gate_bias(conv2, bias):
    """RECONSTRUCTED (the paper gives no initialisation; α "regulates the initial training speed"): SA's last 1×1 conv
    starts with bias ``bias``. None: the default init, whose gates near 0.5 halve the membrane; STAALIF's 4: σ(4) ≈
    0.98, close to the plain LIF like M, N and the GC, measured better (below; the claims table reports both)."""
    # DigitsDVS, ConvSNN width 8, 3 seeds, T = 2 / 4 / 8: sa_bias = 4 92.8 / 92.9 / 92.4 % vs the default init
    # 89.7 / 89.5 / 88.0 % (LIF 92.5 / 91.6 / 91.6 %).
    if bias is not None:
        conv2.bias.data[...] = bias


def gc_context(x, key_logits, pooling):
    """The key branch of the GC block, eq. 7: W_k = X · σ(Conv_k(X)), X reshaped to C×HW. x: [N, C, HW], key_logits:
    [N, 1, HW] -> W_k = Σ_p a_p·x[:, :, p], [N, C, 1], with a = σ(logits) (eq. 7, default) or GCNet's softmax over the
    positions (weights summing to 1; GC's LayerNorm removes the scale of W_k, and the two measured alike)."""
    # T = 4, seed 0: 326 vs 326 of 359 test samples correct.
    a = F.softmax(key_logits, axis=-1) if pooling == "softmax" else F.sigmoid(key_logits)
    return F.matmul(x, F.transpose(a, (0, 2, 1)))


def aggregate(M, N, gc_h, gc_x):
    """RECONSTRUCTED (spec §6): eq. 13, "U = GC_1(X) ⊕ GC_2(H[t−1])", with ⊕ read as eq. 6's weighted sum:
    U = M ⊙ GC2(H[t−1]) + N ⊙ GC1(X[t])."""
    return M * gc_h + N * gc_x


def tsrd_mask(T, beta, rng, training):
    """TSRD (§3.2: "randomly dropout the augmentation module at timestep t ∈ (0, T) with a dropout probability β")
    -> bool [T], the steps that use the plain addition. RECONSTRUCTED: one draw per step for the whole batch; the
    first step is never dropped (t counted from 0); never at inference."""
    return np.r_[False, rng.random(T - 1) < beta] if training and beta > 0 and T > 1 else np.zeros(T, bool)


def fixed_position_encoding(T, channels):
    """RECONSTRUCTED (§4.3 "fixed PE", form not given): the Transformer sinusoid, Pos[t, c] = sin(t / 10⁴^(c'/C))
    for even c, cos for odd c, c' = c − c mod 2 -> [T, C] (not trained)."""
    t, c = np.arange(T)[:, None], np.arange(channels)[None]
    angle = t / 10000.0 ** ((c - c % 2) / channels)
    return np.where(c % 2 == 0, np.sin(angle), np.cos(angle)).astype(np.float32)


# ----------------------------------------------------------------------------- the three blocks


class GCBlock(Module):
    """Global Context block (eq. 7–10), applied to one step [N, C, H, W] (or [T, N, C, H, W], folded).

    W_k = X · σ(Conv_k(X)) (eq. 7, :func:`gc_context`);  W_q = Conv_q(W_k) (C → C/r, eq. 8);
    W_v = Conv_v(ReLU(LN(W_q))) (C/r → C, eq. 9);  Z = X ⊕ W_v (broadcast over H, W)   (eq. 10).
    The 1×1 convs act on [C, 1, 1] vectors (the key conv per position): ``Linear`` layers, 2·C·C/r weights plus key
    conv, LN and biases (§4.3). The value layer starts at zero, as in GCNet (Z = X at init); with C/r = 1 the LN
    output is its bias, with C/r = 2 it is ±1."""

    def __init__(self, channels, reduction=4, pooling="sigmoid", rng=None):
        super().__init__()
        if pooling not in ("softmax", "sigmoid") or min(int(channels), int(reduction)) < 1:
            raise ValueError(f"need pooling 'sigmoid' or 'softmax', channels, reduction >= 1; got pooling={pooling!r}, "
                             f"channels={channels}, reduction={reduction}")
        rng = rng or np.random.default_rng(0)
        self.channels, self.hidden, self.pooling = int(channels), max(1, int(channels) // int(reduction)), pooling
        self.key = Linear(self.channels, 1, rng=rng)
        self.query = Linear(self.channels, self.hidden, rng=rng)
        self.ln_weight, self.ln_bias = (Parameter(f(self.hidden, np.float32)) for f in (np.ones, np.zeros))
        self.value = Linear(self.hidden, self.channels, rng=rng)
        self.value.weight.data[...], self.value.bias.data[...] = 0, 0

    def context(self, x):
        """W_v of eq. 9 for x [N, C, H, W] -> [N, C, 1, 1] (the term that eq. 10 adds to every position)."""
        n, c = x.shape[:2]
        flat = F.reshape(x, (n, c, -1))
        ctx = gc_context(flat, F.matmul(self.key.weight, flat) + self.key.bias, self.pooling)   # key: 1×1 conv
        q = self.query(F.reshape(ctx, (n, c)))
        v = self.value(F.relu(F.layer_norm(q, -1, self.ln_weight, self.ln_bias)))
        return F.reshape(v, (n, c, 1, 1))

    def forward(self, x):
        x = tensor(x)
        if x.ndim not in (4, 5) or x.shape[-3] != self.channels:
            raise ValueError(f"GCBlock: x must be [(T,) N, C={self.channels}, H, W], got {x.shape}")
        return _fold(lambda z: z + self.context(z), x)                      # Z = X ⊕ W_v, eq. 10


class StepAttention(Module):
    """Step attention (eq. 12): V = U ⊙ σ(Conv2(ReLU(Conv1(α·AvgPool_HW(U))))), C → C/r → C, α = 2. ``pool``: "avg",
    "max" or "avg+max" (their sum), times α; Table 6's rows: ("max", α = 1), ("avg", 1), ("avg+max", 1), ("avg", 2)."""

    def __init__(self, channels, reduction=16, alpha=2.0, gate_bias=None, pool="avg", rng=None):
        super().__init__()
        if int(channels) < 1 or int(reduction) < 1 or pool not in ("avg", "max", "avg+max"):
            raise ValueError(f"need channels, reduction >= 1 and pool in avg | max | avg+max, got {channels}, "
                             f"{reduction}, {pool!r}")
        rng, hidden = rng or np.random.default_rng(0), max(1, int(channels) // int(reduction))
        self.channels, self.alpha, self.pool = int(channels), float(alpha), pool
        self.conv1, self.conv2 = Linear(self.channels, hidden, rng=rng), Linear(hidden, self.channels, rng=rng)
        init_gate_bias(self.conv2, gate_bias)

    def gate(self, u):
        """σ(Conv2(ReLU(Conv1(α·Pool(U))))) for u [N, C, H, W] -> [N, C, 1, 1], one gate per channel."""
        pooled = sum(F.mean(u, axis=(2, 3)) if p == "avg" else F.max(u, axis=(2, 3)) for p in self.pool.split("+"))
        z = self.conv2(F.relu(self.conv1(self.alpha * pooled)))
        return F.reshape(F.sigmoid(z), z.shape + (1, 1))

    def forward(self, u):
        u = tensor(u)
        if u.ndim != 4 or u.shape[1] != self.channels:
            raise ValueError(f"StepAttention: u must be [N, {self.channels}, H, W], got {u.shape}")
        return u * self.gate(u)


# ----------------------------------------------------------------------------- the neuron


class STAALIF(neurons.BaseNeuron):
    """LIF with the spatial-temporal attention aggregator (eq. 6, 11–14) and TSRD; input [T, N, C, H, W].

    Unrolled over t with ordinary autograd ops (no fused kernel). ``gc``/``sa`` switch the blocks off and ``pe=None``
    the position encoding (off = identity; M, N stay). ``pe`` adds Pos[t] at "input" (X = I + Pos before GC1: the
    paper's choice (c), "the pre-aggregation spatial input port"), "state" (H[t−1] + Pos before GC2), "both" (input,
    and a second Pos at the state) or "aggregate" (U + Pos before SA): RECONSTRUCTED, the paper's Fig. 2 is lost.
    ``pe_learn=False``: :func:`fixed_position_encoding`. A [T, N, F] input (an FC layer) runs as [T, N, F, 1, 1]: GC
    then pools over one position and SA gates each feature by itself (defined, but STAA is designed for conv maps).
    """
    PORTS = {None: {}, "input": {"input": "pos"}, "state": {"state": "pos"}, "both": {"input": "pos", "state": "pos_h"},
             "aggregate": {"aggregate": "pos"}}   # placement -> {port: encoding}

    def __init__(self, channels, T, tau=2.0, v_threshold=1.0, tsrd=0.1, rng=None, surrogate=None, v_reset=0.0,
                 reduction=4, sa_reduction=16, alpha=2.0, sa_bias=4.0, pooling="sigmoid", gc=True, pe="input",
                 sa=True, sa_pool="avg", pe_learn=True):
        super().__init__(v_threshold, v_reset, surrogate or neurons.Rectangle(1.0), False, 0.0, False)
        if not tau > 1.0 or int(T) < 1 or not 0.0 <= tsrd <= 1.0 or v_reset is None or pe not in self.PORTS:
            raise ValueError(f"STAALIF: need tau > 1, T >= 1, 0 <= tsrd <= 1, hard reset, pe in {list(self.PORTS)}; "
                             f"got tau={tau}, T={T}, tsrd={tsrd}, v_reset={v_reset}, pe={pe!r}")
        self.rng = rng or np.random.default_rng(0)
        self.channels, self.T, self.tsrd, self.pe = int(channels), int(T), float(tsrd), pe
        self.gc1, self.gc2 = (GCBlock(channels, reduction, pooling, self.rng) if gc else None for _ in "12")
        self.sa = StepAttention(channels, sa_reduction, alpha, sa_bias, sa_pool, self.rng) if sa else None
        self.M, self.N = map(Parameter, init_coefficients(self.channels, tau))
        for name in dict.fromkeys(self.PORTS[pe].values()):
            pos = np.zeros((self.T, self.channels), np.float32) if pe_learn else fixed_position_encoding(T, channels)
            setattr(self, name, Parameter(pos)) if pe_learn else self.register_buffer(name, pos)
        self.last_dropped = np.zeros(self.T, bool)

    def forward(self, x):
        x = tensor(x)
        shape = x.shape
        if x.ndim == 3:                                                         # an FC layer: [T, N, F, 1, 1]
            x = F.reshape(x, shape + (1, 1))
        if x.ndim != 5 or x.shape[0] != self.T or x.shape[2] != self.channels:
            raise ValueError(f"STAALIF: x must be [T={self.T}, N, C={self.channels}, (H, W)], got {x.shape}")
        pos = {port: F.reshape(getattr(self, name), (self.T, 1, self.channels, 1, 1))
               for port, name in self.PORTS[self.pe].items()}                                 # eq. 11, [T, 1, C, 1, 1]
        xin = x + pos["input"] if "input" in pos else x
        gx = self.gc1(xin) if self.gc1 is not None else xin                                     # GC1, all t at once
        self.last_dropped = drop = tsrd_mask(self.T, self.tsrd, self.rng, self.training)
        h = Tensor(np.zeros(x.shape[1:], x.dtype))
        steps = []
        for t, (x_t, gx_t) in enumerate(zip(x, gx)):
            if drop[t]:
                v = h + x_t                                                     # TSRD: plain addition
            else:
                h_in = h + pos["state"][t] if "state" in pos else h
                u = aggregate(self.M, self.N, self.gc2(h_in) if self.gc2 is not None else h_in, gx_t)  # eq. 6, 13
                u = u + pos["aggregate"][t] if "aggregate" in pos else u
                v = self.sa(u) if self.sa is not None else u                                    # eq. 12, 14
            s = F.spike(v - self.v_threshold, self.surrogate)                                   # eq. 2
            h = v * (1 - s) + self.v_reset * s                                                  # eq. 3
            steps.append((s, v.data, h.data))
        spikes, mems, posts = zip(*steps)
        self._record(np.stack([s.data for s in spikes]), np.stack(mems), np.stack(posts))
        return F.reshape(F.stack(spikes), shape)

    def _record(self, s, u, h):
        """Firing statistics, and membranes for ``nn.recording()`` (decay/gain = M/N, approximate for STAA)."""
        self.n_neurons = int(np.prod(s.shape[2:]))
        self.spike_rate = None if self.training else float(s.mean())
        if is_recording():
            self.extras = {"u": u, "s": s, "h": h, "decay": self.M.data.copy(), "gain": self.N.data.copy(),
                           "v0": np.zeros((), s.dtype), "dropped": self.last_dropped.copy()}


def staa_neuron(T, **kwargs):
    """Factory for ``models.ConvSNN(neuron=...)`` / ``VGGSNN``: ``neuron(channels) -> STAALIF(channels, T)``; its
    layers share one generator (``rng=``, default ``default_rng(0)``) for their initial weights and TSRD."""
    kwargs.setdefault("rng", np.random.default_rng(0))
    return lambda channels: STAALIF(channels, T, **kwargs)


def lif_neuron(channels=None):
    """The baseline of the comparison: plain LIF (eq. 1–3), τ = 2, v_th = 1, hard reset, the same surrogate a = 1."""
    return neurons.LIF(tau=2.0, surrogate=neurons.Rectangle(1.0))


# ----------------------------------------------------------------------------- §4 as claims (minisnn.claims)

def _staa(**kw):
    return lambda T, rng: staa_neuron(T, rng=rng, **kw)


VARIANTS = {"lif": lambda T, rng: lif_neuron, "staa": _staa(), "staa_paper_init": _staa(sa_bias=None)}
ABLATIONS = {"staa": _staa(), "pe_state": _staa(pe="state"), "pe_both": _staa(pe="both"),
             "pe_aggregate": _staa(pe="aggregate"), "pe_none": _staa(pe=None), "pe_fixed": _staa(pe_learn=False),
             "sa_max": _staa(sa_pool="max", alpha=1.0), "sa_avg": _staa(alpha=1.0),
             "sa_avg_max": _staa(sa_pool="avg+max", alpha=1.0), "gc_softmax": _staa(pooling="softmax")}
# Measured once (seed 0, T = 4, DigitsDVS: 359 test samples, one standard error ≈ 1.5 points): staa 90.8 %, pe_state
# 91.1, pe_both 91.6, pe_aggregate 90.3, pe_none 90.3, pe_fixed 90.3 (spike rate 0.151 vs 0.088), sa_max 90.5,
# sa_avg 90.5, sa_avg_max 90.5, gc_softmax 90.8: every ablation within one standard error of the default.


def claim_run_lowT(seed, quick, log=None, dataset="digits", Ts=(2, 4, 8), variants=VARIANTS, **cfg):
    """One seed of LIF vs STAA-LIF at each T (the protocol of :mod:`minisnn.methods`): ConvSNN width 8, 4 epochs of
    Adam 3e-3 (``cfg`` overrides). ``variants``: name -> (T, rng) -> neuron factory, the generator (from ``seed``)
    drawing STAA's initial weights and TSRD. Returns {f"{name}_T{T}": {"accuracy", "spike_rate", "seconds"}}.
    ``quick``: 80 / 32 samples, 1 epoch, width 4. Table 6 / §4.3 ablations: ``Ts=(4,), variants=ABLATIONS``."""
    cfg = {**(dict(epochs=1, width=4) if quick else dict(epochs=4, width=8)), "lr": 3e-3, "batch_size": 32, **cfg}
    data = experiment_data(dataset, seed, *((80, 32) if quick else ()))
    (W, H, P), out = data[0].sensor_size, {}
    for T in Ts:
        for name, build in variants.items():
            t0 = time.perf_counter()
            model = models.ConvSNN(len(data[0].classes), P, H, cfg["width"], build(T, np.random.default_rng(seed)),
                                   rng=np.random.default_rng(seed))
            tr, va, te = loaders(data, T, cfg["batch_size"], seed)
            train.fit(model, tr, va, epochs=cfg["epochs"], lr=cfg["lr"], log=log)
            res = train.evaluate(model, te)
            out[f"{name}_T{T}"] = {"accuracy": res["accuracy"], "spike_rate": res["spike_rate"],
                                   "seconds": time.perf_counter() - t0}
    return out


_GAIN = ("When all components, including TSRD, are incorporated, the accuracy reaches 75.10%, demonstrating a "
         "cumulative improvement of 2.80% over the baseline.")
_FEWER = ("Furthermore, our model achieves equivalent accuracy while requiring at least one fewer timestep compared "
          "to prior methods.")
EXPERIMENTS = {"staa-lowT": claim_run_lowT}
CLAIMS = [Claim("STAA-SNN", f"Table 4 (T = {T}{note})", _GAIN, "staa-lowT", "accuracy", f"lif_T{T}", f"{arm}_T{T}")
          for arm, note in (("staa", ""), ("staa_paper_init", ", SA at its default init")) for T in (2, 4, 8)]
CLAIMS.append(Claim("STAA-SNN", "§4.2 (STAA at T = 2 vs LIF at T = 4)", _FEWER, "staa-lowT", "accuracy", "lif_T4",
                    "staa_T2", margin=0.01))
