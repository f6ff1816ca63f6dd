"""Razor SNN (Zhang et al., arXiv 2306.17597): temporal embeddings score event frames; weak frames are pruned.

A :class:`RazorGate` sits right before a spiking layer, on its input X ∈ [T, N, C, H, W] (§3.2):

    w  = softmax_K(FC(mean_{t,H,W} X))                    embedding weighting        (eq. 6)
    Ê_k = w_k·E_k,  E ∈ R^{K×C} learnable                 global temporal embeddings (eq. 6)
    M[t] = σ(mean_k ⟨F[t], Ê_k⟩ / √C),  F[t] = mean_HW X[t]   events-of-interest mask (eq. 7)
    X̃[t] = M[t]·X[t]                                      reconstructed feature      (eq. 8)
    s[t] = max_{C,H,W} X̃[t]                               frame score, [T, N]        (eq. 9)
    training:  X' = X̃     inference:  m[t] = Θ(s[t] − θ),  X'[t] = m[t]·X̃[t]         (eq. 10-11)

Eq. 11 multiplies m with "the input tensor"; we default to X̃ so that with nothing pruned inference equals
the trained soft path (``hard_input="raw"`` gives the literal X'[t] = m[t]·X[t]).

The paper's equations 1-11 are lost from our text; every piece marked RECONSTRUCTED is our reading of
the prose (specs/razor.md). Neurons: LIAF with TA-SNN constants (§3.1), see :func:`liaf`.
"""
import numpy as np

from .. import functional as F
from .. import models, neurons, train
from ..autograd import no_grad, tensor
from ..nn import Conv2d, Linear, Module, Parameter, recording


def liaf(channels=None):
    """§3.1 LIAF with TA-SNN constants: u = 0.3·h + x, v_th = 0.3, hard reset; output ReLU(u), spike resets."""
    return neurons.LIAF(decay=0.3, gain=1.0, v_threshold=0.3, surrogate=neurons.Rectangle(0.5))


def embedding_weights(x, fc):
    """Eq. 6, RECONSTRUCTED: w = softmax_K(FC(mean_{t,H,W} X)) -> [N, K] (the paper: "a convolution-based
    module with softmax"; a 1×1 convolution of the pooled features is this FC)."""
    return F.softmax(fc(F.mean(x, axis=(0, 3, 4))), axis=-1)


def eoi_mask(x, embeddings, w):
    """Eq. 6-7, RECONSTRUCTED: Ê_k = w_k·E_k, F[t] = mean_HW X[t] ∈ R^C, M[t] = σ(mean_k ⟨F[t], Ê_k⟩ / √C).

    Returns M of shape [T, N]: one value in (0, 1) per frame and sample.
    """
    e_hat = F.reshape(w, w.shape + (1,)) * embeddings               # [N, K, C]
    feat = F.mean(x, axis=(3, 4))                                      # [T, N, C]
    sim = F.sum(feat * F.mean(e_hat, axis=1), axis=-1)                 # mean_k ⟨F, Ê_k⟩ = ⟨F, mean_k Ê_k⟩
    return F.sigmoid(sim / np.sqrt(x.shape[2]))


def reconstruct(x, mask):
    """Eq. 8: X̃[t] = M[t]·X[t] (the mask scales whole frames)."""
    return x * F.reshape(mask, mask.shape + (1, 1, 1))


def frame_scores(x_tilde):
    """Eq. 9: s[t] = max over (C, H, W) of X̃[t] (adaptive max pool 3-D to 1×1×1) -> [T, N]."""
    return F.max(x_tilde, axis=(2, 3, 4))


def threshold_mask(scores, threshold):
    """Eq. 10: m[t] = Θ(s[t] − θ), Θ(0) = 1: frames scoring below θ are pruned."""
    return (np.asarray(scores) >= threshold).astype(np.asarray(scores).dtype)


def keep_ratio_mask(scores, keep_ratio):
    """RECONSTRUCTED ("razor ratio" is ambiguous): per sample keep the ⌊ρ·T + ½⌋ highest-scoring frames
    (ties: the earlier frame wins) and prune the rest."""
    scores = np.asarray(scores)
    k = int(np.floor(keep_ratio * scores.shape[0] + 0.5))
    order = np.argsort(-scores, axis=0, kind="stable")
    m = np.zeros_like(scores)
    np.put_along_axis(m, order[:k], 1.0, axis=0)
    return m


def prune(x, x_tilde, m, hard_input="refined"):
    """Eq. 11, RECONSTRUCTED: X'[t] = m[t]·X̃[t] ("refined": kept frames as in training) or m[t]·X[t] ("raw")."""
    return (x_tilde if hard_input == "refined" else x) * m.reshape(m.shape + (1, 1, 1))


