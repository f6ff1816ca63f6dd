"""The neuron kernels away from their defaults: thresholds ≠ 1, resets to v_reset ≠ 0, v_rest, per-neuron
parameters, PLIF with init_tau ≠ 2, SLTRP with an initial membrane — on every path that claims to be equal
(fused C, fused NumPy, unrolled autograd) and against hand-written loops.

With v_th = 1 and v_reset = 0 a kernel that subtracts 1 instead of v_th, or drops the v_reset term, gives the same
numbers; with PLIF's init_tau = 2, σ(w) = ½ hides both a sign error in w and decay = σ(w) instead of 1 − σ(w).
"""
import itertools

import numpy as np
import pytest

import minisnn as ms
from minisnn import core, neurons, nn, relevance as rv
from minisnn.neurons import multistep_fused, multistep_unrolled
from conftest import numeric_grad

BACKENDS = ["c", "numpy"] if core.backend() == "c" else ["numpy"]


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch):
    monkeypatch.setenv("MINISNN_BACKEND", request.param)
    return request.param


def loop_neuron(x, decay, gain, v0, v_th, v_reset, v_rest):
    """The neuron model of DESIGN.md as a plain loop over t: (s, u, h) for x [T, ...]."""
    h, out = np.broadcast_to(np.asarray(v0, float), x.shape[1:]), []
    for xt in x:
        u = decay * h + gain * xt + (1 - decay) * v_rest
        s = (u >= v_th).astype(float)
        h = u * (1 - s) + v_reset * s if v_reset is not None else u - v_th * s
        out.append((s, u, h))
    return tuple(np.stack(a) for a in zip(*out))


CASES = {  # (v_th, v_reset, v_rest): soft reset by 0.7; hard reset to 0.3 (and leak towards it); to −0.2 at v_th 0.9
    "soft-0.7": (0.7, None, 0.0), "hard-0.3": (0.6, 0.3, 0.3), "hard-neg": (0.9, -0.2, -0.2),
    "rest-only": (0.8, 0.0, 0.25)}


@pytest.mark.parametrize("case", sorted(CASES))
def test_forward_matches_the_loop_for_any_threshold_and_reset(backend, case):
    v_th, v_reset, v_rest = CASES[case]
    rng = np.random.default_rng(7)
    x = rng.normal(0.5, 0.8, (9, 40))
    decay, gain, v0 = rng.uniform(0.2, 0.9, 40), 0.8, rng.uniform(-0.3, 0.5, 40)
    s, u, h = core.lif_forward(x, decay, gain, v0, v_th=v_th, v_reset=v_reset, v_rest=v_rest, return_h=True)
    ws, wu, wh = loop_neuron(x, decay, gain, v0, v_th, v_reset, v_rest)
    np.testing.assert_array_equal(s, ws)
    np.testing.assert_allclose(u, wu, atol=1e-12)
    np.testing.assert_allclose(h, wh, atol=1e-12)
    assert 0.1 < ws.mean() < 0.9             # the sequence really spikes and resets


def _all_grads(fn, x, decay, gain, v0, v_th, v_reset, v_rest, sg, detach, output):
    ts = [ms.Tensor(a.copy(), requires_grad=True) for a in (x, decay, gain, v0)]
    trace = {}
    out = fn(ts[0], ts[1], ts[2], ts[3], v_th, v_reset, v_rest, sg, detach, output, trace)
    w = np.random.default_rng(5).normal(size=out.shape)
    (out * w).sum().backward()
    return [out.data, trace["s"], trace["u"]] + [t.grad for t in ts]


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("sg", [neurons.Sigmoid(4.0), neurons.ATan(2.0), neurons.Rectangle(0.8), neurons.Triangle(1.0)],
                         ids=repr)
@pytest.mark.parametrize("detach", [False, True])
def test_fused_equals_unrolled_for_any_threshold_and_reset(backend, case, sg, detach):
    """Outputs, traces and gradients w.r.t. x, per-neuron decay, gain and v0 (float64), spikes and membranes."""
    v_th, v_reset, v_rest = CASES[case]
    rng = np.random.default_rng(11)
    x = rng.normal(0.5, 0.8, (6, 3, 4))
    decay, gain, v0 = rng.uniform(0.2, 0.9, (3, 4)), np.array(0.7), rng.uniform(-0.3, 0.5, (3, 4))
    fused = _all_grads(multistep_fused, x, decay, gain, v0, v_th, v_reset, v_rest, sg, detach, "both")
    unrolled = _all_grads(multistep_unrolled, x, decay, gain, v0, v_th, v_reset, v_rest, sg, detach, "both")
    for name, a, b in zip(("out", "s", "u", "x", "decay", "gain", "v0"), fused, unrolled):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-10, err_msg=name)
    assert 0.1 < fused[1].mean() < 0.9


