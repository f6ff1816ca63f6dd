"""Redundancy analysis of SNNs: firing rates, spike features, membrane potential distributions, energy.

Yao et al., "Inherent Redundancy in Spiking Neural Networks", ICCV 2023 (§3.2 Definitions 1–5, §5.5 Definition 6 and
Table 4, §5.4 eq. 11); spec specs/asa.md §4. :func:`record` runs an eval pass of any library model and keeps its
spikes, membranes and operation counts; everything else is a small function of those arrays.

    N-SFR[t, i] = (1/N) Σ_n s[t, n, i]        C-SFR[t, c] = mean of N-SFR over channel c's neurons
    T-SFR[t]    = Σ_l Σ_i N-SFR_l[t, i] / Σ_l n_l          NASFR = (1/T) Σ_t T-SFR[t] = Σ_l rate_l·n_l / Σ_l n_l
    PTD         = mean centre of the three tallest MPD bins − V_th,  Var(MPD)               (Def. 6, Obs. 5)
    QE          = mean over neurons, steps, samples of (u − s)²                            (Table 4)
    E           = E_MAC·#MAC + E_AC·#AC,  ΔE = E_MAC·ΔMAC − E_AC·ΔAC                       (eq. 11)
"""
import itertools

import numpy as np

from . import nn
from .autograd import Tensor, no_grad
from .neurons import BaseNeuron

E_MAC, E_AC = 4.6, 0.9  # pJ per multiply-accumulate / accumulate (45 nm CMOS, Horowitz 2014; paper §5.4)


class Recording:
    """What :func:`record` collected (per sample counts are averaged over all ``n_samples`` recorded samples).

    ``neurons``: {layer name: {"s": uint8 [T, n, ...], "u": pre-reset membranes [T, n, ...], "v_threshold": float}}
    ``ops``: {layer name: {"kind": "conv" | "linear" | "attention", "first": bool, "dense": dense MACs per
    sample over all T steps, "rate": fraction of non-zero inputs}}.
    """

    def __init__(self):
        self.neurons, self.ops, self.n_samples = {}, {}, 0


def _array(a):
    return a.data if isinstance(a, Tensor) else np.asarray(a)


def _add_op(ops, name, module, inp, out, n):
    """Accumulate the dense MACs and non-zero inputs of one conv/linear/attention call (other modules cost none)."""
    if hasattr(module, "macs"):
        kind, dense = "attention", module.macs(inp.shape) * n
    elif isinstance(module, (nn.Conv2d, nn.Linear)):
        kind = "conv" if isinstance(module, nn.Conv2d) else "linear"
        dense = out.size * int(np.prod(module.weight.shape[1:]))  # each output: C_in·k·k (or in) MACs
    else:
        return
    op = ops.setdefault(name, {"kind": kind, "first": not ops, "dense": 0.0, "nonzero": 0, "size": 0})
    op["dense"] += dense
    op["nonzero"] += np.count_nonzero(inp)
    op["size"] += inp.size


def record(model, data, max_batches=None, keep=True):
    """Run ``model`` in eval mode over ``data`` (an array [T, N, ...] or an iterable of (x, y) batches, the first
    ``max_batches`` of them) -> a :class:`Recording`. ``keep=False`` stores no spikes/membranes (enough for
    :func:`energy`)."""
    names = {id(m): n for n, m in model.named_modules()}
    inside = {id(d) for m in model.modules() if hasattr(m, "macs") for d in m.modules() if d is not m}  # in m.macs
    batches = [(data, None)] if isinstance(data, (np.ndarray, Tensor)) else data
    rec, was_training = Recording(), model.training
    model.eval()
    try:
        with no_grad():
            for x, _ in itertools.islice(batches, max_batches):
                x = _array(x)
                with nn.recording() as calls:
                    model(Tensor(x))
                rec.n_samples += x.shape[1]
                for module, inp, out, extras in calls:
                    name = names.get(id(module), type(module).__name__)
                    if isinstance(module, BaseNeuron) and keep:
                        v = rec.neurons.setdefault(name, {"s": [], "u": [], "v_threshold": module.v_threshold})
                        v["s"].append(extras["s"].astype(np.uint8))
                        v["u"].append(extras["u"])
                    elif id(module) not in inside:
                        _add_op(rec.ops, name, module, _array(inp), _array(out), x.shape[1])
    finally:
        model.train(was_training)
    for v in rec.neurons.values():
        v["s"], v["u"] = np.concatenate(v["s"], axis=1), np.concatenate(v["u"], axis=1)
    for op in rec.ops.values():
        op["dense"] /= rec.n_samples
        op["rate"] = float(op.pop("nonzero") / max(op.pop("size"), 1))
    return rec


