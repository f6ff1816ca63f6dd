"""NIR export and import (optional extra: ``pip install -e ".[nir]"``), so models move to spikingjelly, snntorch, norse.

``to_nir(model, input_shape)`` maps an ``nn.Sequential`` of Conv2d, Linear, BatchNorm2d (eval), AvgPool2d, Flatten and
LIF/IF/PLIF to a chain Input → … → Output, ``from_nir`` maps it back; minisnn → file → minisnn is bit-identical.
Neuron: u = d·h + g·x + (1 − d)·v_rest, spike if u ≥ θ, hard reset to v_reset (= v_rest). NIR's LIF, τ·dv/dt =
(v_leak − v) + R·I, has no time step: we fix dt = 1e-4 (in the metadata). Its Euler step v ← (1 − dt/τ)·v + (dt/τ)·(R·I
+ v_leak) gives back d, g, (1 − d)·v_rest exactly for τ = dt/(1 − d), R = g/(1 − d), v_leak = v_rest (spikingjelly
writes the same); d = 1 is NIR's IF, dv/dt = R·I, with R = g/dt (IF: 1/dt). g stays out of the weights.
NIR fires on v > θ, minisnn on u ≥ θ: we write θ' = nextafter(float32(θ), −∞), so for float32 u, u > θ' ⇔ u ≥ θ and
strict consumers (snntorch, norse) fire exactly where minisnn does. Eval BatchNorm2d folds into the Conv2d/Linear
before it (an AvgPool2d after it commutes): W' = W·s, b' = (b − μ)·s + β, s = γ/√(σ² + ε). PLIF: its current τ.
ValueError, naming the layer, for soft reset, LIAF, MaxPool2d, v0 ≠ 0, per-neuron decay arrays (importers take one τ
per layer), attention gates (ASA, STAA, Razor), training-mode BN. Import: Affine/Linear, Conv2d, Avg/SumPool2d,
Flatten, LIF, IF along the edges (non-chains raise); neurons get Sigmoid(4) (NIR has no surrogate). Peers: see below.
"""
# Peers (spikingjelly 2.0.0, snntorch 1.0.0, norse 1.1.0, nirtorch 2.6), measured in tests/test_nir.py; the
# workaround after each arrow:
# * spikingjelly (activation_based.nir_exchange.import_from_nir(path, step_mode="m")) fires on >=, so also at
#   v == θ' -> set each neuron's v_threshold to nextafter(θ', +inf). It starts at v = v_reset, norse at v_leak,
#   snntorch and minisnn at 0 -> the same for v_reset = 0 only (all of models.py).
# * snntorch (import_nir.import_from_nir) makes IF a Leaky(beta=0.9) and asserts R == 1 -> use
#   snn.Leaky(beta=1, threshold=θ', reset_mechanism="zero"). It drops v_reset and needs v_leak = 0. It rescales a
#   LIF with g != 1 through the threshold (θ'/g; same spikes). Its Flatten applies NIR's start_dim (which excludes
#   the batch axis) to batched tensors -> set start_dim = 1. Its neurons keep their state across calls ->
#   snntorch.utils.reset(net) before each sequence.
# * norse (norse.torch.from_nir) defaults to dt = 1e-3 -> pass dt=1e-4. It ignores R (right for R = 1, i.e.
#   decay_input=True, and for IF), maps no AvgPool2d, and has snntorch's Flatten problem.
# * nirtorch's default nir.Affine mapping drops the bias (it sets module.weight.bias) -> map nir.Affine yourself.

import copy
import os

import numpy as np

from . import functional as F, neurons, nn

DT = 1e-4


def _nir():
    try:
        return __import__("nir")
    except ImportError:
        raise ImportError('minisnn.nir needs NIR: pip install -e ".[nir]"  (or: pip install nir h5py)') from None


def _fold(layer, bn):
    # a copy of the Conv2d/Linear `layer` with the eval-mode BatchNorm `bn` after it folded in (in float64)
    s = bn.weight.data.astype(np.float64) / np.sqrt(bn.running_var.astype(np.float64) + bn.eps)
    w, b, out = layer.weight.data, 0.0 if layer.bias is None else layer.bias.data, copy.deepcopy(layer)
    out.weight = nn.Parameter((w * s.reshape((-1,) + (1,) * (w.ndim - 1))).astype(w.dtype))
    out.bias = nn.Parameter(((b - bn.running_mean.astype(np.float64)) * s + bn.bias.data).astype(w.dtype))
    return out


def fold_batchnorm(model):
    """The model as exported: a new Sequential (same names), each eval BatchNorm2d folded into the layer before."""
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"model must be an nn.Sequential, got {type(model).__name__}")
    out, last = nn.Sequential(), None
    for name, m in model._modules.items():
        if isinstance(m, nn.BatchNorm2d):
            if m.training or not isinstance(out._modules.get(last), (nn.Conv2d, nn.Linear)):
                raise ValueError(f"to_nir: layer {name} (BatchNorm2d) needs eval mode and a Conv2d/Linear before it")
            setattr(out, last, _fold(out._modules[last], m))
        elif not isinstance(m, (nn.Dropout, nn.Identity)):
            setattr(out, name, m)
            last = name
    return out