@pytest.mark.parametrize("case", sorted(CASES))
def test_learnable_gain_alone_gets_its_gradient(backend, case):
    """A Tensor gain with a float decay: the fused backward must still compute the parameter gradients."""
    v_th, v_reset, v_rest = CASES[case]
    x = np.random.default_rng(2).normal(0.5, 0.8, (5, 6))
    grads = []
    for fn in (multistep_fused, multistep_unrolled):
        g = ms.Tensor(np.array(0.8), requires_grad=True)
        fn(ms.Tensor(x), 0.6, g, 0.0, v_th, v_reset, v_rest, neurons.Sigmoid()).sum().backward()
        grads.append(g.grad)
    assert grads[0] == pytest.approx(grads[1], rel=1e-9) and abs(grads[0]) > 1e-3


def test_backward_matches_the_numpy_twin_with_nonzero_v_reset_and_threshold(monkeypatch):
    """The C and NumPy backward kernels directly, gs and gu together, per-neuron parameters over more than one block."""
    if core.backend() != "c":
        pytest.skip("needs the compiled core")
    monkeypatch.setattr(core, "NUM_THREADS", 2)
    rng = np.random.default_rng(3)
    T, M = 6, 4500
    x64 = rng.normal(0.5, 0.8, (T, M))
    c64, d64, v064 = rng.uniform(0.2, 0.9, M), rng.uniform(0.5, 1.2, M), rng.uniform(-0.3, 0.5, M)
    g64 = rng.normal(size=(2, T, M))
    for (v_th, v_reset, v_rest), detach, dtype in itertools.product(CASES.values(), (False, True),
                                                                   (np.float32, np.float64)):
        x, c, d, v0, (gs, gu) = (a.astype(dtype) for a in (x64, c64, d64, v064, g64))
        kw = dict(v_th=v_th, v_reset=v_reset, v_rest=v_rest)
        out = {}
        for be in ("c", "numpy"):
            monkeypatch.setenv("MINISNN_BACKEND", be)
            s, u, h = core.lif_forward(x, c, d, v0, **kw, return_h=True)
            out[be] = (s, u, h) + core.lif_backward(gs, gu, x, u, c, d, v0, **kw, detach_reset=detach,
                                                    surrogate="triangle", sg_param=1.5)
        np.testing.assert_array_equal(out["c"][0], out["numpy"][0])     # identical spikes, also in float32
        tol = 2e-5 if dtype == np.float32 else 1e-10
        for k, (a, b) in enumerate(zip(out["c"], out["numpy"])):
            np.testing.assert_allclose(a, b, rtol=tol, atol=tol, err_msg=f"{k} {v_th} {v_reset} {detach}")


@pytest.mark.parametrize("hard", [True, False])
def test_backward_without_parameter_gradients(backend, hard):
    """param_grads=False (fixed decay and gain) returns zeros for dL/d(decay), dL/d(gain) on both backends, and the
    same dL/dx and dL/dv0 as a full backward."""
    rng = np.random.default_rng(6)
    x, gs = rng.normal(0.5, 0.8, (5, 30)), rng.normal(size=(5, 30))
    kw = dict(v_th=0.7, v_reset=0.2 if hard else None, v_rest=0.2 if hard else 0.0)
    s, u = core.lif_forward(x, 0.6, 0.9, 0.1, **kw)
    full = core.lif_backward(gs, None, x, u, 0.6, 0.9, 0.1, **kw)
    fast = core.lif_backward(gs, None, x, u, 0.6, 0.9, 0.1, **kw, param_grads=False)
    np.testing.assert_array_equal(fast[0], full[0])
    np.testing.assert_array_equal(fast[3], full[3])
    assert not fast[1].any() and not fast[2].any() and full[1].any() and full[2].any()


