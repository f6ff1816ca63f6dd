"""HSD — Hybrid Step-wise Distillation (ACM MM 2024; spec ``shared/specs/hsd.md``).

The pipeline of the paper's Fig. 3 / Alg. 1 on event frames split by eq. 1 into ``T = T1 + T2``:

1. **ANN temporal training** (§4.1): a 2-D ANN with QCFS activations (eq. 8) and average pooling
   sees each of the first T1 frames independently and is trained with the average CE, eq. 5.
2. **Conversion** (§4.2, eq. 3–4, 6–7): weights copied, each QCFS becomes an IF neuron with
   threshold θ = λ, v(0) = θ/2, reset by subtraction, whose spikes carry the value θ.
3. **SKD fine-tuning** (§4.3–4.4, eq. 9–13): the SNN runs on the last T2 frames; its loss is
   CE(mean_t z_t, y) + λ·L_SKD, each step distilled towards the frozen ANN's soft labels.

Where the paper is silent we say so (RECONSTRUCTED): BatchNorm is folded into the preceding
convolution at conversion; vanilla KD averages the student's logits (not its probabilities);
when T2 is smaller than the SNN segment, the SNN reads that segment's first T2 frames.
"""
import copy

import numpy as np

from .. import functional as F
from .. import losses, neurons, optim, train
from ..autograd import Tensor, no_grad, tensor
from ..nn import (AvgPool2d, BatchNorm2d, Conv2d, Flatten, Linear, MaxPool2d, Module, Parameter, ReLU,
                  Sequential)


# ----------------------------------------------------------------------------- QCFS and the ANN


class QCFS(Module):
    """Quantisation-clip-floor-shift activation (Bu et al. 2022), HSD eq. 8::

        a = λ · clip(⌊z·L/λ + ½⌋ / L, 0, 1)

    The floor is straight-through (``F.floor_ste``), the clip has zero gradient outside [0, 1], and the
    learnable per-layer λ receives gradient through both the division and the multiplication:
    ∂a/∂λ = q − z/λ inside the clip range (q = ⌊z·L/λ + ½⌋/L), 1 above it, 0 below; ∂a/∂z = 1 inside.
    """

    def __init__(self, L=16, init_lambda=8.0):
        super().__init__()
        if int(L) != L or L < 1:
            raise ValueError(f"QCFS: L must be a positive integer, got {L}")
        if not init_lambda > 0:
            raise ValueError(f"QCFS: init_lambda must be > 0, got {init_lambda}")
        self.L = int(L)
        self.lam = Parameter(np.array(init_lambda, dtype=np.float32))

    def forward(self, z):
        q = F.floor_ste(tensor(z) * self.L / self.lam + 0.5) / self.L
        return self.lam * F.clip(q, 0.0, 1.0)

    def extra_repr(self):
        return f"L={self.L}, lambda={float(self.lam.data):.4g}"


