"""STAA-SNN: the Spatial-Temporal Attention Aggregator (Zhang, Yu et al., CVPR 2025, §3).

The plain LIF charge (eq. 1)  V[t] = H[t−1] + (1/τ)(I[t] − (H[t−1] − V_reset))  adds the input to the
leaked state. STAA replaces that addition by an attention aggregator (eq. 6, 10–14)::

    X[t] = I[t] + Pos[t]                                   position encoding, eq. 11
    U[t] = M ⊙ GC2(H[t−1]) + N ⊙ GC1(X[t])                  global context + adaptive LIF, eq. 6, 13
    V[t] = U[t] ⊙ σ(Conv2(ReLU(Conv1(α·AvgPool(U[t])))))    step attention, eq. 12, 14
    S[t] = Θ(V[t] − v_th);   H[t] = V_reset·S[t] + V[t]·(1 − S[t])        eq. 2–3 (hard reset)

with the rectangular surrogate ∂S/∂V = 1[|V − v_th| < a/2]/a, a = 1 (eq. 5). During training, Time-Step
Random Dropout (TSRD, §3.2) replaces the aggregator at a step by the plain V[t] = H[t−1] + I[t].
The paper's eq. 7–9 and 13–14 are partly lost in our text: the parts marked RECONSTRUCTED (spec
``staa.md`` §2, §3, §6) each sit in one small function below so they can be changed in one place.
With Pos = 0, zero GC output and SA gates of 1, STAALIF *is* the adaptive LIF; with M = 1 − 1/τ,
N = 1/τ it is ``neurons.LIF(tau)`` exactly (tests/test_staa.py).
"""
import time

import numpy as np

from .. import functional as F
from .. import models, neurons, train
from ..autograd import Tensor, tensor
from ..nn import Linear, Module, Parameter, is_recording

# ----------------------------------------------------------------------------- RECONSTRUCTED pieces


def init_coefficients(channels, tau, dtype=np.float32):
    """RECONSTRUCTED (spec §2): M, N of eq. 6 are per channel, shape [C, 1, 1], initialised to the plain LIF.

    Paper: "M and N are coefficient matrices that dynamically adjust through iterative learning,
    regulating activation and inhibition probabilities across layers." Their shape and start are not
    given; M = 1 − 1/τ, N = 1/τ makes V = M ⊙ H + N ⊙ I equal eq. 1 (V_reset = 0) at initialisation.
    """
    M = np.full((channels, 1, 1), 1.0 - 1.0 / tau, dtype)
    return M, np.full((channels, 1, 1), 1.0 / tau, dtype)


def init_gate_bias(conv2, bias):
    """RECONSTRUCTED (not in the paper): SA's last 1×1 conv starts with bias ``bias`` (None: the default init).

    Paper, on eq. 12: "α is a scaling factor that regulates the initial training speed for smoother
    convergence." The initialisation itself is not given. A sigmoid gate from the default init starts
    near 0.5 and halves the membrane; in our small ConvSNNs the layer then almost stops firing and does
    not learn within a few epochs (quick DigitsDVS, T = 2: 9% vs 63% for LIF). STAALIF therefore starts
    the gates at σ(4) ≈ 0.98 (close to the plain LIF, like M, N and the GC); ``sa_bias=None`` restores the default.
    """
    if bias is not None:
        conv2.bias.data[...] = bias


def gc_context(x, key_logits, pooling):
    """RECONSTRUCTED (spec §3): the key branch of the GC block, eq. 7, as GCNet's attention pooling.

    Paper: "W_k = X^{t,n} · Sigmoid(Conv_k(X^{t,n}))", with X "reshaped from C×H×W to C×HW".
    x: [N, C, HW], key_logits: [N, 1, HW] -> ctx = Σ_p a_p·x[:, :, p] of shape [N, C, 1], where
    a = softmax over the HW positions (GCNet, default) or the paper's literal sigmoid (no normalisation).
    """
    a = F.softmax(key_logits, axis=-1) if pooling == "softmax" else F.sigmoid(key_logits)
    return F.matmul(x, F.transpose(a, (0, 2, 1)))


