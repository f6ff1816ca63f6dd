"""Razor SNN (Zhang et al., arXiv 2306.17597): temporal embeddings score event frames; weak frames are pruned.

A :class:`RazorGate` sits right before a spiking layer, on its input X ∈ [T, N, C, H, W] (§3.2; or [T, N, C]):

    w  = softmax_K(FC(mean_{t,H,W} X))                    embedding weighting        (eq. 6)
    Ê_k = w_k·E_k,  E ∈ R^{K×C} learnable                 global temporal embeddings (eq. 6)
    M[t] = σ(mean_k ⟨F[t], Ê_k⟩ / √C),  F[t] = mean_HW X[t]   events-of-interest mask (eq. 7)
    X̃[t] = M[t]·X[t]                                      reconstructed feature      (eq. 8)
    s[t] = max_{C,H,W} X̃[t]                               frame score, [T, N]        (eq. 9)
    training:  X' = X̃     inference:  m[t] = Θ(s[t] − θ),  X'[t] = m[t]·X[t]          (eq. 10-11)

Eq. 11 as the prose reads ("set the attention score of the other frames to 1"): kept frames unscaled; the spec's
other reading, X' = m·X̃, is ``hard_input="refined"``. A pruned frame leaves the layer it gates (its output there is
dropped: LIAF would still emit ReLU(0.3·h)), so the next synaptic layer computes the kept frames only (RazorNet).
The paper's equations 1-11 are lost from our text; RECONSTRUCTED marks our reading of the prose (specs/razor.md).
"""

import numpy as np

from .. import functional as F
from .. import losses, models, neurons, train
from ..bench import paired_seconds
from ..autograd import Tensor, no_grad, tensor
from ..claims import Claim
from ..nn import Conv2d, Linear, Module, Parameter, Sequential, _count
from . import experiment_data, loaders, topk_mask


def liaf(channels=None):
    """§3.1 LIAF with TA-SNN constants: u = 0.3·h + x, v_th = 0.3, hard reset; output ReLU(u), spike resets."""
    return neurons.LIAF(decay=0.3, gain=1.0, v_threshold=0.3, surrogate=neurons.Rectangle(0.5))


def embedding_weights(x, fc):
    """Eq. 6, RECONSTRUCTED: w = softmax_K(FC(mean_{t,H,W} X)) -> [N, K] ("a convolution-based module": 1×1 = FC)."""
    return F.softmax(fc(F.mean(x, axis=(0,) + tuple(range(3, x.ndim)))), axis=-1)


def eoi_mask(x, embeddings, w):
    """Eq. 6-7, RECONSTRUCTED: Ê_k = w_k·E_k, F[t] = mean_HW X[t] ∈ R^C, M[t] = σ(mean_k ⟨F[t], Ê_k⟩ / √C) -> [T, N]."""
    e_hat = F.reshape(w, w.shape + (1,)) * embeddings                   # [N, K, C]
    feat = F.mean(x, axis=tuple(range(3, x.ndim))) if x.ndim > 3 else x   # [T, N, C]
    sim = F.sum(feat * F.mean(e_hat, axis=1), axis=-1)                 # mean_k ⟨F, Ê_k⟩ = ⟨F, mean_k Ê_k⟩
    return F.sigmoid(sim / np.sqrt(x.shape[2]))


def reconstruct(x, mask):
    """Eq. 8: X̃[t] = M[t]·X[t] (a [T, N] mask scales whole frames)."""
    return x * F.reshape(mask, mask.shape + (1,) * (x.ndim - 2))


def frame_scores(x_tilde):
    """Eq. 9: s[t] = max over (C, H, W) of X̃[t] (adaptive max pool 3-D to 1×1×1) -> [T, N]."""
    return F.max(x_tilde, axis=tuple(range(2, x_tilde.ndim)))


def threshold_mask(scores, threshold):
    """Eq. 10: m[t] = Θ(s[t] − θ), Θ(0) = 1: frames scoring below θ are pruned."""
    return (np.asarray(scores) >= threshold).astype(np.asarray(scores).dtype)


def keep_ratio_mask(scores, keep_ratio):
    """RECONSTRUCTED ("razor ratio" is ambiguous): per sample keep the ⌊ρ·T + ½⌋ highest-scoring frames
    (ties: the earlier frame wins) and prune the rest."""
    scores = np.asarray(scores)
    return topk_mask(scores, int(np.floor(keep_ratio * scores.shape[0] + 0.5)), axis=0)