# ----------------------------------------------------------------------------- recorded membranes


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("fused", [True, False])
def test_recorded_post_reset_membrane(backend, case, fused):
    """BaseNeuron.extras["h"] (what SLTRP's γ reads) is the post-reset membrane of the loop, for any v_reset / v_th."""
    v_th, v_reset, _ = CASES[case]
    x = np.random.default_rng(4).normal(0.6, 0.8, (7, 2, 5))
    lif = neurons.LIF(tau=1.6, v_threshold=v_th, v_reset=v_reset, decay_input=False, v0=0.1, fused=fused).eval()
    with nn.recording():
        lif(ms.Tensor(x))
    v_rest = 0.0 if v_reset is None else v_reset
    ws, wu, wh = loop_neuron(x, 1 - 1 / 1.6, 1.0, 0.1, v_th, v_reset, v_rest)
    np.testing.assert_array_equal(lif.extras["s"], ws)
    np.testing.assert_allclose(lif.extras["u"], wu, atol=1e-6)
    np.testing.assert_allclose(lif.extras["h"], wh, atol=1e-6)
    assert lif.spike_rate == pytest.approx(ws.mean())


# ----------------------------------------------------------------------------- PLIF


@pytest.mark.parametrize("init_tau", [3.0, 1.25, 8.0])
def test_plif_init_and_decay(init_tau):
    """σ(w) = 1/init_tau at initialisation; decay = 1 − σ(w), gain = σ(w); the forward is that LIF."""
    plif = neurons.PLIF(init_tau=init_tau, v_threshold=0.6)
    decay, gain = plif.coefficients()
    assert float(gain.data) == pytest.approx(1 / init_tau, rel=1e-6)
    assert float(decay.data) == pytest.approx(1 - 1 / init_tau, rel=1e-6)
    x = np.random.default_rng(0).normal(0.7, 0.8, (6, 2, 3))
    lif = neurons.LIF(tau=init_tau, v_threshold=0.6)            # spikingjelly's LIF with the same τ
    np.testing.assert_array_equal(plif(ms.Tensor(x)).data, lif(ms.Tensor(x)).data)
    ws, _, _ = loop_neuron(x, 1 - 1 / init_tau, 1 / init_tau, 0.0, 0.6, 0.0, 0.0)
    np.testing.assert_array_equal(plif(ms.Tensor(x)).data, ws)


@pytest.mark.parametrize("init_tau", [3.0, 1.5])
@pytest.mark.parametrize("fused", [True, False])
def test_plif_w_gradient_by_finite_differences(init_tau, fused):
    """dL/dw through decay = 1 − σ(w) and gain = σ(w), float64 central differences. The output is made smooth in w:
    analog (ReLU(u), as LIAF) with a threshold the inputs never reach and positive inputs (so ReLU is the identity)."""
    x = np.random.default_rng(1).uniform(0.1, 0.9, (6, 2, 3))

    def make(w):
        p = neurons.PLIF(init_tau=init_tau, v_threshold=100.0, fused=fused)
        p.w = nn.Parameter(np.array(w, np.float64))
        p.output = "analog"
        return p
    w0 = -np.log(init_tau - 1.0)
    p = make(w0)
    (p(ms.Tensor(x)) * np.arange(x.size).reshape(x.shape)).sum().backward()
    f = lambda w: float((make(w[()])(ms.Tensor(x)).data * np.arange(x.size).reshape(x.shape)).sum())  # noqa: E731
    num = numeric_grad(f, [np.array(w0)])[0]
    assert p.w.grad == pytest.approx(num, rel=1e-6)
    # the same gradient by hand: dL/dw = σ'(w)·(dL/d gain − dL/d decay)
    k = 1 / init_tau
    ts = [ms.Tensor(np.array(v), requires_grad=True) for v in (1 - k, k)]
    (multistep_unrolled(ms.Tensor(x), ts[0], ts[1], 0.0, 100.0, 0.0, 0.0, output="membrane")
     * np.arange(x.size).reshape(x.shape)).sum().backward()
    assert p.w.grad == pytest.approx(k * (1 - k) * (ts[1].grad - ts[0].grad), rel=1e-9)


def test_plif_w_gradient_fused_equals_unrolled_with_spikes():
    x = np.random.default_rng(2).normal(0.8, 0.8, (6, 2, 3))
    grads = []
    for fused in (True, False):
        p = neurons.PLIF(init_tau=3.0, fused=fused)
        p.w = nn.Parameter(np.array(p.w.data, np.float64))
        (p(ms.Tensor(x)) * np.arange(x.size).reshape(x.shape)).sum().backward()
        grads.append(p.w.grad)
    assert grads[0] == pytest.approx(grads[1], rel=1e-9) and abs(grads[0]) > 1e-3


# ----------------------------------------------------------------------------- SLTRP on both backends