def hsd_ann(n_classes=10, in_channels=2, input_size=34, width=8, L=16, init_lambda=8.0, rng=None):
    """The ANN of HSD, shaped like ``models.ConvSNN``: [conv 3×3 → BN → QCFS → avgpool 2] × 2 → linear.

    Maps per-frame [N, P, H, W] -> [N, K]; a time-first [T, N, P, H, W] is folded into the batch
    (every frame independent, §4.1) and gives [T, N, K]. Average pooling, as conversion requires.
    """
    rng = rng or np.random.default_rng(0)
    s = (input_size // 2) // 2
    return Sequential(Conv2d(in_channels, width, 3, padding=1, bias=False, rng=rng), BatchNorm2d(width),
                      QCFS(L, init_lambda), AvgPool2d(2),
                      Conv2d(width, 2 * width, 3, padding=1, bias=False, rng=rng), BatchNorm2d(2 * width),
                      QCFS(L, init_lambda), AvgPool2d(2), Flatten(), Linear(2 * width * s * s, n_classes, rng=rng))


def ace_loss(ann_logits, labels, mode="per_frame"):
    """Average cross-entropy over the T1 frames, eq. 5: L_ACE = (1/T1) Σ_t CE(y_t, y_true).

    ``mode="mean"`` is the public code's variant, CE of the frame-mean logits. ``ann_logits`` is [T1, N, K].
    """
    z = tensor(ann_logits)
    if z.ndim != 3:
        raise ValueError(f"ace_loss: ann_logits must be [T1, N, K], got shape {z.shape}")
    if mode == "per_frame":
        return losses.tet_loss(z, labels)
    if mode == "mean":
        return losses.cross_entropy(z, labels)
    raise ValueError(f"ace_loss: mode must be 'per_frame' or 'mean', got {mode!r}")


# ----------------------------------------------------------------------------- conversion


class ThetaIF(Module):
    """The converted neuron, eq. 3–4: IF with threshold θ, v(0) = θ/2, reset by subtraction, output θ·s[t].

    v(t) = v(t−1) + x(t) − θ·s(t),  s(t) = H(v(t−1) + x(t) − θ)  (H(0) = 1); surrogate: triangle, eq. 12.
    """

    def __init__(self, theta, surrogate=None):
        super().__init__()
        if not (np.isfinite(theta) and theta > 0):
            raise ValueError(f"ThetaIF: theta must be finite and > 0, got {theta}")
        self.theta = float(theta)
        self.neuron = neurons.IF(v_threshold=self.theta, v_reset=None, v0=self.theta / 2,
                                 surrogate=surrogate or neurons.Triangle(1.0))

    def forward(self, x):
        return self.neuron(x) * self.theta

    def extra_repr(self):
        return f"theta={self.theta:.4g}"


def _fold_bn(conv, bn):
    """Conv followed by eval-mode BN as one conv: w' = w·γ/σ, b' = (b − μ)·γ/σ + β (RECONSTRUCTED)."""
    scale = bn.weight.data / np.sqrt(bn.running_var + bn.eps)
    out = Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=True)
    out.weight = Parameter(conv.weight.data * scale[:, None, None, None])
    b = conv.bias.data if conv.bias is not None else 0.0
    out.bias = Parameter((b - bn.running_mean) * scale + bn.bias.data)
    return out


def _convert_layers(layers, fold_bn):
    out = []
    for layer in layers:
        if isinstance(layer, QCFS):
            out.append(ThetaIF(float(layer.lam.data)))
        elif isinstance(layer, BatchNorm2d) and out and isinstance(out[-1], Conv2d) and fold_bn:
            out[-1] = _fold_bn(out[-1], layer)
        elif isinstance(layer, Sequential):
            out.append(Sequential(*_convert_layers(list(layer), fold_bn)))
        elif isinstance(layer, (MaxPool2d, ReLU)) or (isinstance(layer, BatchNorm2d) and fold_bn):
            raise ValueError(f"convert: cannot convert {type(layer).__name__}; build the ANN with QCFS, "
                             "AvgPool2d, and BatchNorm2d only right after a Conv2d (§4.2)")
        else:
            out.append(copy.deepcopy(layer))
    return out


def convert(ann, fold_bn=True):
    """ANN -> a NEW SNN (Alg. 1, "Transfer weights / thresholds, set v(0) = θ/2"); ``ann`` is untouched.

    Each QCFS(λ) becomes ``ThetaIF(θ = λ)``; BatchNorm2d is folded into the conv before it (``fold_bn=False``
    keeps a copy instead, as QCFS's reference code does: same eval output, batch statistics when fine-tuned;
    measured on DigitsDVS, folding fine-tunes as well or better); other layers are deep copies. For one layer with constant input z over T_AS = L steps the IF average n·θ/T_AS
    equals QCFS(z) exactly (spec §4); deeper, the error shrinks with T_AS only in expectation (eq. 6–7).
    The SNN maps [T, N, P, H, W] -> [T, N, K].
    """
    if not isinstance(ann, Sequential):
        raise TypeError(f"convert: ann must be an nn.Sequential, got {type(ann).__name__}")
    return Sequential(*_convert_layers(list(ann), fold_bn)).train(ann.training)


# ----------------------------------------------------------------------------- distillation losses


