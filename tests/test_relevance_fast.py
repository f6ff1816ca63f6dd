"""The fast path of relevance.explain (issue 20) against a frozen copy of the plain implementation it replaced.

``explain`` runs linear maps through ``_ab_chunked`` (chunks of rows on every core, no graph, non-negative inputs not
split) and computes SLTRP's γ per chunk of neurons. Below is the plain code it replaced (minisnn at commit 786cfe7),
frozen as the textbook reference: every rule through an autograd graph (``relevance._linear_op``, unchanged), and
``np.divide(where=)`` for 0/0 := 0. The fast ``explain`` must give the same relevance, layer by layer, and the same
conservation sums, to float rounding.
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minisnn import autograd, core, models, neurons, nn, relevance as rv
from minisnn import functional as F
from minisnn.autograd import Tensor, make
from minisnn.neurons import BaseNeuron
from test_relevance import Gate, no_bias_f64, random_network

# ----------------------------------------------------------------------------- frozen plain implementation


def plain_safe_div(a, b):
    nz = b != 0
    return np.divide(a, b, out=np.zeros(np.broadcast(a, b).shape, np.result_type(a, b)), where=nz), nz


def plain_ab_rule(xp, xn, R, pos, neg, alpha, beta):
    R_in, lost = np.zeros_like(xp, dtype=R.dtype), np.zeros_like(R)
    for coef, pairs in ((alpha, ((xp, pos), (xn, neg))), (beta, ((xn, pos), (xp, neg)))):
        if coef == 0:
            continue
        ops = [(v, rv._linear_op(f, v)) for v, f in pairs if f is not None and v.any()]
        Z = sum((z for _, (z, _) in ops), np.zeros_like(R))
        s, nz = plain_safe_div(coef * R, Z)
        lost += np.where(nz, 0, coef * R)
        for v, (_, transpose) in ops:
            R_in += v * transpose(s)
    return R_in, lost


def split(x):
    return np.maximum(x, 0), np.minimum(x, 0)


def image_op(op):
    def fn(v):
        lead = v.shape[:-3]
        out = op(F.reshape(v, (-1,) + v.shape[-3:]))
        return F.reshape(out, lead + out.shape[1:])
    return fn


def plain_gamma(h_prev, current, decay, gain, alpha, beta, clamp_input):
    dtype = np.result_type(h_prev, current)
    c, d = np.asarray(decay, dtype), np.asarray(gain, dtype)
    if clamp_input:
        current = np.maximum(current, 0)
    gamma = np.zeros(np.broadcast_shapes(np.shape(h_prev), np.shape(current)), dtype)
    for coef, part in ((alpha, np.maximum), (beta, np.minimum)):
        if coef != 0:
            cv, di = c * part(h_prev, 0), d * part(current, 0)
            gamma += coef * plain_safe_div(cv, cv + di)[0]
    return gamma


def plain_rule(layer, x, extras, R, mode, alpha, beta, clamp_input):
    slrp = mode == "slrp"
    shape = x.shape[1:] if slrp else x.shape
    if isinstance(layer, rv.PASS_THROUGH) or getattr(layer, "relevance_rule", None) == "identity":
        return R.reshape(shape), np.zeros_like(R), None
    if isinstance(layer, BaseNeuron):
        if slrp:
            return R, np.zeros_like(R), None
        h = extras["h"]
        v0 = np.broadcast_to(np.asarray(extras["v0"], h.dtype), h.shape[1:])
        h_prev = np.concatenate([v0[None], h[:-1]])
        gamma = plain_gamma(h_prev, x, extras["decay"], extras["gain"], alpha, beta, clamp_input)
        R_in, R_init = rv.sltrp_recursion(R, gamma)
        return R_in, np.zeros_like(R), R_init
    if isinstance(layer, nn.MaxPool2d):
        pool = image_op(lambda v: F.max_pool2d(v, layer.kernel_size, layer.stride))
        return rv._linear_op(pool, x.mean(0) if slrp else x)[1](R), np.zeros_like(R), None
    xp, xn = split(x)
    if slrp:
        xp, xn = xp.mean(0), xn.mean(0)
    if isinstance(layer, (nn.Linear, nn.Conv2d)):
        wp, wn = split(layer.weight.data)
        if isinstance(layer, nn.Linear):
            build = lambda w: lambda v: make(v.data @ w.T, (v,), lambda g: (g @ w,))  # noqa: E731
        else:
            build = lambda w: image_op(lambda v: F.conv2d(v, Tensor(w), None, layer.stride, layer.padding))  # noqa: E731
        pos, neg = build(wp), build(wn)
    elif isinstance(layer, nn.AvgPool2d):
        pos, neg = image_op(lambda v: F.avg_pool2d(v, layer.kernel_size, layer.stride)), None
    else:
        pos, neg = image_op(lambda v: F.adaptive_avg_pool2d(v, layer.output_size)), None
    R_in, lost = plain_ab_rule(xp, xn, R, pos, neg, alpha, beta)
    return R_in, lost, None


def plain_explain(model, x, target=None, mode="sltrp", init="clrp", alpha=1.0, beta=0.0, clamp_input=False):
    layers, xs, extras, out = rv._forward(model, x)
    target = rv._targets(out, target)
    R = rv.init_relevance(out, target, init)
    R = R.mean(0) if mode == "slrp" else R
    sums = lambda a: a.reshape(a.shape[:2 if mode == "sltrp" else 1] + (-1,)).sum(-1)  # noqa: E731
    cons, rel = {"output": sums(R)}, {}
    for i in range(len(layers) - 1, -1, -1):
        name, layer = layers[i]
        R, lost, R_init = plain_rule(layer, xs[i], extras[i], R, mode, alpha, beta, clamp_input)
        rel[name] = R
        n = R.shape[mode == "sltrp"]
        init_sum = np.zeros(n, R.dtype) if R_init is None else R_init.reshape(n, -1).sum(-1)
        cons[name] = {"relevance": sums(R), "lost": sums(lost), "init": init_sum}
    return R, rel, cons


# ----------------------------------------------------------------------------- fast == plain


def assert_same_explanation(model, x, rtol, **kw):
    want_input, want_layers, want_cons = plain_explain(model, x, **kw)
    e = rv.explain(model, x, **kw)
    scale = max(np.abs(want_input).max(), 1e-300)
    np.testing.assert_allclose(e.input, want_input, rtol=rtol, atol=rtol * scale)
    assert list(e.layers) == list(want_layers)
    for name, want in want_layers.items():
        np.testing.assert_allclose(e.layers[name], want, rtol=rtol, atol=rtol * max(np.abs(want).max(), 1e-300),
                                   err_msg=name)
        for key in ("relevance", "lost", "init"):
            got, ref = e.conservation[name][key], want_cons[name][key]
            assert got.shape == ref.shape, (name, key)
            np.testing.assert_allclose(got, ref, rtol=rtol, atol=rtol * max(np.abs(ref).max(), 1.0), err_msg=(name, key))
    return e


@pytest.fixture(params=["one chunk", "one row per chunk"])
def chunks(request, monkeypatch):
    if request.param == "one row per chunk":
        monkeypatch.setattr(core, "CHUNK_BYTES", 1)
        monkeypatch.setattr(core, "NUM_THREADS", 3)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10 ** 6), alpha=st.sampled_from([1.0, 0.0, 0.5, 2.0, -0.5]), v0=st.sampled_from([0.0, 0.4]),
       mode=st.sampled_from(rv.MODES), clamp=st.booleans())
def test_random_networks_equal_the_plain_implementation(seed, alpha, v0, mode, clamp):
    """Every layer type, mixed-sign inputs and weights, zero denominators, v0 ≠ 0: equal to float64 rounding."""
    rng = np.random.default_rng(seed)
    m = random_network(rng, v0)
    x = rng.normal(0.5, 1.0, size=(4, 3, 2, 12, 12)) * (rng.random((4, 3, 2, 12, 12)) > 0.2)
    assert_same_explanation(m, x, 1e-12, init="logit", mode=mode, alpha=alpha, beta=1 - alpha, clamp_input=clamp)


@pytest.mark.parametrize("mode", rv.MODES)
@pytest.mark.parametrize("init", rv.INITS)
def test_spiking_convsnn_on_event_counts_equals_the_plain_implementation(mode, init, chunks):
    """The path explain takes in training: non-negative inputs (x⁻ skipped), β = 0, a net that spikes."""
    rng = np.random.default_rng(1)
    m = no_bias_f64(models.ConvSNN(rng=rng, input_size=8, width=4), scale=8.0)
    x = (rng.random((5, 3, 2, 8, 8)) < 0.3) * 1.0
    e = assert_same_explanation(m, x, 1e-12, init=init, mode=mode)
    lost = any(np.abs(c["lost"]).max() > 0 for k, c in e.conservation.items() if k != "output")
    assert np.abs(e.input).max() > 0 and (lost or mode == "slrp")   # per-step inputs have zero denominators


def test_float32_bench_model_equals_the_plain_implementation():
    """float32 as in training, with biases: equal to float32 rounding."""
    rng = np.random.default_rng(2)
    m = models.ConvSNN(rng=rng, input_size=16, width=8)
    for layer in m:
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            layer.weight.data *= 6
    x = (rng.random((6, 4, 2, 16, 16)) < 0.2).astype(np.float32)
    e = assert_same_explanation(m, x, 2e-5)
    assert e.input.dtype == np.float32 and np.abs(e.input).max() > 0


def test_per_neuron_coefficients_and_gates(chunks):
    """SLTRP's γ per chunk of samples slices per-neuron decay / gain / v0 arrays with the samples."""
    rng = np.random.default_rng(3)
    lif = neurons.LIF(decay=rng.uniform(0.2, 0.9, (4, 1, 1)), gain=rng.uniform(0.5, 1.5, (1, 6, 6)), v0=0.2)
    m = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=False, rng=rng), lif, Gate(), nn.AvgPool2d(2),
                      nn.Flatten(), nn.Linear(36, 3, bias=False, rng=rng), neurons.PLIF(v_threshold=0.1))
    no_bias_f64(m, scale=4.0)
    x = rng.normal(0.3, 1.0, (5, 3, 2, 6, 6))
    for alpha in (1.0, 0.7):
        e = assert_same_explanation(m, x, 1e-12, alpha=alpha, beta=1 - alpha, init="logit")
        assert np.abs(e.conservation["1"]["init"]).max() > 0   # v0 ≠ 0: R_init is reported


