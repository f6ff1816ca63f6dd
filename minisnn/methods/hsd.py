"""HSD — Hybrid Step-wise Distillation (ACM MM 2024; spec ``shared/specs/hsd.md``).

The pipeline of the paper's Fig. 3 / Alg. 1 on event frames split by eq. 1 into ``T = T1 + T2`` (the stream is
cut into T1 + T2 frames for each T2 on its own, ``data_tools.frames.partition``):

1. **ANN temporal training** (§4.1): a 2-D ANN with QCFS activations (eq. 8) and average pooling sees each of the
   first T1 frames independently and is trained with the average CE, eq. 5.
2. **Conversion** (§4.2, eq. 3–4, 6–7): weights copied, each QCFS becomes an IF neuron with threshold θ = λ,
   v(0) = θ/2, reset by subtraction, whose spikes carry the value θ (RECONSTRUCTED: BatchNorm folded into the conv).
3. **SKD fine-tuning** (§4.3–4.4, eq. 9–13): the SNN runs on the last T2 frames; its loss is CE(mean_t z_t, y) +
   λ·L_SKD, each step distilled towards the frozen ANN's soft labels (over steps, probabilities average: eq. 10).
"""
import copy
import functools
import time

import numpy as np

from .. import functional as F
from .. import losses, neurons, train
from ..autograd import no_grad, tensor
from ..claims import Claim
from ..nn import (AvgPool2d, BatchNorm2d, Conv2d, Flatten, Linear, MaxPool2d, Module, Parameter, ReLU,
                  Sequential)
from . import experiment_data, loaders


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
        if int(L) != L or L < 1 or not init_lambda > 0:
            raise ValueError(f"QCFS: L must be a positive integer and init_lambda > 0, got {L}, {init_lambda}")
        self.L = int(L)
        self.lam = Parameter(np.array(init_lambda, dtype=np.float32))

    def forward(self, z):
        q = F.floor_ste(tensor(z) * self.L / self.lam + 0.5) / self.L
        return self.lam * F.clip(q, 0.0, 1.0)

    def extra_repr(self):
        return f"L={self.L}, lambda={float(self.lam.data):.4g}"