def _teacher_probs(teacher_logits, tau, n, k, dtype):
    zt = np.asarray(getattr(teacher_logits, "data", teacher_logits), dtype=dtype)
    zt = zt.mean(0) if zt.ndim == 3 else zt
    if zt.shape != (n, k):
        raise ValueError(f"teacher_logits must be [T1, {n}, {k}] or [{n}, {k}], got {zt.shape}")
    return np.exp(F.log_softmax(zt / tau).data)


def skd_loss(student_logits, teacher_logits, tau=10.0):
    """Step-wise KD, eq. 11 (with Hinton's τ², batch mean)::

        L_SKD = (1/T2) Σ_t KL(p_a ‖ p_s^t)·τ²,  p_a = softmax(mean_t' z^ANN_t' / τ),  p_s^t = softmax(z_t / τ)

    ``student_logits`` [T2, N, K]; ``teacher_logits`` [T1, N, K] (or [N, K]) is a constant (frozen teacher).
    """
    zs = tensor(student_logits)
    if zs.ndim != 3:
        raise ValueError(f"skd_loss: student_logits must be [T2, N, K], got shape {zs.shape}")
    if not tau > 0:
        raise ValueError(f"skd_loss: tau must be > 0, got {tau}")
    T2, N, K = zs.shape
    p_a = _teacher_probs(teacher_logits, tau, N, K, zs.dtype)
    log_p_a = np.log(np.maximum(p_a, np.finfo(zs.dtype).tiny))
    kl = F.sum(p_a * (log_p_a - F.log_softmax(zs / tau, axis=-1))) / (T2 * N)
    return kl * (tau * tau)


def kd_loss(student_logits, teacher_logits, tau=10.0):
    """Vanilla KD, eq. 9: KL(p_a ‖ p_s)·τ² with p_s = softmax(mean_t z_t / τ) (time-mean logits, spec §5)."""
    return losses.kd_loss(student_logits, teacher_logits, tau)


# ----------------------------------------------------------------------------- training


class FrameWindow:
    """A loader view that yields one side of eq. 1's split ``partition(frames, T1)``: the ANN's first T1
    frames (``T2=None``) or the first T2 frames of the SNN's segment (all of it when T2 = T − T1)."""

    def __init__(self, loader, T1, T2=None):
        self.loader, self.T1, self.T2 = loader, int(T1), T2

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        from data_tools.frames import partition
        for frames, labels in self.loader:
            first, rest = partition(frames, self.T1)
            if self.T2 is not None and not 1 <= self.T2 <= len(rest):
                raise ValueError(f"T2 must lie in [1, {len(rest)}], got {self.T2}")
            yield (first if self.T2 is None else rest[:self.T2]), labels


class _Slice(FrameWindow):
    """Frame t alone (a length-1 sequence): the ANN's accuracy on every frame shows how alike the segments are."""

    def __iter__(self):
        for frames, labels in self.loader:
            yield frames[self.T1:self.T1 + 1], labels


def finetune(snn, ann, loader, T1, T2, epochs=1, lr=1e-4, tau=10.0, lam=1.0, skd=True, log=print):
    """SKD fine-tuning (Alg. 1, second half): L_all = CE(mean_t z_t, y) + λ·L_SKD, eq. 13, with Adam.

    ``loader`` yields full frame sequences split by ``partition(frames, T1)``: the frozen ANN (eval mode)
    sees the first T1 frames, the SNN the next T2. ``skd=False`` distils with vanilla KD (eq. 9) instead.
    Returns the mean loss of each epoch.
    """
    from data_tools.frames import partition
    opt, history = optim.Adam(snn.parameters(), lr=lr), []
    distil = skd_loss if skd else kd_loss
    ann.eval()
    for epoch in range(epochs):
        snn.train()
        total = n = 0
        for frames, y in loader:
            first, rest = partition(frames, T1)
            with no_grad():
                teacher = ann(Tensor(first)).data
            out = snn(Tensor(rest[:T2]))
            loss = losses.cross_entropy(out, y) + lam * distil(out, teacher, tau)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, n = total + float(loss.data) * len(y), n + len(y)
        history.append(total / max(n, 1))
        if log:
            log(f"  fine-tune T2={T2} epoch {epoch + 1}/{epochs}: loss {history[-1]:.4f}")
    return history