def sltrp_loop(R_out, gamma):
    """Eq. 10–11 for [T, M], a loop per neuron; the γ[1]·R_in[1] share goes to R_init."""
    T, M = R_out.shape
    R_in, R_init = np.zeros_like(R_out), np.zeros(M)
    for m in range(M):
        r = [0.0] * T
        r[T - 1] = R_out[T - 1, m]
        for t in range(T - 1, 0, -1):
            r[t - 1] = gamma[t, m] * r[t] + R_out[t - 1, m]
            r[t] = (1 - gamma[t, m]) * r[t]
        R_init[m] = gamma[0, m] * r[0]
        r[0] -= R_init[m]
        R_in[:, m] = r
    return R_in, R_init


@pytest.mark.parametrize("T", [1, 2, 5])
def test_sltrp_kernel_matches_the_loop_with_an_initial_membrane(backend, T):
    rng = np.random.default_rng(T)
    R_out, gamma = rng.normal(size=(T, 7)), rng.random((T, 7))      # γ[1] > 0: v0 ≠ 0
    R_in, R_init = core.sltrp(R_out, gamma)
    want, want_init = sltrp_loop(R_out, gamma)
    np.testing.assert_allclose(R_in, want, atol=1e-12)
    np.testing.assert_allclose(R_init, want_init, atol=1e-12)
    np.testing.assert_allclose(R_in.sum(0) + R_init, R_out.sum(0), atol=1e-12)   # eq. 14


def test_explain_through_a_soft_reset_neuron_with_threshold_not_one(backend):
    """SLTRP's γ reads h[t−1] = u − v_th·s (soft) or v_reset (hard); a loop builds γ from the same definition."""
    x = np.random.default_rng(0).normal(1.0, 1.0, size=(6, 2, 3))
    for v_reset, v_th in ((None, 0.6), (0.3, 0.9)):
        lif = neurons.LIF(tau=1.5, v_threshold=v_th, v_reset=v_reset, v0=0.2, decay_input=False)
        e = rv.explain(nn.Sequential(lif), x, target=np.array([0, 2]), init="onehot")
        c = 1 - 1 / 1.5
        _, _, h = loop_neuron(x, c, 1.0, 0.2, v_th, v_reset, 0.0 if v_reset is None else v_reset)
        h_prev = np.concatenate([np.full((1, 2, 3), 0.2), h[:-1]])
        want, _ = rv.sltrp_recursion(e.output_relevance, rv.sltrp_gamma(h_prev, x, c, 1.0))
        np.testing.assert_allclose(e.input, want, atol=1e-12)


# ----------------------------------------------------------------------------- threads


def test_chunked_returns_results_in_chunk_order(monkeypatch):
    monkeypatch.setattr(core, "NUM_THREADS", 3)
    monkeypatch.setattr(core, "CHUNK_BYTES", 4)
    assert core.chunked(lambda i0, i1: (i0, i1), 10, item_bytes=1) == [(0, 4), (4, 8), (8, 10)]
    assert core.chunked(lambda i0, i1: (i0, i1), 23, item_bytes=2) == [(i, min(i + 2, 23)) for i in range(0, 23, 2)]
    assert core.chunked(lambda i0, i1: (i0, i1), 7) == [(0, 3), (3, 6), (6, 7)]


@pytest.mark.skipif(core.backend() != "c", reason="needs the compiled core")
@pytest.mark.parametrize("a", [1.0, 4.0, 10.0])
def test_c_float32_sigmoid_surrogate_is_accurate(a):
    """The C core's float32 exp is a degree-6 polynomial (minisnn_core.c, relative error < 2e-7): the float32 sigmoid
    surrogate stays within 2e-7·α of the float64 formula on a dense grid of u − v_th, reaching exp's clamps at ±87
    (measured: 0.85e-7·α; without the polynomial's last term or the low part of ln 2: 2.5–4.3e-7·α)."""
    d = np.linspace(-20, 20, 8001)
    x = (1.0 + d).astype(np.float32)[None]
    s, u = core.lif_forward(x, 0.5, 1.0, 0.0, v_th=1.0, v_reset=None)
    gx = core.lif_backward(np.ones_like(x), None, x, u, 0.5, 1.0, 0.0, v_th=1.0, v_reset=None,
                           surrogate="sigmoid", sg_param=a)[0].ravel()
    e = np.exp(-a * (u.ravel().astype(np.float64) - 1.0))
    np.testing.assert_allclose(gx, a * e / (1 + e) ** 2, rtol=0, atol=2e-7 * a)
