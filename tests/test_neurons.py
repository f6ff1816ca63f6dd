"""Neurons: surrogates, fused C == fused NumPy == unrolled, peer-library equivalences, the C boundary."""
import os

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minisnn as ms
from minisnn import core, neurons
from minisnn.neurons import multistep_fused, multistep_unrolled

SURROGATES = [neurons.Sigmoid(4.0), neurons.ATan(2.0), neurons.Rectangle(1.0), neurons.Triangle(1.0)]


@pytest.mark.parametrize("sg", SURROGATES, ids=repr)
def test_surrogate_derivative_matches_primitive(sg):
    x = np.linspace(-2.3, 2.3, 467)
    x = x[np.abs(np.abs(x) - sg.param / 2) > 1e-3]  # avoid the rectangle's jumps
    num = (sg.primitive(x + 1e-6) - sg.primitive(x - 1e-6)) / 2e-6
    np.testing.assert_allclose(sg.grad(x), num, atol=1e-5)
    assert sg.primitive(-1e7) == pytest.approx(0, abs=1e-6) and sg.primitive(1e7) == pytest.approx(1, abs=1e-6)


def test_surrogate_values_from_table():
    assert neurons.Sigmoid(4).grad(np.array(0.0)) == pytest.approx(1.0)           # α/4
    assert neurons.ATan(2).grad(np.array(0.0)) == pytest.approx(1.0)              # α/2
    assert neurons.Rectangle(0.5).grad(np.array([0.2, 0.3])).tolist() == [2.0, 0.0]
    assert neurons.Triangle(1.0).grad(np.array([0.0, 0.5, 1.5])).tolist() == [1.0, 0.5, 0.0]


def test_heaviside_at_zero_is_one():
    s = ms.functional.spike(ms.Tensor(np.array([-1e-7, 0.0, 1e-7])), neurons.Sigmoid())
    assert s.data.tolist() == [0.0, 1.0, 1.0]


def _run_all(x, decay, gain, v0, v_reset, detach, sg, output="spike", backend="c"):
    """Run fused (chosen backend) and unrolled; return outputs and gradients w.r.t. x, decay, gain, v0."""
    results = []
    old = os.environ.get("MINISNN_BACKEND")
    for fn in (multistep_fused, multistep_unrolled):
        os.environ["MINISNN_BACKEND"] = backend
        ts = [ms.Tensor(a.copy(), requires_grad=True) for a in (x, decay, gain, v0)]
        out = fn(ts[0], ts[1], ts[2], ts[3], 1.0, v_reset, 0.0 if v_reset is None else v_reset, sg, detach, output)
        w = np.random.default_rng(1).normal(size=out.shape)
        (out * w).sum().backward()
        results.append((out.data, [t.grad for t in ts]))
    if old is None:
        del os.environ["MINISNN_BACKEND"]
    else:
        os.environ["MINISNN_BACKEND"] = old
    return results


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), hard=st.booleans(), detach=st.booleans(), per_neuron=st.booleans(),
       sg=st.sampled_from(SURROGATES), output=st.sampled_from(["spike", "membrane", "both"]),
       backend=st.sampled_from(["c", "numpy"]))
def test_fused_equals_unrolled_float64(seed, hard, detach, per_neuron, sg, output, backend):
    rng = np.random.default_rng(seed)
    T, step = int(rng.integers(1, 7)), (2, 3)
    x = rng.normal(0.6, 1.0, (T,) + step)
    decay = rng.uniform(0.2, 0.9, step) if per_neuron else np.array(rng.uniform(0.2, 0.9))
    gain = np.array(rng.uniform(0.3, 1.2))
    v0 = rng.uniform(-0.5, 0.5, step) if per_neuron else np.array(0.25)
    (o1, g1), (o2, g2) = _run_all(x, decay, gain, v0, 0.1 if hard else None, detach, sg, output, backend)
    np.testing.assert_array_equal(o1.shape, o2.shape)
    np.testing.assert_allclose(o1, o2, atol=1e-12)
    for a, b in zip(g1, g2):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-6)