def prune(x, x_tilde, m, hard_input="raw"):
    """Eq. 11: X'[t] = m[t]·X[t] ("raw", the prose; default) or m[t]·X̃[t] ("refined", RECONSTRUCTED option)."""
    return reconstruct(x if hard_input == "raw" else x_tilde, m)


class RazorGate(Module):
    """The event pruning mechanism of §3.2 on [T, N, C, ...] with K learnable embeddings (K = 4 best, Tab. 4); an eval
    pass prunes by the rule of :meth:`set_pruning` (none: the soft path). After any pass: ``mask`` (M) and ``scores``
    (s), [T, N]; after an eval pass also ``frame_mask`` (m) and ``pruned_fraction`` = mean(1 − m)."""
    relevance_rule = "identity"   # a multiplicative gate: relevance passes to the gated signal

    def __init__(self, channels, T, n_embeddings=4, threshold=None, keep_ratio=None, rng=None, hard_input="raw"):
        super().__init__()
        self.channels, self.T = _count(channels, "channels", "RazorGate"), _count(T, "T", "RazorGate")
        n_embeddings, rng = _count(n_embeddings, "n_embeddings", "RazorGate"), rng or np.random.default_rng(0)
        self.set_pruning(threshold, keep_ratio, hard_input)
        self.embeddings = Parameter(rng.normal(0.0, 1.0, (n_embeddings, channels)).astype(np.float32))
        self.weighting = Linear(channels, n_embeddings, rng=rng)
        self.mask = self.scores = self.frame_mask = self.pruned_fraction = None

    def set_pruning(self, threshold=None, keep_ratio=None, hard_input="raw"):
        """The inference rule: a score threshold θ (eq. 10), a keep ratio ρ ∈ [0, 1] or neither (no pruning), and
        eq. 11's input, X' = m·X ("raw") or m·X̃ ("refined")."""
        bad_threshold = threshold is not None and (keep_ratio is not None or not np.isfinite(threshold))
        bad_ratio = keep_ratio is not None and not 0.0 <= keep_ratio <= 1.0
        if bad_threshold or bad_ratio or hard_input not in ("raw", "refined"):
            raise ValueError(f"RazorGate: give a finite threshold or a keep_ratio in [0, 1], not both, and hard_input "
                             f"'raw' or 'refined'; got {threshold}, {keep_ratio}, {hard_input!r}")
        self.threshold, self.keep_ratio, self.hard_input = threshold, keep_ratio, hard_input

    def forward(self, x):
        x = tensor(x)
        if x.ndim < 3 or x.shape[0] != self.T or x.shape[2] != self.channels:
            raise ValueError(f"RazorGate: x must be [T={self.T}, N, C={self.channels}, ...], got {x.shape}")
        mask = eoi_mask(x, self.embeddings, embedding_weights(x, self.weighting))
        out = x_tilde = reconstruct(x, mask)
        self.mask, self.scores, self.frame_mask, self.pruned_fraction = mask.data, frame_scores(out).data, None, None
        if not self.training:
            rule = self.threshold is not None or self.keep_ratio is not None
            m = (threshold_mask(self.scores, self.threshold) if self.threshold is not None else
                 keep_ratio_mask(self.scores, self.keep_ratio) if rule else np.ones_like(self.scores))
            self.frame_mask, self.pruned_fraction = m, float(1.0 - m.mean())
            out = prune(x, x_tilde, m, self.hard_input) if rule else x_tilde
        self.extras = {"mask": self.mask, "scores": self.scores, "frame_mask": self.frame_mask}
        return out


def on_kept_frames(layer, x, keep):
    """``layer`` (Conv2d / Linear) on the kept frames only (``keep``: [T, N] bool), its response to an empty frame
    (its bias, or 0) on the others: ``layer(x·keep)`` at the cost of the kept frames. Inference: no autograd graph."""
    x = np.asarray(getattr(x, "data", x))
    kept = layer(Tensor(x[keep] if keep.any() else np.zeros((1,) + x.shape[2:], x.dtype))).data   # [M kept, ...]
    out = np.empty(keep.shape + kept.shape[1:], kept.dtype)
    out[...] = 0 if layer.bias is None else layer.bias.data.reshape((-1,) + (1,) * (kept.ndim - 2))   # layer(0)
    out[keep] = kept[:int(keep.sum())]
    return Tensor(out)