def _spikes(s, name="s"):
    s = np.asarray(s)
    if s.ndim < 3:
        raise ValueError(f"{name} must be [T, N, ...] (time-first, at least one neuron axis), got shape {s.shape}")
    return s.astype(np.float64)


def firing_rates(s):
    """Definition 1 for one layer's spikes [T, N, C, ...] (or [T, N, F]) -> {"n_sfr": [T, C, ...] (mean over
    samples), "c_sfr": [T, C], "t_sfr": [T], "rate": float}."""
    s = _spikes(s)
    n_sfr = s.mean(1)
    T, C = n_sfr.shape[:2]
    return {"n_sfr": n_sfr, "c_sfr": n_sfr.reshape(T, C, -1).mean(-1), "t_sfr": n_sfr.reshape(T, -1).mean(-1),
            "rate": float(s.mean())}


def t_sfr(spikes):
    """Network T-SFR[t] = Σ_l Σ_i N-SFR_l[t, i] / Σ_l n_l over a Recording or a list of spike arrays."""
    layers = [v["s"] for v in spikes.neurons.values()] if isinstance(spikes, Recording) else spikes
    arrays = [_spikes(s) for s in layers]
    if len({a.shape[:2] for a in arrays}) != 1:
        raise ValueError(f"spikes: no neuron layer, or layers disagree on [T, N]: {[a.shape[:2] for a in arrays]}")
    total = sum(a.mean(1).reshape(a.shape[0], -1).sum(-1) for a in arrays)
    return total / sum(int(np.prod(a.shape[2:])) for a in arrays)


def nasfr(spikes):
    """NASFR = mean over t of the network T-SFR (Definition 1) = Σ_l rate_l·n_l / Σ_l n_l."""
    return float(t_sfr(spikes).mean())


def spike_features(s):
    """Definition 2: the spike feature of channel c at step t, an [H, W] map of N-SFRs -> [T, C, H, W]."""
    s = _spikes(s)
    if s.ndim != 5:
        raise ValueError(f"s must be a conv layer's spikes [T, N, C, H, W], got shape {s.shape}")
    return s.mean(1)


def feature_similarity(features):
    """Cosine similarity [C, C] of the spike features [C, H, W] of one step: ghost features (Def. 3) ≈ 1."""
    f = np.asarray(features, np.float64)
    if f.ndim != 3:
        raise ValueError(f"features must be [C, H, W], got shape {f.shape}")
    f = f.reshape(len(f), -1)
    norm = np.linalg.norm(f, axis=1, keepdims=True)
    f = f / np.where(norm > 0, norm, 1)
    return f @ f.T


def _per_channel(u):
    """Membranes u [T, N, C, ...] -> float64 rows [T, C, N·(neurons per channel)], one row per MPD of Definition 5."""
    u = np.asarray(u, np.float64)
    if u.ndim < 3 or u.size == 0:
        raise ValueError(f"u must be a non-empty [T, N, C, ...] array, got shape {u.shape}")
    return np.moveaxis(u, 2, 1).reshape(u.shape[0], u.shape[2], -1)


def membrane_histogram(u, bins=50, range=None):
    """Definition 5: MPD per (t, channel) of a layer's membranes u [T, N, C, ...] -> (counts [T, C, bins], edges).

    ``edges`` [T, C, bins + 1]: each (t, c) spans its own min..max (a constant one: value ± 0.5), so a narrow
    channel gets all ``bins`` bins too; ``range=(lo, hi)``: the same edges for all (to compare models), values
    outside dropped. The last bin is closed."""
    if int(bins) < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    v, bins = _per_channel(u), int(bins)
    T, C = v.shape[:2]
    v = v.reshape(T * C, -1)
    if range is not None and not float(range[1]) > float(range[0]):
        raise ValueError(f"range must be (lo, hi) with hi > lo, got {range}")
    lo, hi = (v.min(1, keepdims=True), v.max(1, keepdims=True)) if range is None else np.float64(range)[:, None, None]
    lo, hi = np.where(hi > lo, lo, lo - 0.5), np.where(hi > lo, hi, hi + 0.5)
    edges = np.concatenate([lo + (hi - lo) * np.linspace(0.0, 1.0, bins + 1)[:-1], hi], axis=1)
    idx = np.clip(np.floor((v - lo) / (hi - lo) * bins), 0, bins - 1).astype(np.int64)
    rows = np.broadcast_to(np.arange(T * C)[:, None], v.shape)
    ok = (v >= lo) & (v <= hi)
    counts = np.bincount((rows * bins + idx)[ok], minlength=T * C * bins)
    return counts.reshape(T, C, bins), np.broadcast_to(edges, (T * C, bins + 1)).reshape(T, C, bins + 1)