@pytest.mark.skipif(core.backend() != "c", reason="needs the compiled core")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("hard", [True, False])
@pytest.mark.parametrize("kind", sorted(core.SURROGATES))
def test_c_kernels_equal_numpy_twins(dtype, hard, kind, monkeypatch):
    monkeypatch.setattr(core, "NUM_THREADS", 3)   # the C kernels run on three neuron ranges, not block-aligned
    rng = np.random.default_rng(3)
    T, M = 7, 10001  # more than one block per range
    x = rng.normal(0.5, 1.0, (T, M)).astype(dtype)
    decay = rng.uniform(0.1, 0.9, M).astype(dtype)
    kw = dict(v_th=1.0, v_reset=0.0 if hard else None)
    gs, gu = rng.normal(size=(2, T, M)).astype(dtype)
    out = {}
    for be in ("c", "numpy"):
        os.environ["MINISNN_BACKEND"] = be
        s, u, h = core.lif_forward(x, decay, 0.7, 0.3, **kw, return_h=True)
        s_only, no_u = core.lif_forward(x, decay, 0.7, 0.3, **kw, keep_u=False)   # inference: u not written
        assert no_u is None and np.array_equal(s_only, s)
        grads = core.lif_backward(gs, gu, x, u, decay, 0.7, 0.3, **kw, surrogate=kind, sg_param=1.3)
        out[be] = (s, u, h) + grads
    del os.environ["MINISNN_BACKEND"]
    np.testing.assert_array_equal(out["c"][0], out["numpy"][0])  # identical spikes
    for a, b in zip(out["c"][1:], out["numpy"][1:]):
        np.testing.assert_allclose(a, b, rtol=2e-5 if dtype == np.float32 else 1e-12, atol=2e-5 if dtype == np.float32 else 1e-12)


def test_fused_gradient_reaches_learnable_decay_by_finite_differences():
    """With a smooth surrogate the fused backward is the exact derivative of the membrane output."""
    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 0.3, (5, 4))  # small inputs: no spikes, so u is a smooth function of decay
    d = np.array(0.6)
    t = ms.Tensor(d.copy(), requires_grad=True)
    multistep_fused(ms.Tensor(x), t, 1.0, 0.0, 10.0, 0.0, output="membrane").sum().backward()
    f = lambda dd: multistep_fused(ms.Tensor(x), dd, 1.0, 0.0, 10.0, 0.0, output="membrane").data.sum()
    assert t.grad == pytest.approx((f(0.6 + 1e-6) - f(0.6 - 1e-6)) / 2e-6, rel=1e-6)


def _sj_lif(x, tau, decay_input, v_th, v_reset):
    """spikingjelly's LIFNode written from its documented update (peers.md), plain Python."""
    v, out = (0.0 if v_reset is None else v_reset), []
    for xt in x:
        vr = 0.0 if v_reset is None else v_reset
        h = v + (xt - (v - vr)) / tau if decay_input else v - (v - vr) / tau + xt
        s = 1.0 if h >= v_th else 0.0
        v = (h - s * v_th) if v_reset is None else h * (1 - s) + vr * s
        out.append((s, h))
    return np.array(out)


@pytest.mark.parametrize("decay_input", [True, False])
@pytest.mark.parametrize("v_reset", [0.0, None, -0.2])
@pytest.mark.parametrize("fused", [True, False])
def test_matches_spikingjelly_lifnode(decay_input, v_reset, fused):
    x = np.array([0.6, 1.4, 0.3, 2.5, -0.4, 1.1, 1.9, 0.0, 3.0, 0.8])
    ref = _sj_lif(x, 2.0, decay_input, 1.0, v_reset)
    lif = neurons.LIF(tau=2.0, decay_input=decay_input, v_reset=v_reset, v0=0.0 if v_reset is None else v_reset,
                      fused=fused)
    s = lif(ms.Tensor(x.reshape(-1, 1), dtype=np.float64)).data.ravel()
    np.testing.assert_array_equal(s, ref[:, 0])
    assert ref[:, 0].sum() >= 2  # the sequence really exercises the reset


def test_hand_computed_lif_sequence():
    """τ = 2, decay_input=True: u = h/2 + x/2. x = 1.5, 1.5, 0.2: u1 = 0.75, u2 = 1.125 (spike), u3 = 0.1."""
    trace = {}
    s = multistep_fused(ms.Tensor(np.array([[1.5], [1.5], [0.2]]), dtype=np.float64), 0.5, 0.5, trace=trace)
    assert s.data.ravel().tolist() == [0, 1, 0] == trace["s"].ravel().tolist()
    np.testing.assert_allclose(trace["u"].ravel(), [0.75, 1.125, 0.1])