class RazorGate(Module):
    """The event pruning mechanism of §3.2 on [T, N, C, H, W], with K learnable embeddings (K = 4 best, Tab. 4).

    Training: X' = X̃ (soft). Eval with ``threshold`` θ (eq. 10) or ``keep_ratio`` ρ: X' = m·X̃
    (``hard_input="refined"``; kept frames stay as trained) or X' = m·X (``"raw"``: eq. 11 read literally,
    kept frames unscaled). Neither set: eval is the soft path. After any pass: ``mask`` (M) and ``scores``
    (s), [T, N]; after an eval pass also ``frame_mask`` (m) and ``pruned_fraction`` = mean(1 − m).
    """
    relevance_rule = "identity"   # a multiplicative gate: relevance passes to the gated signal

    def __init__(self, channels, T, n_embeddings=4, threshold=None, keep_ratio=None, rng=None,
                 hard_input="refined"):
        super().__init__()
        for name, v in (("channels", channels), ("T", T), ("n_embeddings", n_embeddings)):
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"RazorGate: {name} must be a positive int, got {v!r}")
        if hard_input not in ("refined", "raw"):
            raise ValueError(f"RazorGate: hard_input must be 'refined' or 'raw', got {hard_input!r}")
        rng = rng or np.random.default_rng(0)
        self.channels, self.T, self.hard_input = int(channels), int(T), hard_input
        self.set_pruning(threshold, keep_ratio)
        self.embeddings = Parameter(rng.normal(0.0, 1.0, (n_embeddings, channels)).astype(np.float32))
        self.weighting = Linear(channels, n_embeddings, rng=rng)
        self.mask = self.scores = self.frame_mask = self.pruned_fraction = None

    def set_pruning(self, threshold=None, keep_ratio=None):
        """Choose the inference rule: a score threshold θ, a keep ratio ρ ∈ [0, 1], or neither (no pruning)."""
        if threshold is not None and keep_ratio is not None:
            raise ValueError("RazorGate: give threshold or keep_ratio, not both")
        if threshold is not None and not np.isfinite(threshold):
            raise ValueError(f"RazorGate: threshold must be finite, got {threshold}")
        if keep_ratio is not None and not 0.0 <= keep_ratio <= 1.0:
            raise ValueError(f"RazorGate: keep_ratio must lie in [0, 1], got {keep_ratio}")
        self.threshold, self.keep_ratio = threshold, keep_ratio

    def forward(self, x):
        x = tensor(x)
        if x.ndim != 5 or x.shape[0] != self.T or x.shape[2] != self.channels:
            raise ValueError(f"RazorGate: x must be [T={self.T}, N, C={self.channels}, H, W], got {x.shape}")
        mask = eoi_mask(x, self.embeddings, embedding_weights(x, self.weighting))
        x_tilde = reconstruct(x, mask)
        self.mask, self.scores = mask.data, frame_scores(x_tilde).data
        self.frame_mask = self.pruned_fraction = None
        out = x_tilde
        if not self.training:
            m = np.ones_like(self.scores)
            if self.threshold is not None:
                m = threshold_mask(self.scores, self.threshold)
            elif self.keep_ratio is not None:
                m = keep_ratio_mask(self.scores, self.keep_ratio)
            self.frame_mask, self.pruned_fraction = m, float(1.0 - m.mean())
            out = prune(x, x_tilde, m, self.hard_input)
        self.extras = {"mask": self.mask, "scores": self.scores, "frame_mask": self.frame_mask}
        return out

    def extra_repr(self):
        return (f"{self.channels}, T={self.T}, n_embeddings={self.embeddings.shape[0]}, threshold={self.threshold}, "
                f"keep_ratio={self.keep_ratio}, hard_input={self.hard_input!r}")


def razor_gate(T, n_embeddings=4, threshold=None, keep_ratio=None, rng=None, hard_input="refined"):
    """Gate factory for ``models.TASNN(gate=...)``: a RazorGate in every spiking conv layer except the
    first (encoder) one (§3.3, ablation Fig. 3: E3)."""
    rng = rng or np.random.default_rng(0)

    def gate(channels, index):
        return None if index == 0 else RazorGate(channels, T, n_embeddings, threshold, keep_ratio, rng, hard_input)
    return gate


def gates(model):
    """All RazorGates of a model, in order."""
    return [m for m in model.modules() if isinstance(m, RazorGate)]


def set_pruning(model, threshold=None, keep_ratio=None):
    """Set the same inference rule (θ or ρ) on every gate of ``model``; returns the model."""
    for g in gates(model):
        g.set_pruning(threshold, keep_ratio)
    return model