# ----------------------------------------------------------------------------- the pieces


def test_safe_div_equals_masked_divide():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(50, 7)), rng.normal(size=(50, 7)) * (rng.random((50, 7)) < 0.5)
    got, nz = rv._safe_div(a, b)
    want, want_nz = plain_safe_div(a, b)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(nz, want_nz)
    assert rv._safe_div(np.float64(3.0), np.zeros(2))[0].tolist() == [0.0, 0.0]


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10 ** 6), alpha=st.sampled_from([1.0, 0.0, 0.3, 2.0]), kind=st.sampled_from(["dense", "conv"]),
       nonneg=st.booleans())
def test_ab_chunked_equals_alpha_beta(seed, alpha, kind, nonneg):
    """_ab_chunked == the public αβ functions (the readable rule), lost per row == Σ of lost."""
    rng = np.random.default_rng(seed)
    mix = lambda *s: rng.normal(size=s) * (rng.random(s) > 0.3)  # noqa: E731
    x = mix(6, 3, 5, 5) if kind == "conv" else mix(6, 7)
    x = np.abs(x) if nonneg else x
    if kind == "conv":
        layer = nn.Conv2d(3, 4, 3, stride=int(rng.integers(1, 3)), padding=int(rng.integers(0, 2)), bias=False)
        layer.weight.data = mix(4, 3, 3, 3)
        want, want_lost = None, None
    else:
        layer = nn.Linear(7, 5, bias=False)
        layer.weight.data = mix(5, 7)
    out = layer(Tensor(x)).data
    R = rng.normal(size=out.shape)
    args = (x, layer.weight.data, R) + ((layer.stride, layer.padding) if kind == "conv" else ())
    fn = rv.alpha_beta_conv if kind == "conv" else rv.alpha_beta
    want, want_lost = fn(*args, alpha=alpha, beta=1 - alpha, return_lost=True)
    xp, xn = (x, None) if nonneg else split(x)
    R_in, lost = rv._ab_chunked(xp, xn, R, *rv._layer_maps(layer, x), alpha, 1 - alpha)
    np.testing.assert_allclose(R_in, want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(lost, want_lost.reshape(len(x), -1).sum(-1), atol=1e-12)


def test_slrp_forward_records_no_membranes():
    """SLRP needs no membranes: its forward is an inference pass (the neurons' extras stay None)."""
    rng = np.random.default_rng(5)
    m = models.ConvSNN(rng=rng, input_size=8, width=4)
    _, _, extras, _ = rv._forward(m, np.ones((2, 1, 2, 8, 8)), record=False)
    assert all(e is None for e in extras)
    _, _, extras, _ = rv._forward(m, np.ones((2, 1, 2, 8, 8)))
    assert extras[2]["h"].shape == (2, 1, 4, 8, 8)
    rv.explain(m, np.ones((2, 1, 2, 8, 8)), mode="slrp")
    assert m[2].extras is None and m[6].extras is None   # explain(mode="slrp") ran the inference pass
