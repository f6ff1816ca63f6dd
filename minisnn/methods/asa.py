"""ASA-SNN: Advanced Spatial Attention on the input current of a spiking layer.

Yao et al., "Inherent Redundancy in Spiking Neural Networks", ICCV 2023, §4 (eq. 5–10), spec specs/asa.md §3.
Placement: Conv → BN → AvgPool → **ASA** → LIF, so the membrane becomes U[t] = H[t−1] + X̄[t]  (eq. 7).

    M' = ½(F_avg + F_max) + a·F_avg + b·F_max                      (eq. 8; F pooled over H, W -> [T, N, C])
    M  = σ(W2 ReLU(W1 M'))  on the T axis, shared over channels      (eq. 9, ASA-1;  ASA-2: M = M')
    M1 = top_C(M) XOR top_T(M),  M2 = 1 − M1                         (eq. 5, the g2 pseudo-code, per sample)
    f_S(Z) = σ(conv3×3([avg_{T,C}(Z)/0.5 ; max_{T,C}(Z)]))           (eq. 10, one map [N, 1, H, W] per group)
    X̄  = f_S1(X⊙M1)⊙(X⊙M1) + f_S2(X⊙M2)⊙(X⊙M2)                     (eq. 6)

top_C marks the ⌊C/2⌋ largest channels of M per (t, sample), top_T the ⌊T/2⌋ largest steps per (c, sample).
``reduction=1``: eq. 9 is one T×T matrix, no ReLU (Table 3's count 3·60² + 114 = 10,914); r > 1: W1, ReLU, W2.

Gradients through the hard masks (our choice; the paper is silent and its code never trains a, b, W):
top-k is piecewise constant, so the exact gradient reaching a, b, W1, W2 is zero — they would keep
their initial values forever. With ``ste=True`` (default) the forward uses the hard M1, and the
backward is a straight-through estimator through a soft XOR:
    ∂M1/∂M := ∂/∂M [s_C + s_T − 2·s_C·s_T],   s = σ((M − θ)/τ)
with θ halfway between the k-th and (k+1)-th largest entry along the axis and τ its standard
deviation (θ, τ are constants). With ``ste=False`` the masks are constants (the reference code's
behaviour): a, b, W receive no gradient. Everything downstream of M1 (X, both convs) gets exact gradients.
RECONSTRUCTED: masks per sample (the reference code takes the top-k union over the batch), the 0.5
divisor of the masked average, the STE.
"""
import itertools

import numpy as np

from .. import functional as F
from ..autograd import Tensor, make
from ..nn import Module, Parameter, is_recording


def topk_mask(m, k, axis):
    """1 on the k largest entries of array ``m`` along ``axis`` (ties: the lower index wins), else 0."""
    rank = np.argsort(np.argsort(-m, axis=axis, kind="stable"), axis=axis, kind="stable")
    return (rank < k).astype(m.dtype)


def _soft_topk(m, k, axis):
    """σ((M − θ)/τ): smooth membership of the top-k set along ``axis`` (θ, τ constants)."""
    if k == 0:
        return Tensor(np.zeros(m.shape, m.dtype))
    srt = -np.sort(-m.data, axis=axis)
    theta = (np.take(srt, [k - 1], axis) + np.take(srt, [k], axis)) / 2
    tau = m.data.std(axis=axis, keepdims=True) + 1e-6
    return F.sigmoid((m - theta) / tau)