def test_matches_snntorch_leaky_reset_zero():
    """snntorch Leaky(beta, reset_mechanism='zero'): U[t] = β(1 − S[t−1])U[t−1] + x[t], S = Θ(U − θ) with
    Θ(0) = 0 — the same sequence as our hard reset with decay_input=False, τ = 1/(1 − β), detached reset."""
    beta, x = 0.75, np.array([0.5, 0.6, 0.9, 0.2, 1.3, 0.1, 0.7, 0.7])
    u, prev_s, ref = 0.0, 0.0, []
    for xt in x:
        u = beta * (1 - prev_s) * u + xt
        prev_s = 1.0 if u > 1.0 else 0.0
        ref.append(prev_s)
    lif = neurons.LIF(tau=1 / (1 - beta), decay_input=False, detach_reset=True)
    s = lif(ms.Tensor(x.reshape(-1, 1) + 1e-12, dtype=np.float64)).data.ravel()  # +ε: snntorch's Θ(0) = 0
    np.testing.assert_array_equal(s, ref)
    assert sum(ref) >= 2


def test_if_plif_liaf():
    x = ms.Tensor(np.full((4, 1), 0.6), dtype=np.float64)
    assert neurons.IF()(x).data.ravel().tolist() == [0, 1, 0, 1]
    soft = neurons.IF(v_reset=None, v_threshold=1.0, v0=0.5)(x).data.ravel()
    assert soft.tolist() == [1, 0, 1, 0]  # u = 1.1 (h = 0.1), 0.7, 1.3 (h = 0.3), 0.9
    plif = neurons.PLIF(init_tau=2.0)
    decay, gain = plif.coefficients()
    assert float(decay.data) == pytest.approx(0.5) and float(gain.data) == pytest.approx(0.5)
    y = plif(ms.Tensor(np.random.default_rng(0).normal(1, 1, (6, 3, 4))))
    y.sum().backward()
    assert plif.w.grad is not None and plif.w.grad.shape == ()
    liaf = neurons.LIAF(tau=2.0)
    xin = ms.Tensor(np.array([[1.0], [3.0], [-4.0]]), dtype=np.float64)
    out = liaf(xin).data.ravel()
    np.testing.assert_allclose(out, [0.5, 1.75, 0.0])  # ReLU(u): u = .5, then .25 + 1.5 = 1.75 (spike, reset), -2


def test_neuron_layer_is_stateless_between_calls():
    lif = neurons.LIF()
    x = ms.Tensor(np.random.default_rng(0).uniform(0, 2, (5, 2, 3)))
    np.testing.assert_array_equal(lif(x).data, lif(x).data)


def test_c_boundary_rejects_bad_input():
    x = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match="float32 or float64"):
        core.lif_forward(x.astype(np.int32), 0.5, 0.5)
    with pytest.raises(ValueError, match="contiguous"):
        core.lif_forward(np.zeros((4, 3), np.float32).T, 0.5, 0.5)
    with pytest.raises(ValueError, match="shape"):
        core.lif_forward(np.zeros(5, np.float32), 0.5, 0.5)
    with pytest.raises(ValueError, match="decay"):
        core.lif_forward(x, np.ones(3), 0.5)
    with pytest.raises(ValueError, match="v0"):
        core.lif_forward(x, 0.5, 0.5, v0=np.nan)
    s, u = core.lif_forward(x, 0.5, 0.5)
    with pytest.raises(ValueError, match="gs"):
        core.lif_backward(np.zeros((3, 4), np.float64), None, x, u, 0.5, 0.5)
    with pytest.raises(ValueError, match="surrogate"):
        core.lif_backward(None, None, x, u, 0.5, 0.5, surrogate="nope")
    with pytest.raises(TypeError, match="u must be a numpy array"):   # e.g. from lif_forward(keep_u=False)
        core.lif_backward(None, None, x, core.lif_forward(x, 0.5, 0.5, keep_u=False)[1], 0.5, 0.5)
    with pytest.raises(TypeError, match="x must be a numpy array"):
        core.lif_forward([[1.0]], 0.5, 0.5)
    with pytest.raises(ValueError, match="gamma"):
        core.sltrp(x, np.zeros((3, 5), np.float32))
    with pytest.raises(ValueError, match="time-first"):
        neurons.LIF()(ms.Tensor(np.zeros(3)))


def test_backend_env_is_honoured(monkeypatch):
    monkeypatch.setenv("MINISNN_BACKEND", "numpy")
    assert core.backend() == "numpy"
    monkeypatch.delenv("MINISNN_BACKEND")
    assert core.backend() in ("c", "numpy")


@pytest.mark.skipif(not os.environ.get("CI"), reason="CI builds the C core; elsewhere a missing compiler is allowed")
def test_ci_uses_the_compiled_core():
    assert core.backend() == "c", "the C extension did not build in CI (see the pip install log)"