class RazorNet(Sequential):
    """A Sequential with RazorGates whose eval pass skips the pruned frames' work (after a gate, the next synaptic layer
    runs :func:`on_kept_frames`); ``mode="leaky"``: eq. 11 on the input only, nothing skipped. After an eval pass
    ``macs`` lists (gate or None, frames computed, frames, MACs per frame) per synaptic layer."""
    mode = "skip"

    def forward(self, x):
        if self.training:
            return super().forward(x)
        gate, self.macs = None, []
        for layer in self:
            if isinstance(layer, (Conv2d, Linear)):
                keep = None if gate is None or self.mode == "leaky" else gate.frame_mask > 0
                x, n = tensor(x), int(np.prod(x.shape[:2]))
                x, done = (layer(x), n) if keep is None or keep.all() else (on_kept_frames(layer, x, keep), keep.sum())
                self.macs.append((gate, int(done), n, x[0, 0].size * (layer.weight.size // layer.weight.shape[0])))
                gate = None
            else:
                x = layer(x)
                gate = layer if isinstance(layer, RazorGate) else gate
        return x


def razor_tasnn(n_classes, in_channels, input_size, T, width=0.25, rng=None, gate_rng=None, **gate_kw):
    """The Razor SNN (§3.3): ``models.TASNN`` with LIAF neurons and a RazorGate (``gate_kw``) before every spiking
    layer except the encoder (Fig. 3: E3) — the two later conv blocks and the hidden FC layer — as a RazorNet."""
    gate_rng = gate_rng or np.random.default_rng(0)
    make = lambda c, i: None if i == 0 else RazorGate(c, T, rng=gate_rng, **gate_kw)    # noqa: E731
    layers = list(models.TASNN(n_classes, in_channels, input_size, width, neuron=liaf, gate=make, rng=rng))
    layers.insert(len(layers) - 2, make(layers[-3].out_features, -1))   # [..., Linear, gate, LIAF, Linear]
    return RazorNet(*layers)


def gates(model):
    """All RazorGates of a model, in order."""
    return [m for m in model.modules() if isinstance(m, RazorGate)]


def set_pruning(model, threshold=None, keep_ratio=None, hard_input="raw"):
    """The same inference rule (θ or ρ, eq. 11's input) on every gate of ``model``; returns the model."""
    for g in gates(model):
        g.set_pruning(threshold, keep_ratio, hard_input)
    return model


def saved_operations(model, x):
    """One eval pass of a :class:`RazorNet` on ``x`` [T, N, ...]: per gate, its pruned frames and the MACs (outputs
    per frame × fan-in) the next synaptic layer skipped; ``total_macs``: every synaptic layer, every frame (the gates'
    own cost and the neurons' updates left out) -> {"layers", "saved_macs", "total_macs", "saved_fraction", "output"}"""
    was_training = model.training
    with no_grad():
        out = model.eval()(tensor(x))
    model.train(was_training)
    layers = [{"pruned_fraction": g.pruned_fraction, "pruned_frames": float((1 - g.frame_mask).sum()),
               "macs_per_frame": per, "saved_macs": float((n - done) * per)} for g, done, n, per in model.macs if g]
    saved, total = sum(float((n - d) * p) for _, d, n, p in model.macs), sum(n * p for _, _, n, p in model.macs)
    return {"layers": layers, "saved_macs": saved, "total_macs": total, "saved_fraction": saved / total,
            "output": out.data}


def evaluate_pruning(model, loader):
    """Eval over a loader: accuracy, per-gate pruned fraction, saved / total MACs (:func:`saved_operations`)."""
    rs = [(saved_operations(model, x), np.asarray(y)) for x, y in loader]
    n, T = sum(len(y) for _, y in rs), len(rs[0][0]["output"])
    pruned = np.sum([[g["pruned_frames"] for g in r["layers"]] for r, _ in rs], axis=0) / (n * T)
    saved, total = (sum(r[k] for r, _ in rs) for k in ("saved_macs", "total_macs"))
    return {"accuracy": sum(int(np.sum(r["output"].mean(0).argmax(-1) == y)) for r, y in rs) / n, "saved_macs": saved,
            "pruned_fraction": pruned.tolist(), "total_macs": total, "saved_fraction": saved / total}


def run_comparison(dataset="motion", epochs=None, quick=False, log=print, T=8, width=0.25, rule=None, lr=3e-3,
                   seed=0, repeats=7):
    """A plain LIAF TASNN and the Razor SNN (:func:`razor_tasnn`) on the same data, seed, batch order and epochs (the
    protocol of :mod:`minisnn.methods`), trained with the paper's loss (§4.1 "We take rate coding as loss function":
    MSE of the time-mean output to the one-hot label). Arms: "plain", "razor" (nothing pruned), "razor_pruned"
    (``rule``, default keep ratio 0.75), and on that model "razor_refined" (X' = m·X̃) and "razor_leaky" (LIAF output
    on pruned frames kept, nothing skipped), each with accuracy, MACs per sample, saved MAC and pruned frame fractions;
    the first three with inference seconds on the test set (median of ``repeats``) and "time_vs_plain", the median of
    the per-round ratios to "plain" (:func:`paired_seconds`)."""
    epochs, log, rule = epochs or (1 if quick else 10), log or (lambda *_: None), rule or {"keep_ratio": 0.75}
    motion = dict(size=16 if quick else 34) if dataset == "motion" else {}   # MotionDVS clips at 16×16 or 34×34
    tr, va, te = experiment_data(dataset, seed, *((160, 80) if quick else (600, 200) if motion else ()), **motion)
    train_loader, val_loader, test_loader = loaders((tr, va, te), T, 8 if quick else 32, seed, 100, split_by="time")
    (_, H, P), K = tr.sensor_size, len(tr.classes)
    plain = RazorNet(*models.TASNN(K, P, H, width, neuron=liaf, rng=np.random.default_rng(seed)))
    razor = razor_tasnn(K, P, H, T, width, rng=np.random.default_rng(seed), gate_rng=np.random.default_rng(seed + 1))
    for name, model in (("plain", plain), ("razor", razor)):
        log(f"--- {name}: TASNN ×{width} LIAF on {dataset}, {len(tr)} train / {len(va)} val / {len(te)} test, T = {T}")
        train_loader.rng = np.random.default_rng(seed)                 # the same batch order
        train.fit(model, train_loader, val_loader, epochs, lr, loss_fn=losses.mse_rate, log=log)
    arms = {"plain": (plain, {}), "razor": (razor, {}), "razor_pruned": (razor, rule),
            "razor_refined": (razor, {**rule, "hard_input": "refined"}), "razor_leaky": (razor, rule, "leaky")}

    def setting(model, rule, mode="skip"):
        set_pruning(model, **rule).mode = mode
        return model.eval()
    res, batches = {}, [Tensor(x) for x, _ in test_loader]
    for arm, how in arms.items():
        r = evaluate_pruning(setting(*how), test_loader)
        res[arm] = {"accuracy": r["accuracy"], "macs": (r["total_macs"] - r["saved_macs"]) / len(te),
                    "saved_fraction": r["saved_fraction"], "pruned_fraction": float(np.mean(r["pruned_fraction"] or 0))}
    with no_grad():
        secs = paired_seconds({a: lambda a=a: [setting(*arms[a])(x) for x in batches] for a in list(arms)[:3]}, repeats)
    for arm, t in secs.items():
        res[arm].update(seconds=float(np.median(t)), time_vs_plain=float(np.median(t / secs["plain"])))
    log(" | ".join(f"{a} {v['accuracy']:.2%} {v.get('time_vs_plain', '')}" for a, v in res.items()) + f"; {rule}")
    return res


# ----------------------------------------------------------------------------- claims (minisnn.claims)


def _claim_run(seed, quick, log=None):
    """MotionDVS, T = 8, keep 75 % of the frames at every gate (quick: 160 / 80 clips at 16×16, one epoch)."""
    return run_comparison("motion", quick=quick, seed=seed, log=log, repeats=3 if quick else 7)


EXPERIMENTS = {"razor-motion": _claim_run}
CLAIMS = [Claim("Razor SNN", where, quote, "razor-motion", metric, base, "razor_pruned", d, margin)
          for where, metric, base, d, margin, quote in (
    ("§4.2, Tab. 3 (DVS128 Gesture; here MotionDVS)", "accuracy", "plain", 1, 0.0, "Razor SNN surpasses TA-SNN by "
     "0.22% and outperforms all CNN-based methods."),
    ("§1 (pruned vs unpruned; non-inferiority margin: 1 point)", "accuracy", "razor", 1, 0.01, "Our Razor SNN can "
     "achieve competitive performances on events recognition tasks, even compared with full-events inputs."),
    ("§1 (inference time / the plain net's, paired)", "time_vs_plain", "razor", -1, 0.0, "Our method reveals the "
     "possibility of exploiting the dynamic mechanism with temporal embeddings for the acceleration of SNNs and "
     "RNNs-like models."),
    ("§5 (inference time / the plain net's, paired)", "time_vs_plain", "plain", -1, 0.0, "Compared with vanilla "
     "Spiking Neural Networks, Razor SNNs process signals more efficiently, especially for event streams, pruning "
     "pointless event frames progressively."))]