def channel_masks(m, ste=True):
    """M1 ∈ {0, 1}^[T, N, C] from the importance map M [T, N, C]: M1 = 1[(mask_c + mask_t)/2 == 0.5] (eq. 5).

    Forward: the hard XOR of the two top-k sets of each sample. Backward (``ste``): the soft XOR's gradient.
    """
    T, N, C = m.shape
    mc, mt = topk_mask(m.data, C // 2, 2), topk_mask(m.data, T // 2, 0)
    hard = (mc != mt).astype(m.dtype)
    if not (ste and m.requires_grad):
        return Tensor(hard)
    sc, st = _soft_topk(m, C // 2, 2), _soft_topk(m, T // 2, 0)
    return make(hard, (sc + st - 2 * sc * st,), lambda g: (g,))


def spatial_attention(z, weight, frac=0.5):
    """f_S(Z) = σ(conv3×3([avg_{T,C}(Z)/frac ; max_{T,C}(Z)]))  (eq. 10) for Z [T, N, C, H, W] -> [N, 1, H, W].

    ``frac`` is the fraction of entries the mask keeps (the average is over the kept ones only).
    """
    feat = F.stack([z.mean(axis=(0, 2)) / frac, z.max(axis=(0, 2))], axis=1)
    return F.sigmoid(F.conv2d(feat, weight, None, 1, 1))


def asa_output(x, m1, w1, w2):
    """X̄ = f_S1(X⊙M1)⊙(X⊙M1) + f_S2(X⊙M2)⊙(X⊙M2), M2 = 1 − M1  (eq. 6); x [T,N,C,H,W], m1 [T,N,C]."""
    T, N, C = m1.shape
    m1 = F.reshape(m1, (T, N, C, 1, 1))
    z1, z2 = x * m1, x * (1 - m1)
    a1, a2 = (F.reshape(spatial_attention(z, w), (1, N, 1) + x.shape[3:]) for z, w in ((z1, w1), (z2, w2)))
    return a1 * z1 + a2 * z2


class ASA(Module):
    """Advanced spatial attention on an input current [T, N, C, H, W] (eq. 5–10); see the module docstring.

    mode "asa1": learnable importance (eq. 8–9); "asa2": M = M' (eq. 8 only). a, b start at 0.5.
    """
    relevance_rule = "identity"  # relevance passes through the multiplicative gate to the gated current

    def __init__(self, T, channels, mode="asa1", reduction=1, ste=True, rng=None):
        super().__init__()
        if mode not in ("asa1", "asa2"):
            raise ValueError(f"ASA: mode must be 'asa1' or 'asa2', got {mode!r}")
        if int(T) < 1 or int(channels) < 1 or int(reduction) < 1:
            raise ValueError(f"ASA: T, channels and reduction must be >= 1, got {T}, {channels}, {reduction}")
        rng = rng or np.random.default_rng(0)
        self.T, self.channels, self.mode, self.reduction, self.ste = int(T), int(channels), mode, int(reduction), ste
        self.a, self.b = Parameter(np.array(0.5, np.float32)), Parameter(np.array(0.5, np.float32))
        init = lambda shape, fan: Parameter((rng.uniform(-1, 1, shape) / np.sqrt(fan)).astype(np.float32))
        if mode == "asa1":
            hidden = max(1, self.T // self.reduction)
            self.w1 = init((self.T, self.T) if self.reduction == 1 else (hidden, self.T), self.T)
            self.w2 = init((self.T, hidden), hidden) if self.reduction > 1 else None
        self.sa1, self.sa2 = init((1, 2, 3, 3), 18), init((1, 2, 3, 3), 18)

    def importance(self, x):
        """M [T, N, C]: eq. 8 (and eq. 9 for ASA-1, a linear map on the T axis shared over channels)."""
        f_avg, f_max = x.mean(axis=(3, 4)), x.max(axis=(3, 4))
        m = 0.5 * (f_avg + f_max) + self.a * f_avg + self.b * f_max
        if self.mode == "asa2":
            return m
        z = F.linear(F.transpose(m, (1, 2, 0)), self.w1)
        if self.w2 is not None:
            z = F.linear(F.relu(z), self.w2)
        return F.transpose(F.sigmoid(z), (2, 0, 1))

    def forward(self, x):
        if not isinstance(x, Tensor):
            x = Tensor(x)
        if x.ndim != 5 or x.shape[2] != self.channels or (self.mode == "asa1" and x.shape[0] != self.T):
            raise ValueError(f"ASA: x must be [T={self.T}, N, C={self.channels}, H, W], got shape {x.shape}")
        m = self.importance(x)
        m1 = channel_masks(m, self.ste)
        if is_recording():
            self.extras = {"M": m.data, "M1": m1.data}
        return asa_output(x, m1, self.sa1, self.sa2)

    def macs(self, x_shape):
        """Multiply-accumulates per sample for an input of shape [T, N, C, H, W] (for analysis.energy).

        Two 3×3 convs 2→1 on [H, W] (2·18·H·W), eq. 9 on the T axis per channel (C·T·T/r, twice for r > 1),
        and one gating multiply per element of X (T·C·H·W). Pooling and masking count as no MACs.
        """
        T, _, C, H, W = x_shape
        lin = 0 if self.mode == "asa2" else C * (self.w1.size + (self.w2.size if self.w2 is not None else 0))
        return 2 * 18 * H * W + lin + T * C * H * W

    def extra_repr(self):
        return f"T={self.T}, channels={self.channels}, mode={self.mode}, reduction={self.reduction}, ste={self.ste}"


def asa_gate(T, mode="asa1", reduction=1, ste=True, rng=None):
    """Factory for ``models.TASNN(gate=...)``: ``gate(channels, block_index) -> ASA`` on every conv block."""
    rng = rng or np.random.default_rng(0)
    return lambda channels, block_index: ASA(T, channels, mode, reduction, ste, rng)


def _datasets(name, seed, limit):
    """(train, test) via ``data_tools.datasets.load``; FashionDVS converts only ``limit`` / ``limit // 4`` images."""
    from data_tools.datasets import load
    return load(name, seed, *((limit, max(1, limit // 4)) if name == "fashion" else (None, None)))


def _train_and_measure(train_ds, test_ds, gate, cfg, log):
    """Train one TASNN and measure it on the test set: accuracy, NASFR, QE, energy (analysis.py)."""
    from data_tools.loader import DataLoader
    from .. import analysis, models, train
    W, H, P = train_ds.sensor_size
    model = models.TASNN(len(train_ds.classes), P, H, width=cfg["width"], gate=gate,
                         rng=np.random.default_rng(cfg["seed"]))
    tr = DataLoader(train_ds, cfg["batch_size"], cfg["T"], rng=np.random.default_rng(cfg["seed"]))
    te = DataLoader(test_ds, 64, cfg["T"], shuffle=False)
    if cfg["quick"]:
        tr, te = list(itertools.islice(tr, 3)), list(itertools.islice(te, 1))  # re-iterable lists of batches
    train.fit(model, tr, None, epochs=1 if cfg["quick"] else cfg["epochs"], lr=cfg["lr"], log=log)
    rec = analysis.record(model, te)
    e = analysis.energy(model, rec)
    return {"accuracy": train.evaluate(model, te)["accuracy"], "nasfr": analysis.nasfr(rec),
            "qe": analysis.quantization_error(rec), "mac": e["mac"], "ac": e["ac"], "energy_pj": e["energy_pj"],
            "params": int(sum(p.size for p in model.parameters()))}


def run_comparison(dataset="digits", epochs=5, T=8, width=0.25, mode="asa1", batch_size=32, lr=1e-3, seed=0,
                   quick=False, fashion_limit=3000, log=print):
    """Train TASNN without and with ASA (same seed, data and schedule) and report both side by side.

    ``dataset``: "digits" (DigitsDVS), "fashion" (FashionDVS, first ``fashion_limit`` training images), "motion"
    (MotionDVS) or "all" (digits and fashion; FashionDVS skipped when its files are missing). ``quick``: 3 training batches, 64 test samples.
    Returns {dataset: {"vanilla": row, mode: row, "delta_energy_pj": eq. 11}}, rows holding accuracy, nasfr,
    qe, mac, ac, energy_pj (per sample) and params.
    """
    from .. import analysis
    cfg = dict(epochs=epochs, T=T, width=width, batch_size=batch_size, lr=lr, seed=seed, quick=quick)
    report = {}
    for name in (["digits", "fashion"] if dataset == "all" else [dataset]):
        try:
            train_ds, test_ds = _datasets(name, seed, fashion_limit)
        except FileNotFoundError as exc:
            if dataset != "all":
                raise
            log(f"{name}: skipped ({exc})")
            continue
        rows = {tag: _train_and_measure(train_ds, test_ds, gate, cfg, log) for tag, gate in
                (("vanilla", None), (mode, asa_gate(T, mode, rng=np.random.default_rng(seed + 1))))}
        rows["delta_energy_pj"] = analysis.delta_energy(rows["vanilla"], rows[mode])["delta_energy_pj"]
        report[name] = rows
        for tag in ("vanilla", mode):
            r = rows[tag]
            log(f"{name:8s} {tag:8s} acc {r['accuracy']:.2%}  NASFR {r['nasfr']:.4f}  QE {r['qe']:.4f}  "
                f"energy {r['energy_pj'] / 1e6:.3f} uJ  (MAC {r['mac'] / 1e6:.2f}M, AC {r['ac'] / 1e6:.2f}M)")
        log(f"{name:8s} delta E (eq. 11) = {rows['delta_energy_pj'] / 1e6:+.3f} uJ per sample")
    return report