def _export(nir, name, layer, shape, dt):
    # one minisnn layer -> (NIR node, its output shape), or a ValueError naming the layer and why NIR cannot express it
    neuron = type(layer) in (neurons.LIF, neurons.IF, neurons.PLIF)
    d, g, v0 = (np.asarray(getattr(p, "data", p)) for p in layer.coefficients() + (layer.v0,)) if neuron else np.zeros(3)
    why = ("soft reset (v_reset=None): NIR's LIF and IF reset to v_reset" if neuron and layer.v_reset is None else
           "v0 != 0: NIR neurons start at rest" if np.any(v0 != 0) else
           "per-neuron decay/gain arrays: NIR's importers take one tau per layer" if d.size + g.size > 2 else
           "it flattens the time or batch axis" if isinstance(layer, nn.Flatten) and layer.start_dim % (len(shape) + 2) < 2
           else "NIR 1.0 has no max pooling" if isinstance(layer, nn.MaxPool2d) else
           "LIAF emits analog values ReLU(u), NIR neurons emit spikes" if isinstance(layer, neurons.LIAF) else
           None if neuron or isinstance(layer, (nn.Linear, nn.Conv2d, nn.AvgPool2d, nn.Flatten)) else
           "NIR has no node for it (attention gates such as ASA, STAA, Razor; custom neurons; nested Sequentials)")
    if why:
        raise ValueError(f"to_nir: layer {name} ({type(layer).__name__}): {why}")
    full = lambda v, dtype=np.float64: np.full(shape, v, dtype)   # noqa: E731
    if isinstance(layer, (nn.Linear, nn.Conv2d)):
        w, b = np.array(layer.weight.data), None if layer.bias is None else np.array(layer.bias.data)
        if isinstance(layer, nn.Linear):
            return (nir.Linear(w) if b is None else nir.Affine(w, b)), (len(w),)
        node = nir.Conv2d(input_shape=shape[1:], weight=w, stride=layer.stride, padding=F._pair(layer.padding, "pad"),
                          dilation=1, groups=1, bias=np.zeros(len(w), w.dtype) if b is None else b)
        return node, tuple(int(v) for v in node.output_type["output"])
    if isinstance(layer, nn.AvgPool2d):
        k = F._pair(layer.kernel_size, "kernel_size")
        s = (k[0] if layer.stride is None else int(layer.stride),) * 2
        node = nir.AvgPool2d(kernel_size=np.array(k), stride=np.array(s), padding=np.zeros(2, int))
        return node, (shape[0],) + tuple((h - kk) // ss + 1 for h, kk, ss in zip(shape[1:], k, s))
    if isinstance(layer, nn.Flatten):
        i = layer.start_dim % (len(shape) + 2) - 2
        return nir.Flatten(np.array(shape), start_dim=i, end_dim=-1), shape[:i] + (int(np.prod(shape[i:])),)
    d, g, vr = float(d), float(g), full(float(layer.v_reset))
    th = full(np.nextafter(np.float32(layer.v_threshold), np.float32(-np.inf)), np.float32)
    if d == 1:
        return nir.IF(r=full(g / dt), v_threshold=th, v_reset=vr), shape
    return nir.LIF(tau=full(dt / (1 - d)), r=full(g / (1 - d)), v_leak=full(layer.v_rest), v_threshold=th, v_reset=vr), shape


def to_nir(model, input_shape=None, dt=DT):
    """The NIR graph of ``model``; ``input_shape``: one sample's shape, e.g. (2, 34, 34); dt goes into the metadata."""
    nir, layers = _nir(), list(fold_batchnorm(model)._modules.items())
    if input_shape is None and not (layers and isinstance(layers[0][1], nn.Linear)) or not dt > 0:
        raise ValueError(f"to_nir: needs dt > 0 (got {dt}) and input_shape unless the model starts with a Linear")
    shape = tuple(int(v) for v in input_shape) if input_shape is not None else (layers[0][1].in_features,)
    nodes = [("input", nir.Input(input_type=np.array(shape)))]
    for name, layer in layers:   # node names: kind and the layer's name in the model, e.g. "lif_2"
        node, shape = _export(nir, name, layer, shape, dt)
        nodes.append((f"{type(node).__name__.lower()}_{name}", node))
    nodes.append(("output", nir.Output(output_type=np.array(shape))))
    return nir.NIRGraph(dict(nodes), [(a, b) for (a, _), (b, _) in zip(nodes, nodes[1:])], metadata={"dt": float(dt)})


def _import(nir, where, node, dt, scale):
    # one NIR node -> (minisnn layer, the factor left to fold into the next layer: a SumPool2d's k²)
    bad = lambda why: ValueError(f"from_nir: {where}: {why}")   # noqa: E731
    w, b = getattr(node, "weight", None), getattr(node, "bias", None)
    if isinstance(node, nir.Conv2d):
        st, pad = (np.broadcast_to(np.asarray(v, object), 2) for v in (node.stride, node.padding))
        if node.groups != 1 or np.any(np.asarray(node.dilation) != 1) or st[0] != st[1] or isinstance(pad[0], str):
            raise bad("minisnn's Conv2d has groups = 1, dilation 1, one stride and integer padding")
        layer = nn.Conv2d(w.shape[1], w.shape[0], w.shape[2:], int(st[0]), tuple(int(p) for p in pad), np.any(b))
    elif isinstance(node, (nir.Affine, nir.Linear)):
        layer = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
    if isinstance(node, (nir.Affine, nir.Linear, nir.Conv2d)):
        layer.weight = nn.Parameter(np.array(w) * np.asarray(scale, w.dtype))
        layer.bias = None if layer.bias is None else nn.Parameter(np.array(b))
        return layer, 1.0
    if isinstance(node, (nir.AvgPool2d, nir.SumPool2d)):
        k, s, p = (np.broadcast_to(np.asarray(v, int), 2) for v in (node.kernel_size, node.stride, node.padding))
        if np.any(p != 0) or s[0] != s[1]:
            raise bad("minisnn's pools have no padding and one stride")
        return nn.AvgPool2d(tuple(map(int, k)), int(s[0])), scale * (k.prod() if isinstance(node, nir.SumPool2d) else 1)
    if isinstance(node, nir.Flatten):
        ndim = len(node.input_type["input"])
        if int(node.end_dim) % ndim != ndim - 1:
            raise bad(f"end_dim = {node.end_dim}; minisnn's Flatten flattens up to the last axis")
        return nn.Flatten(int(node.start_dim) % ndim - ndim), scale
    if not isinstance(node, (nir.LIF, nir.IF)):
        raise bad("no minisnn layer for this node type")
    keys = ("v_threshold", "v_reset", "r") + (("tau", "v_leak") if isinstance(node, nir.LIF) else ())
    vals = [np.unique(np.asarray(getattr(node, k), np.float64)) for k in keys]
    if any(v.size != 1 for v in vals):
        raise bad(f"each of {keys} must be one value for all neurons (minisnn: one per layer)")
    th, vr, r, tau, v_leak = [float(v[0]) for v in vals] + [1.0, 0.0] * (len(vals) == 3)   # IF: no tau, v_leak
    kw = dict(v_threshold=float(np.nextafter(np.float32(th), np.float32(np.inf))), v_reset=vr)
    if isinstance(node, nir.IF):
        return (neurons.IF(**kw) if r * dt * scale == 1 else neurons.LIF(decay=1.0, gain=r * dt * scale, **kw)), 1.0
    if v_leak != vr or not tau > 0:
        raise bad("needs tau > 0 and v_leak = v_reset (minisnn's neuron rests at v_reset)")
    return neurons.LIF(decay=1 - dt / tau, gain=r * (dt / tau) * scale, **kw), 1.0


def _chain(nir, graph):
    # node names from the Input to the Output; a graph that is not one chain raises ValueError
    nxt, order = dict(graph.edges), [k for k, v in graph.nodes.items() if isinstance(v, nir.Input)][:1]
    while order and order[-1] in nxt and len(order) <= len(graph.nodes):
        order.append(nxt[order[-1]])
    chain = order and len(nxt) == len(graph.edges) and sorted(order) == sorted(graph.nodes)
    if not (chain and isinstance(graph.nodes[order[-1]], nir.Output)):
        raise ValueError(f"from_nir: the graph is not one chain Input -> ... -> Output (no branches): {graph.edges}")
    return order


def from_nir(graph_or_path):
    """A minisnn ``nn.Sequential`` (eval mode) from a NIR graph or file; dt from the metadata (default 1e-4)."""
    nir, graph = _nir(), graph_or_path
    if isinstance(graph, (str, os.PathLike)):
        try:
            graph = nir.read(os.fspath(graph))
        except (OSError, KeyError, ValueError, AssertionError, TypeError) as exc:   # what h5py and nir raise
            raise exc if isinstance(exc, FileNotFoundError) else ValueError(
                f"from_nir: {graph_or_path} is not a readable NIR file ({type(exc).__name__}: {exc})") from None
    if not isinstance(graph, nir.NIRGraph):
        raise TypeError(f"from_nir: expected a nir.NIRGraph or a path, got {type(graph).__name__}")
    dt, layers, scale = float(graph.metadata.get("dt", DT)), [], 1.0
    for name in _chain(nir, graph)[1:-1]:
        layer, scale = _import(nir, f"node {name!r} ({type(graph.nodes[name]).__name__})", graph.nodes[name], dt, scale)
        layers.append(layer)
    if scale != 1:
        raise ValueError("from_nir: a SumPool2d must be followed by a Conv2d, Linear or neuron node")
    return nn.Sequential(*layers).eval()


def save_nir(model, path, input_shape=None, dt=DT):
    """Write ``to_nir(model, input_shape, dt)`` to ``path`` (a temp file, then a rename); returns the graph."""
    graph, tmp = to_nir(model, input_shape, dt), f"{os.fspath(path)}.tmp"
    _nir().write(tmp, graph)
    os.replace(tmp, path)
    return graph


load_nir = from_nir   # load_nir(path): from_nir reads files too