def aggregate(M, N, gc_h, gc_x):
    """RECONSTRUCTED (spec §6): eq. 13 with the adaptive coefficients of eq. 6.

    Paper: "U^{t,n} = GC_1(X^{t,n}) ⊕ GC_2(H^{t−1,n}) ... The remaining update equations follow the
    original LIF model." We read ⊕ as eq. 6's weighted sum:  U = M ⊙ GC2(H[t−1]) + N ⊙ GC1(X[t]).
    """
    return M * gc_h + N * gc_x


def tsrd_mask(T, beta, rng, training):
    """TSRD (§3.2): which steps use the plain addition instead of the aggregator -> bool [T].

    Paper: "TSRD randomly dropout the augmentation module at timestep t ∈ (0, T) with a dropout
    probability β, and instead choose the most basic element-wise addition aggregation method."
    RECONSTRUCTED detail: one draw per step shared by the whole batch; the first step is never dropped
    (t ∈ (0, T) with steps counted from 0); never at inference.
    """
    drop = np.zeros(T, bool)
    if training and beta > 0 and T > 1:
        drop[1:] = rng.random(T - 1) < beta
    return drop


# ----------------------------------------------------------------------------- the three blocks


class GCBlock(Module):
    """Global Context block (eq. 7–10), applied to one step [N, C, H, W] (or [T, N, C, H, W], folded).

    W_k = attention pooling of X (see :func:`gc_context`);  W_q = Conv_q(W_k) (C → C/r);
    W_v = Conv_v(ReLU(LN(W_q))) (C/r → C);  Z = X ⊕ W_v (broadcast over H, W)   (eq. 10).
    The 1×1 convolutions act on [C, 1, 1] vectors (the key conv per position), so they are ``Linear``
    layers. Parameters: key C + 1, query C·C/r + C/r, LN 2·C/r, value C/r·C + C, i.e. 2·C·C/r plus the
    key conv, LN and biases (§4.3). The value layer starts at zero, as in GCNet, so Z = X at init.
    Small layers: with C/r = 1 the LN output is its bias (the block adds a constant), with C/r = 2 it is ±1.
    """

    def __init__(self, channels, reduction=4, pooling="softmax", rng=None):
        super().__init__()
        if pooling not in ("softmax", "sigmoid"):
            raise ValueError(f"pooling must be 'softmax' or 'sigmoid', got {pooling!r}")
        if int(channels) < 1 or int(reduction) < 1:
            raise ValueError(f"channels and reduction must be >= 1, got {channels}, {reduction}")
        rng = rng or np.random.default_rng(0)
        self.channels, self.hidden, self.pooling = int(channels), max(1, int(channels) // int(reduction)), pooling
        self.key = Linear(self.channels, 1, rng=rng)
        self.query = Linear(self.channels, self.hidden, rng=rng)
        self.ln_weight = Parameter(np.ones(self.hidden, np.float32))
        self.ln_bias = Parameter(np.zeros(self.hidden, np.float32))
        self.value = Linear(self.hidden, self.channels, rng=rng)
        self.value.weight.data[...] = 0
        self.value.bias.data[...] = 0

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
            raise ValueError(f"GCBlock: x must be [N, {self.channels}, H, W] or [T, N, {self.channels}, H, W], "
                             f"got {x.shape}")
        if x.ndim == 5:
            return F.reshape(self.forward(F.reshape(x, (-1,) + x.shape[2:])), x.shape)
        return x + self.context(x)


class StepAttention(Module):
    """Step attention (eq. 12): V = U ⊙ σ(Conv2(ReLU(Conv1(α·AvgPool_HW(U))))), C → C/r → C, α = 2."""

    def __init__(self, channels, reduction=16, alpha=2.0, gate_bias=None, rng=None):
        super().__init__()
        if int(channels) < 1 or int(reduction) < 1:
            raise ValueError(f"channels and reduction must be >= 1, got {channels}, {reduction}")
        rng = rng or np.random.default_rng(0)
        self.channels, self.alpha = int(channels), float(alpha)
        self.conv1 = Linear(self.channels, max(1, self.channels // int(reduction)), rng=rng)
        self.conv2 = Linear(max(1, self.channels // int(reduction)), self.channels, rng=rng)
        init_gate_bias(self.conv2, gate_bias)

    def gate(self, u):
        """σ(Conv2(ReLU(Conv1(α·AvgPool(U))))) for u [N, C, H, W] -> [N, C, 1, 1], one gate per channel."""
        z = self.conv2(F.relu(self.conv1(self.alpha * F.mean(u, axis=(2, 3)))))
        return F.reshape(F.sigmoid(z), z.shape + (1, 1))

    def forward(self, u):
        u = tensor(u)
        if u.ndim != 4 or u.shape[1] != self.channels:
            raise ValueError(f"StepAttention: u must be [N, {self.channels}, H, W], got {u.shape}")
        return u * self.gate(u)


# ----------------------------------------------------------------------------- the neuron


class STAALIF(neurons.BaseNeuron):
    """LIF with the spatial-temporal attention aggregator (eq. 6, 11–14) and TSRD; input [T, N, C, H, W].

    Unrolled over t with ordinary autograd ops (no fused kernel). ``gc``/``pe``/``sa`` switch the blocks
    off for ablations (off = identity; M, N stay). A [T, N, F] input (e.g. TASNN's hidden FC layer) is
    run as [T, N, F, 1, 1]: the GC then pools over one position (Z = X + MLP(X)) and SA gates each
    feature by a function of itself — defined, but not what the paper designs STAA for (conv maps).
    """

    def __init__(self, channels, T, tau=2.0, v_threshold=1.0, tsrd=0.1, rng=None, surrogate=None, v_reset=0.0,
                 reduction=4, sa_reduction=16, alpha=2.0, sa_bias=4.0, pooling="softmax", gc=True, pe=True, sa=True):
        super().__init__(v_threshold, v_reset, surrogate or neurons.Rectangle(1.0), False, 0.0, False)
        if not tau > 1.0 or int(T) < 1 or not 0.0 <= tsrd <= 1.0 or v_reset is None:
            raise ValueError(f"STAALIF: need tau > 1, T >= 1, 0 <= tsrd <= 1, hard reset; got tau={tau}, T={T}, "
                             f"tsrd={tsrd}, v_reset={v_reset}")
        self.rng = rng or np.random.default_rng(0)
        self.channels, self.T, self.tsrd, self.use_pe = int(channels), int(T), float(tsrd), bool(pe)
        self.gc1 = GCBlock(channels, reduction, pooling, self.rng) if gc else None
        self.gc2 = GCBlock(channels, reduction, pooling, self.rng) if gc else None
        self.sa = StepAttention(channels, sa_reduction, alpha, sa_bias, self.rng) if sa else None
        M, N = init_coefficients(self.channels, tau)
        self.M, self.N = Parameter(M), Parameter(N)
        self.pos = Parameter(np.zeros((self.T, self.channels), np.float32))
        self.last_dropped = np.zeros(self.T, bool)

    def coefficients(self):
        return self.M, self.N

    def _check(self, x):
        x = tensor(x)
        if x.ndim == 3:
            x = F.reshape(x, x.shape + (1, 1))
        if x.ndim != 5 or x.shape[0] != self.T or x.shape[2] != self.channels:
            raise ValueError(f"STAALIF: x must be [T={self.T}, N, C={self.channels}, H, W] (or [T, N, C]), "
                             f"got {x.shape}")
        return x

    def forward(self, x):
        shape = tensor(x).shape
        x = self._check(x)
        xin = x + F.reshape(self.pos, (self.T, 1, self.channels, 1, 1)) if self.use_pe else x   # eq. 11
        gx = self.gc1(xin) if self.gc1 is not None else xin                                     # GC1, all t at once
        self.last_dropped = drop = tsrd_mask(self.T, self.tsrd, self.rng, self.training)
        h = Tensor(np.zeros(x.shape[1:], x.dtype))
        spikes, mems, posts = [], [], []
        for t, (x_t, gx_t) in enumerate(zip(x, gx)):
            if drop[t]:
                v = h + x_t                                                     # TSRD: plain addition
            else:
                u = aggregate(self.M, self.N, self.gc2(h) if self.gc2 is not None else h, gx_t)    # eq. 6, 13
                v = self.sa(u) if self.sa is not None else u                                    # eq. 12, 14
            s = F.spike(v - self.v_threshold, self.surrogate)                                   # eq. 2
            h = v * (1 - s) + self.v_reset * s                                                  # eq. 3
            spikes.append(s)
            mems.append(v.data)
            posts.append(h.data)
        self._record(np.stack([s.data for s in spikes]), np.stack(mems), np.stack(posts))
        return F.reshape(F.stack(spikes), shape)

    def _record(self, s, u, h):
        """Firing statistics, and membranes for ``nn.recording()`` (decay/gain = M/N, approximate for STAA)."""
        self.n_neurons = int(np.prod(s.shape[2:]))
        self.spike_rate = None if self.training else float(s.mean())
        if is_recording():
            self.extras = {"u": u, "s": s, "h": h, "decay": self.M.data.copy(), "gain": self.N.data.copy(),
                           "v0": np.zeros((), s.dtype), "dropped": self.last_dropped.copy()}

    def extra_repr(self):
        blocks = [n for n, on in (("GC", self.gc1 is not None), ("PE", self.use_pe), ("SA", self.sa is not None)) if on]
        return f"channels={self.channels}, T={self.T}, blocks={'+'.join(blocks) or 'none'}, tsrd={self.tsrd}"


def staa_neuron(T, **kwargs):
    """Factory for ``models.ConvSNN(neuron=...)`` / ``VGGSNN``: ``neuron(channels) -> STAALIF(channels, T)``.

    All layers built by one factory share one generator for TSRD (``rng=``, default ``default_rng(0)``).
    """
    kwargs.setdefault("rng", np.random.default_rng(0))
    return lambda channels: STAALIF(channels, T, **kwargs)


def lif_neuron(channels=None):
    """The baseline of the comparison: plain LIF (eq. 1–3), τ = 2, v_th = 1, hard reset, the same surrogate a = 1."""
    return neurons.LIF(tau=2.0, surrogate=neurons.Rectangle(1.0))


# ----------------------------------------------------------------------------- the comparison (paper §4)


def run_comparison(dataset="digits", Ts=(2, 4, 8), epochs=None, quick=False, log=print, width=8, lr=3e-3,
                   batch_size=32, seed=0, tsrd=0.1, variants=None):
    """Train ConvSNN (``width``) with the plain LIF and with STAA-LIF at each T; report the test accuracy of
    the epoch with the best validation accuracy (20 % of the training set, split by ``seed``).

    The paper's claim (§4.2): STAA reaches better accuracy with fewer time steps. ``variants`` maps a
    name to a neuron factory builder ``T -> factory`` (default: "lif" and "staa"), which also runs
    ablations. ``dataset``: "digits", "motion" or "fashion" (``data_tools.datasets.load``); ``quick``: 320
    training / 160 test samples, 2 epochs. Same seed, data order and initial conv weights for every variant.
    Returns {name: {T: {"accuracy", "spike_rate", "seconds"}}}. Measured (4 epochs, width 8, seed 0), LIF vs
    STAA at T = 2/4/8: DigitsDVS 92.8/93.3/93.0% vs 93.6/92.2/92.8%; MotionDVS 98.0/88.0/83.5% vs 99.0/85.0/77.5%.
    """
    from data_tools.datasets import load, validation_split
    from data_tools.loader import DataLoader
    epochs = epochs or (2 if quick else 4)
    variants = variants or {"lif": lambda T: lif_neuron, "staa": lambda T: staa_neuron(T, tsrd=tsrd)}
    train_ds, test_ds = load(dataset, 0, *((320, 160) if quick else (None, None)))
    train_ds, val_ds = validation_split(train_ds, 0.2, seed)
    W, H, P = train_ds.sensor_size
    results = {name: {} for name in variants}
    for T in Ts:
        for name, build in variants.items():
            t0 = time.perf_counter()
            model = models.ConvSNN(len(train_ds.classes), P, H, width, build(T), rng=np.random.default_rng(seed))
            tr = DataLoader(train_ds, batch_size, T, rng=np.random.default_rng(seed))
            train.fit(model, tr, DataLoader(val_ds, 128, T, shuffle=False), epochs=epochs, lr=lr, log=None)
            res = train.evaluate(model, DataLoader(test_ds, 128, T, shuffle=False))
            row = {"accuracy": res["accuracy"], "spike_rate": res["spike_rate"], "seconds": time.perf_counter() - t0}
            results[name][T] = row
            if log:
                log(f"{dataset} T={T} {name:>6}: test accuracy {row['accuracy']:.2%}, spike rate "
                    f"{row['spike_rate']:.3f} ({row['seconds']:.0f}s)")
    return results