def saved_operations(model, x):
    """One eval pass on ``x`` [T, N, ...]; per gate: pruned frame fraction and the MACs it saves.

    Convention (specs/razor.md §3): a pruned frame costs nothing downstream, so it saves the dense MACs
    of the next synaptic layer (Conv2d or Linear) for that frame: outputs per frame × fan-in. Exact for
    spiking TA-SNN LIF (zero input gives u = 0.3·h < V_th: no spike); LIAF still leaks ReLU(0.3·h), so
    for LIAF it counts the frames an event-driven runtime would skip. ``total_macs``: every synaptic
    layer, every frame. Left out: the gates' own cost (pooling, ~T·C·H·W adds, and a C×K FC per sample).
    Returns {"layers": [per gate dict], "saved_macs", "total_macs", "saved_fraction", "output": logits}.
    """
    was_training = model.training
    model.eval()
    with no_grad(), recording() as rec:
        out = model(tensor(x))
    model.train(was_training)
    inner = {id(s) for g in gates(model) for s in g.modules()}      # the gates' own FC is not synaptic
    synaptic = [(i, m, o) for i, (m, _, o, _) in enumerate(rec) if isinstance(m, (Conv2d, Linear))
                and id(m) not in inner]
    frames = int(np.prod(out.shape[:2]))
    per_frame = [int(np.prod(o.shape[2:])) * (m.weight.size // m.weight.shape[0]) for _, m, o in synaptic]
    layers = []
    for i, (m, *_rest) in enumerate(rec):
        if isinstance(m, RazorGate):
            macs = next(pf for (j, _, _), pf in zip(synaptic, per_frame) if j > i)
            pruned = float((1.0 - m.frame_mask).sum())
            layers.append({"pruned_fraction": m.pruned_fraction, "macs_per_frame": macs,
                           "pruned_frames": pruned, "saved_macs": pruned * macs})
    saved, total = sum(r["saved_macs"] for r in layers), frames * sum(per_frame)
    return {"layers": layers, "saved_macs": saved, "total_macs": total, "saved_fraction": saved / total,
            "output": out.data}


def evaluate_pruning(model, loader):
    """Eval over a loader: accuracy, per-gate pruned fraction, saved / total MACs (:func:`saved_operations`)."""
    hits = n = saved = total = pruned = 0
    for x, y in loader:
        r = saved_operations(model, x)
        hits += int(np.sum(r["output"].mean(0).argmax(-1) == np.asarray(y)))
        pruned = pruned + np.array([g["pruned_frames"] for g in r["layers"]])
        n, saved, total = n + len(y), saved + r["saved_macs"], total + r["total_macs"]
    return {"accuracy": hits / n, "pruned_fraction": [float(p) / (n * loader.n_frames) for p in pruned],
            "saved_macs": saved, "total_macs": total, "saved_fraction": saved / total}


def _datasets(dataset, quick, seed):
    """MotionDVS 600 / 200 clips at 34×34 (quick: 300 / 100 at 16×16) or DigitsDVS (quick: 300 / 150)."""
    from data_tools.datasets import load
    if dataset == "motion":
        return load("motion", seed, *((300, 100) if quick else (600, 200)), size=16 if quick else 34)
    return load(dataset, seed, *((300, 150) if quick else (None, None)))


def run_comparison(dataset="motion", epochs=None, quick=False, log=print, T=8, width=0.25, threshold=None,
                   keep_ratio=0.75, lr=3e-3, seed=0):
    """Train a plain LIAF TASNN and a Razor TASNN (same seed, same data) and compare them at inference:
    accuracy, the Razor net without pruning, and with hard pruning (θ = ``threshold`` if given, else ρ =
    ``keep_ratio``): accuracy, pruned fraction per gated layer, saved MACs. Returns a dict of the numbers."""
    from data_tools.loader import DataLoader
    log = log or (lambda *_: None)
    epochs = epochs or (3 if quick else 10)
    tr, te = _datasets(dataset, quick, seed)
    (_, H, P), K = tr.sensor_size, len(tr.classes)
    train_loader = DataLoader(tr, 8 if quick else 32, T, rng=np.random.default_rng(seed), split_by="time")
    test_loader = DataLoader(te, 100, T, shuffle=False, split_by="time")
    res = {"dataset": dataset, "T": T, "epochs": epochs}
    for name, gate in (("plain", None), ("razor", razor_gate(T, rng=np.random.default_rng(seed + 1)))):
        model = models.TASNN(K, P, H, width, neuron=liaf, gate=gate, rng=np.random.default_rng(seed))
        log(f"--- {name} TASNN (width {width}, LIAF) on {dataset}: {len(tr)} train / {len(te)} test, T = {T}")
        train.fit(model, train_loader, None, epochs, lr, log=log)
        res[name] = evaluate_pruning(model, test_loader)
    set_pruning(model, threshold, None if threshold is not None else keep_ratio)
    res["razor_pruned"] = evaluate_pruning(model, test_loader)
    res["rule"] = f"threshold {threshold}" if threshold is not None else f"keep_ratio {keep_ratio}"
    p, r, q = res["plain"], res["razor"], res["razor_pruned"]
    log(f"accuracy: plain {p['accuracy']:.2%} | razor, no pruning {r['accuracy']:.2%} | razor, {res['rule']}: "
        f"{q['accuracy']:.2%}; pruned frames per gated layer {[round(f, 3) for f in q['pruned_fraction']]}, "
        f"saved {q['saved_fraction']:.1%} of {q['total_macs'] / 1e6:.1f} M MACs")
    return res