def ptd(counts, edges, v_threshold):
    """Definition 6: peak-to-threshold distance = mean centre of the three tallest non-empty bins − V_th.

    ``counts`` [..., bins], ``edges`` [..., bins + 1] broadcastable to it (:func:`membrane_histogram`) -> shape
    ``counts.shape[:-1]``. Fewer than three non-empty bins: their mean (none: NaN); ties go to the lower potential.
    """
    counts, edges = np.asarray(counts), np.asarray(edges, np.float64)
    if counts.ndim < 1 or edges.shape[-1:] != (counts.shape[-1] + 1,):
        raise ValueError(f"counts [..., bins] needs edges [..., bins + 1], got {counts.shape}, {edges.shape}")
    centres = np.broadcast_to((edges[..., :-1] + edges[..., 1:]) / 2, counts.shape)
    top = np.argsort(-counts, axis=-1, kind="stable")[..., :3]
    tall = np.take_along_axis(counts, top, -1) > 0
    with np.errstate(invalid="ignore"):
        return (np.take_along_axis(centres, top, -1) * tall).sum(-1) / tall.sum(-1) - v_threshold


def mpd_variance(u):
    """Observation 5: the variance of each MPD (the membranes of channel c at step t) -> [T, C]."""
    return _per_channel(u).var(-1)


def quantization_error(u, s=None):
    """QE = mean of (u − s)² over neurons, steps and samples (Table 4); ``u`` may be a Recording (all layers)."""
    if isinstance(u, Recording):
        pairs = [(v["u"], v["s"]) for v in u.neurons.values()]
        if not pairs:
            raise ValueError("u: the Recording holds no neuron layers (record with keep=True)")
        return float(sum(((a - b) ** 2).sum() for a, b in pairs) / sum(a.size for a, _ in pairs))
    u, s = np.asarray(u, np.float64), np.asarray(s, np.float64)
    if u.shape != s.shape:
        raise ValueError(f"u and s must have the same shape, got {u.shape} and {s.shape}")
    return float(((u - s) ** 2).mean())


def energy(model, data, e_mac=E_MAC, e_ac=E_AC, max_batches=None):
    """Inference energy per sample, E = E_MAC·#MAC + E_AC·#AC (pJ), counted from layer shapes (``data``: as for
    :func:`record`, or a Recording of ``model``) -> {"mac", "ac", "energy_pj", "layers"}. The first conv/linear layer
    (the encoder, fed real-valued frames) costs its dense MACs over T steps; every later one #AC = dense MACs × T × the
    fraction of its inputs that are non-zero (spikes: the firing rate); modules with a ``macs(x_shape)`` method
    (attention) add those MACs. BatchNorm folds into the conv before it; pooling, masking, neuron updates cost none."""
    rec = data if isinstance(data, Recording) else record(model, data, max_batches, keep=False)
    layers = {}
    for name, op in rec.ops.items():
        dense_mac = op["kind"] == "attention" or op["first"]
        layers[name] = {**op, "mac": op["dense"] if dense_mac else 0.0,
                        "ac": 0.0 if dense_mac else op["dense"] * op["rate"]}
    mac, ac = sum(v["mac"] for v in layers.values()), sum(v["ac"] for v in layers.values())
    return {"mac": mac, "ac": ac, "energy_pj": e_mac * mac + e_ac * ac, "layers": layers}


def delta_energy(base, other, e_mac=E_MAC, e_ac=E_AC):
    """Eq. 11: ΔE = E_MAC·ΔMAC − E_AC·ΔAC, ΔMAC = MACs added by ``other`` (e.g. attention), ΔAC = ACs it saves;
    ``base``/``other`` are :func:`energy` results; ΔE < 0 means ``other`` is cheaper (= E_other − E_base)."""
    d_mac, d_ac = other["mac"] - base["mac"], base["ac"] - other["ac"]
    return {"delta_mac": d_mac, "delta_ac": d_ac, "delta_energy_pj": e_mac * d_mac - e_ac * d_ac}