def hsd_ann(n_classes=10, in_channels=2, input_size=34, width=8, L=16, init_lambda=8.0, rng=None):
    """The ANN of HSD, shaped like ``models.ConvSNN``: [conv 3×3 → BN → QCFS → avgpool 2] × 2 → linear (average
    pooling, as conversion requires). Per frame [N, P, H, W] -> [N, K]; a time-first [T, N, P, H, W] is folded into
    the batch (every frame independent, §4.1) -> [T, N, K]."""
    rng = rng or np.random.default_rng(0)
    s = (input_size // 2) // 2
    return Sequential(Conv2d(in_channels, width, 3, padding=1, bias=False, rng=rng), BatchNorm2d(width),
                      QCFS(L, init_lambda), AvgPool2d(2),
                      Conv2d(width, 2 * width, 3, padding=1, bias=False, rng=rng), BatchNorm2d(2 * width),
                      QCFS(L, init_lambda), AvgPool2d(2), Flatten(), Linear(2 * width * s * s, n_classes, rng=rng))


def ace_loss(ann_logits, labels, mode="per_frame"):
    """Average cross-entropy over the T1 frames, eq. 5: L_ACE = (1/T1) Σ_t CE(y_t, y_true), ``ann_logits`` [T1, N, K].
    ``mode="mean"``: the public code's variant, CE of the frame-mean logits."""
    z = tensor(ann_logits)
    if z.ndim != 3 or mode not in ("per_frame", "mean"):
        raise ValueError(f"ace_loss: ann_logits must be [T1, N, K], mode per_frame|mean, got {z.shape}, {mode!r}")
    return losses.tet_loss(z, labels) if mode == "per_frame" else losses.cross_entropy(z, labels)


# ----------------------------------------------------------------------------- conversion


class ThetaIF(Module):
    """The converted neuron, eq. 3–4: IF with threshold θ, v(0) = θ/2, reset by subtraction, output θ·s[t]:
    v(t) = v(t−1) + x(t) − θ·s(t),  s(t) = H(v(t−1) + x(t) − θ)  (H(0) = 1); surrogate: triangle, eq. 12."""

    def __init__(self, theta, surrogate=None):
        super().__init__()
        if not (np.isfinite(theta) and theta > 0):
            raise ValueError(f"ThetaIF: theta must be finite and > 0, got {theta}")
        self.theta = float(theta)
        self.neuron = neurons.IF(v_threshold=self.theta, v_reset=None, v0=self.theta / 2,
                                 surrogate=surrogate or neurons.Triangle(1.0))

    def forward(self, x):
        return self.neuron(x) * self.theta


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
    """ANN -> a NEW SNN [T, N, P, H, W] -> [T, N, K] (Alg. 1, "Transfer weights / thresholds, set v(0) = θ/2").

    Each QCFS(λ) becomes ``ThetaIF(θ = λ)``; BatchNorm2d is folded into the conv before it (``fold_bn=False`` keeps
    a copy, as QCFS's reference code does: same eval output, batch statistics when fine-tuned); other layers are deep
    copies. For one layer with constant input z over T_AS = L steps the IF average n·θ/T_AS equals QCFS(z) exactly
    (spec §4); deeper, the error shrinks with T_AS only in expectation (eq. 6–7).
    """
    # Measured on DigitsDVS: folding fine-tunes as well as the kept BatchNorm or better.
    if not isinstance(ann, Sequential):
        raise TypeError(f"convert: ann must be an nn.Sequential, got {type(ann).__name__}")
    return Sequential(*_convert_layers(list(ann), fold_bn)).train(ann.training)


# ----------------------------------------------------------------------------- distillation losses


def skd_loss(student_logits, teacher_logits, tau=10.0):
    """Step-wise KD, eq. 11 (with Hinton's τ², batch mean): vanilla KD against every single step::

        L_SKD = (1/T2) Σ_t KL(p_a ‖ p_s^t)·τ²,  p_s^t = softmax(z_t / τ),  p_a = (1/T1) Σ_t' softmax(z^ANN_t' / τ)

    (p_a "resembles Eq. (10)"); ``student_logits`` [T2, N, K], ``teacher_logits`` [T1, N, K] or [N, K], a constant.
    """
    zs = tensor(student_logits)
    if zs.ndim != 3:
        raise ValueError(f"skd_loss: student_logits must be [T2, N, K], got shape {zs.shape}")
    return sum(kd_loss(zs[t], teacher_logits, tau) for t in range(len(zs))) / len(zs)


def kd_loss(student_logits, teacher_logits, tau=10.0):
    """Vanilla KD, eq. 9-10: KL(p_a ‖ p_s)·τ², p_s = (1/T2) Σ_t softmax(z_t / τ), p_a alike (``losses.kd_loss``)."""
    return losses.kd_loss(student_logits, teacher_logits, tau)


# ----------------------------------------------------------------------------- training


class FrameWindow:
    """A loader view: frames ``start:stop`` of every batch (the ANN's first T1 frames: ``0, T1``; frame t alone)."""

    def __init__(self, loader, start, stop):
        self.loader, self.start, self.stop = loader, int(start), int(stop)

    def __iter__(self):
        for frames, labels in self.loader:
            yield frames[self.start:self.stop], labels


class Student(Module):
    """An SNN fed whole T1 + T2 frame sequences: it sees the last T2, ``partition(x, T1)[1]`` (``dts``: all T frames
    in training, Fig. 2's DTS); a frozen ``teacher`` (eval mode, no gradient, not a sub-module: no optimiser sees it)
    leaves its logits on the first T1 frames in ``teacher_logits``, for the distillation loss."""

    def __init__(self, snn, T1, teacher=None, dts=False):
        super().__init__()
        self.snn, self.T1, self.dts, self.teacher_logits = snn, int(T1), bool(dts), None
        object.__setattr__(self, "teacher", teacher)

    def forward(self, x):
        from data_tools.frames import partition
        first, rest = partition(x, self.T1)
        if self.teacher is not None:
            with no_grad():
                self.teacher_logits = self.teacher.eval()(first).data
        return self.snn(x if self.training and self.dts else rest)


def finetune(student, train_loader, val_loader, epochs=1, lr=1e-4, distil="skd", tau=10.0, lam=1.0, log=print):
    """Train a :class:`Student` (Alg. 1, second half) by ``train.fit`` with Adam -> its history. L_all = CE(mean_t z_t,
    y) + λ·L (eq. 13), L = L_SKD (eq. 11, ``distil="skd"``), vanilla L_KD (eq. 9, ``"kd"``) or none (``None``: CE only,
    "HT only" of Tab. 2)."""
    if distil not in ("skd", "kd", None) or (distil and student.teacher is None):
        raise ValueError(f"finetune: distil must be 'skd' or 'kd' (with a Student's teacher) or None, got {distil!r}")
    fn = skd_loss if distil == "skd" else kd_loss

    def loss(out, y):
        ce = losses.cross_entropy(out, y)
        return ce + lam * fn(out, student.teacher_logits, tau) if distil else ce
    return train.fit(student, train_loader, val_loader, epochs, lr, loss_fn=loss, log=log)


# ----------------------------------------------------------------------------- the pipeline

ARMS = ("direct", "hsd", "ht", "skd", "kd", "dts")


def run_t2(dataset="digits", T1=5, T2=1, arms=("direct", "hsd"), seed=0, quick=False, log=print, epochs=None,
           ft_epochs=None, width=8, L=8, init_lambda=2.0, lr=3e-3, ft_lr=3e-3, batch_size=32, tau=10.0, lam=1.0):
    """HSD and its baselines at one T2 (the protocol of :mod:`minisnn.methods`; ``dataset``: a name or a (train, test)
    pair), each sample cut into T = T1 + T2 frames for this T2 alone (eq. 1), every arm tested on the last T2 frames.
    "hsd": QCFS ANN trained ``epochs`` on the first T1 frames (eq. 5) -> convert -> ``finetune`` ``ft_epochs`` with
    CE + λ·SKD; "ht" (hybrid training only), "kd": the same with CE / CE + λ·KD. "direct" (Fig. 2's STS): a ConvSNN
    trained with CE on the last T2 frames; "skd": + λ·SKD from the ANN; "dts": trained on all T frames. Equal budget:
    every arm makes ANN + fine-tuning epochs passes (default 3 + 3; ``quick``: 1 + 1 on 150 / 75 samples) in the same
    batch order. Returns {arm: {"accuracy", "seconds" (its training)}}, "ann" also with "frame_t" (on frame t alone),
    and "converted" (before fine-tuning)."""
    from .. import models
    if set(arms) - set(ARMS) or T1 < 1 or T2 < 1:
        raise ValueError(f"run_t2: arms must come from {ARMS} and T1, T2 >= 1, got {arms}, T1={T1}, T2={T2}")
    data = experiment_data(dataset, seed, *((150, 75) if quick else ()))
    epochs, ft_epochs = epochs or (1 if quick else 3), ft_epochs or (1 if quick else 3)
    (_, H, P), K, T = data[0].sensor_size, len(data[0].classes), T1 + T2
    tr, va, te = loaders(data, T, batch_size, seed)
    ann = hsd_ann(K, P, H, width, L, init_lambda, rng=np.random.default_rng(seed))
    tr.rng, t0 = np.random.default_rng(seed), time.perf_counter()          # every arm: the same batch order
    train.fit(ann, FrameWindow(tr, 0, T1), FrameWindow(va, 0, T1), epochs, lr, loss_fn=ace_loss, log=log)
    acc = lambda model, view: train.evaluate(model, view)["accuracy"]                 # noqa: E731
    res = {"ann": {"accuracy": acc(ann, FrameWindow(te, 0, T1)), "seconds": time.perf_counter() - t0,
                   **{f"frame_{t + 1}": acc(ann, FrameWindow(te, t, t + 1)) for t in range(T)}},
           "converted": {"accuracy": acc(Student(convert(ann), T1), te)}}
    for arm in arms:
        ht, distil = arm in ("hsd", "ht", "kd"), {"hsd": "skd", "skd": "skd", "kd": "kd"}.get(arm)
        snn = convert(ann) if ht else models.ConvSNN(K, P, H, width, rng=np.random.default_rng(seed))
        student = Student(snn, T1, ann if distil else None, arm == "dts")
        tr.rng, t0 = np.random.default_rng(seed), time.perf_counter()
        finetune(student, tr, va, ft_epochs if ht else epochs + ft_epochs, ft_lr if ht else lr, distil, tau, lam, None)
        res[arm] = {"accuracy": acc(student, te), "seconds": time.perf_counter() - t0}
    if log:
        log(f"T1={T1}, T2={T2}: " + " | ".join(f"{k} {v['accuracy']:.2%}" for k, v in res.items()))
    return res


# ----------------------------------------------------------------------------- claims (minisnn.claims)


EXPERIMENTS = {"hsd-T2=1": functools.partial(run_t2, "digits", 5, 1, ("direct", "hsd")),   # (seed, quick, log)
               "hsd-T2=2": functools.partial(run_t2, "digits", 5, 2, ARMS)}
CLAIMS = [Claim("HSD", where, quote, exp, "accuracy", base, meth) for where, exp, base, meth, quote in (
    ("§5.5, Fig. 2(a): T = 1", "hsd-T2=1", "direct", "hsd", "For CIFAR10-DVS, setting the time step to 1, TET (STS) "
     "achieves a performance of 74.82%, while our HSD attains a higher accuracy of 75.81%."),
    ("§5.5, Fig. 2(a): T = 2", "hsd-T2=2", "direct", "hsd", "As depicted in Fig. 2(a), HSD's performance consistently "
     "exceeds TET (STS)'s at each time step."),
    ("§5.5, Fig. 2(c): T = 2", "hsd-T2=2", "dts", "hsd", "With the increase in T, both methods exhibit significant "
     "accuracy enhancements, with HSD consistently outperforming TET (STS) and TET (DTS)."),
    ("§1, Fig. 2: T = 2", "hsd-T2=2", "dts", "direct", "Furthermore, we observe that STS often outperforms DTS, "
     "particularly at lower time steps."),
    ("§5.3.1, Tab. 2 (T = 5; here T2 = 2)", "hsd-T2=2", "direct", "ht", "The introduction of HT module enables SNN to "
     "capture more event frame information within lower time steps, resulting in a notable 5.61% performance "
     "improvement, reaching an accuracy of 79.21%."),
    ("§5.3.1, Tab. 2 (T = 5; here T2 = 2)", "hsd-T2=2", "direct", "skd", "SKD module effectively transfers the \"Soft "
     "Labels\" acquired by ANN to SNN, leading to a 2.10% enhancement and an accuracy level of 75.70%."),
    ("§5.3.2, Tab. 2 (T = 5; here T2 = 2)", "hsd-T2=2", "kd", "hsd", "In Tab. 2, compared to vanilla KD, SKD module "
     "shows performance enhancements on all three datasets."))]