# ----------------------------------------------------------------------------- the pipeline


def _datasets(dataset, quick, seed):
    """(train, test): a dataset name (``data_tools.datasets.load``) or a given pair; ``quick``: 300 / 150 samples."""
    from data_tools.datasets import load
    if isinstance(dataset, tuple):
        return dataset
    return load(dataset, seed, *((300, 150) if quick else (None, None)))


def run_pipeline(dataset="digits", T1=5, T2s=(1, 2, 3, 5), epochs=4, quick=False, log=print, ft_epochs=2,
                 width=8, L=8, init_lambda=2.0, lr=3e-3, ft_lr=3e-3, batch_size=32, tau=10.0, lam=1.0, seed=0):
    """HSD end to end, beside a directly trained SNN at the same T2 (the paper's Fig. 2 / Tab. 2 setting).

    Frames: T1 + max(T2s) per sample (eq. 1). ANN (QCFS, L) trained ``epochs`` epochs on the first T1
    frames with eq. 5 -> for each T2: convert (accuracy before fine-tuning), SKD fine-tune ``ft_epochs``
    epochs on the SNN segment's first T2 frames, test; the direct SNN (``models.ConvSNN``, LIF, CE) trains
    ``epochs + ft_epochs`` epochs on exactly the frames the HSD SNN sees. Returns a dict of accuracies,
    including the ANN's on each single frame ("ann_frame_accuracy": does it transfer to the SNN's segment?).
    """
    from data_tools.datasets import validation_split
    from data_tools.loader import DataLoader
    from .. import models
    T2s = tuple(int(t) for t in T2s)
    if T1 < 1 or not T2s or min(T2s) < 1:
        raise ValueError(f"run_pipeline: T1 and every T2 must be >= 1, got T1={T1}, T2s={T2s}")
    train_set, test_set = _datasets(dataset, quick, 0)
    train_set, val_set = validation_split(train_set, 0.2, seed)
    (_, H, P), K, n_frames = train_set.sensor_size, len(train_set.classes), T1 + max(T2s)
    rng = np.random.default_rng(seed)
    tr = DataLoader(train_set, batch_size, n_frames, rng=rng)
    te = DataLoader(test_set, 128, n_frames, shuffle=False)
    ann = hsd_ann(K, P, H, width, L, init_lambda, rng=np.random.default_rng(seed))
    if log:
        log(f"ANN (QCFS L={L}) on the first {T1} of {n_frames} frames, {len(train_set)} train samples")
    va = DataLoader(val_set, 128, n_frames, shuffle=False)
    train.fit(ann, FrameWindow(tr, T1), FrameWindow(va, T1), epochs, lr, loss_fn=ace_loss, log=log)
    result = {"T1": T1, "L": L, "ann_accuracy": train.evaluate(ann, FrameWindow(te, T1))["accuracy"],
              "lambdas": [float(m.lam.data) for m in ann.modules() if isinstance(m, QCFS)], "T2": {},
              "ann_frame_accuracy": [train.evaluate(ann, _Slice(te, t))["accuracy"] for t in range(n_frames)]}
    for T2 in T2s:
        snn, test_view = convert(ann), FrameWindow(te, T1, T2)
        row = {"converted": train.evaluate(snn, test_view)["accuracy"]}
        finetune(snn, ann, tr, T1, T2, ft_epochs, ft_lr, tau, lam, log=log)
        row["hsd"] = train.evaluate(snn, test_view)["accuracy"]
        direct = models.ConvSNN(K, P, H, width, rng=np.random.default_rng(seed))
        train.fit(direct, FrameWindow(tr, T1, T2), None, epochs + ft_epochs, lr, log=None)
        row["direct"] = train.evaluate(direct, test_view)["accuracy"]
        result["T2"][T2] = row
        if log:
            log(f"T2={T2}: converted {row['converted']:.2%} -> HSD {row['hsd']:.2%} | direct SNN {row['direct']:.2%}")
    return result
