"""Exact ties and edges: inputs constructed to hit a comparison exactly, on every path that claims to be equal.

Random floats never hit u = v_th, |x| = a/2, equal maxima or a clip bound, so these cases are built by hand:
an IF neuron fed 0.5 per step reaches u = 1.0 exactly (0.5 + 0.5 is exact in float32 and float64), binary
spikes tie in every max, and the bounds of clip / the rectangle surrogate are hit with exactly representable values.
"""
import numpy as np
import pytest

import minisnn as ms
from minisnn import core, functional as F, neurons
from minisnn.neurons import multistep_fused, multistep_unrolled

BACKENDS = ["c", "numpy"] if core.backend() == "c" else ["numpy"]
DTYPES = [np.float32, np.float64]


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch):
    monkeypatch.setenv("MINISNN_BACKEND", request.param)
    return request.param


def tie_input(dtype, T=4, x=0.5):
    return np.full((T, 1), x, dtype)


# ----------------------------------------------------------------------------- Θ(0) = 1 in the forward pass


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reset,v_th,x", [(0.0, 1.0, 0.5), (None, 0.75, 0.375), (0.25, 1.25, 0.5)])
def test_if_neuron_fires_when_u_equals_threshold(backend, dtype, reset, v_th, x):
    """IF (decay = gain = 1), h[0] = v0: u = v0 + x, then v0 + 2x = v_th (spike), reset to v0, and again ->
    spikes [0, 1, 0, 1]; with Θ(0) = 0 they would be [0, 0, 1, 0]. Cases: hard reset to 0 (v_th = 1), soft reset
    by v_th = 0.75, hard reset to v_reset = v0 = 0.25 with v_th = 1.25 (u = 0.75, 1.25, 0.75, 1.25)."""
    v0 = 0.0 if reset is None else reset
    xs = tie_input(dtype, x=x)
    s, u, h = core.lif_forward(xs, 1.0, 1.0, v0, v_th=v_th, v_reset=reset, v_rest=0.0, return_h=True)
    assert s.ravel().tolist() == [0, 1, 0, 1]
    np.testing.assert_array_equal(u.ravel(), [v0 + x, v_th, v0 + x, v_th])
    np.testing.assert_array_equal(h.ravel(), [v0 + x, v0, v0 + x, v0])
    for fn in (multistep_fused, multistep_unrolled):
        out = fn(ms.Tensor(xs), 1.0, 1.0, v0, v_th, reset, 0.0)
        assert out.data.ravel().tolist() == [0, 1, 0, 1], fn.__name__


@pytest.mark.parametrize("fused", [True, False])
def test_neuron_layers_fire_at_exact_threshold(backend, fused):
    x = ms.Tensor(tie_input(np.float32))
    assert neurons.IF(fused=fused)(x).data.ravel().tolist() == [0, 1, 0, 1]
    # HSD's converted neuron: θ = 0.75, v0 = θ/2, soft reset: u = 0.375 + 0.375 = 0.75 at once, then 0.375, 0.75
    theta = neurons.IF(v_threshold=0.75, v_reset=None, v0=0.375, fused=fused)
    assert theta(ms.Tensor(tie_input(np.float32, x=0.375))).data.ravel().tolist() == [1, 0, 1, 0]
    # LIAF: the analog output is ReLU(u); its spike (which drives the reset and the spike rate) fires at u = v_th
    liaf = neurons.LIAF(tau=2.0, decay_input=False, fused=fused).eval()
    y = liaf(ms.Tensor(np.array([[0.5], [0.75], [0.5]], np.float64)))  # u = 0.5, 0.25 + 0.75 = 1.0 (spike), 0.5
    np.testing.assert_array_equal(y.data.ravel(), [0.5, 1.0, 0.5])
    assert liaf.spike_rate == pytest.approx(1 / 3)


def test_spike_function_heaviside_at_zero():
    x = ms.Tensor(np.array([-0.0, 0.0, -1e-300, 1e-300]), requires_grad=True)
    s = F.spike(x, neurons.Rectangle(1.0))
    assert s.data.tolist() == [1.0, 1.0, 0.0, 1.0]


# ----------------------------------------------------------------------------- Θ(0) = 1 in the backward pass


def _grads(fn, x, decay, v_th, reset, surrogate, output="spike"):
    """Gradients w.r.t. x, a learnable decay and v0 of sum(w · out) through ``fn``."""
    v0 = 0.0 if reset is None else reset
    ts = [ms.Tensor(np.asarray(a, np.float64).copy(), requires_grad=True) for a in (x, decay, v0)]
    out = fn(ts[0], ts[1], 1.0, ts[2], v_th, reset, 0.0, surrogate, False, output)
    w = np.arange(1.0, out.size + 1).reshape(out.shape) / out.size
    (out * w).sum().backward()
    return out.data, [t.grad for t in ts]


@pytest.mark.parametrize("reset,v_th,x", [(0.0, 1.0, 0.5), (None, 0.75, 0.375)])
@pytest.mark.parametrize("sg", [neurons.Sigmoid(4.0), neurons.Triangle(1.0)], ids=repr)
@pytest.mark.parametrize("output", ["spike", "membrane"])
def test_backward_recomputes_tied_spikes_as_the_forward_fired(backend, reset, v_th, x, sg, output):
    """The fused backward recomputes s[t] = (u[t] >= v_th) from u; at u = v_th exactly it must say "fired", as the
    forward did, or the reset's gradient (1 − s) and h[t−1] (dL/d decay) come out wrong. Reference: the unrolled
    graph, which stores the spikes it fired."""
    xs = np.full((5, 2), x)
    xs[:, 1] = x * 1.1          # a neuron that never ties (guards against a test that passes by accident)
    o_f, g_f = _grads(multistep_fused, xs, 1.0, v_th, reset, sg, output)
    o_u, g_u = _grads(multistep_unrolled, xs, 1.0, v_th, reset, sg, output)
    np.testing.assert_array_equal(o_f, o_u)
    for name, a, b in zip(("x", "decay", "v0"), g_f, g_u):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12, err_msg=name)


def test_backward_at_a_tie_by_hand(backend):
    """IF, hard reset to 0, x = 0.5 for T = 3: u = 0.5, 1.0 (spike), 0.5. Loss = u[2] (membrane output), triangle γ = 1.
    u[2] = h[1] + x[2], h[t] = u[t]·(1 − s[t]):  ∂h[1]/∂u[1] = (1 − s[1]) + (0 − u[1])·g'(0) = 0 − 1 = −1 (s[1] = 1 at
    the tie), ∂h[0]/∂u[0] = 1 + (0 − 0.5)·g'(−0.5) = 0.75. So ∂L/∂x = [−1·0.75, −1, 1];
    Θ(0) = 0 would give [0, 0, 1]."""
    x = ms.Tensor(tie_input(np.float64, T=3), requires_grad=True)
    u = multistep_fused(x, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, neurons.Triangle(1.0), output="membrane")
    (u * np.array([[0.0], [0.0], [1.0]])).sum().backward()
    np.testing.assert_array_equal(x.grad.ravel(), [-0.75, -1.0, 1.0])


# ----------------------------------------------------------------------------- surrogates at their edges


EDGE = np.array([0.75, 1.25, 0.7500001, 1.0, 1.2499999, 1.2500001])  # u − v_th = −a/2, +a/2, inside, 0, inside, out


@pytest.mark.parametrize("dtype", DTYPES)
def test_rectangle_surrogate_is_zero_at_half_width(backend, dtype):
    """g'(x) = 1/a on |x| < a/2 (open): with a = 0.5 and v_th = 1, u = 0.75 and 1.25 sit exactly on the edges."""
    x = EDGE.astype(dtype)[None]                      # T = 1: u = x (v0 = 0, gain 1)
    s, u = core.lif_forward(x, 0.5, 1.0, 0.0, v_th=1.0, v_reset=0.0)
    gx = core.lif_backward(np.ones_like(x), None, x, u, 0.5, 1.0, 0.0, v_th=1.0, v_reset=0.0,
                           surrogate="rectangle", sg_param=0.5)[0]
    np.testing.assert_array_equal(gx.ravel(), [0, 0, 2, 2, 2, 0])
    np.testing.assert_array_equal(neurons.Rectangle(0.5).grad(x.ravel() - dtype(1.0)), [0, 0, 2, 2, 2, 0])


SG_ORACLE = {"sigmoid": lambda x, a: a * np.exp(-a * x) / (1 + np.exp(-a * x)) ** 2,
             "atan": lambda x, a: (a / 2) / (1 + (np.pi / 2 * a * x) ** 2),
             "rectangle": lambda x, a: (np.abs(x) < a / 2) / a,
             "triangle": lambda x, a: np.maximum(0, a - np.abs(x)) / a ** 2}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind,a", [("sigmoid", 4.0), ("atan", 2.0), ("rectangle", 0.5), ("triangle", 0.5),
                                    ("triangle", 2.0)])
def test_surrogates_at_exact_points_on_each_backend(backend, dtype, kind, a):
    """g'(u − v_th) through the fused backward at exactly representable points: the threshold itself (u = v_th,
    the spike fired), ±a/2, ±a (the triangle's corners), 1.5a beyond, against the formulas written out here."""
    d = np.array([0.0, a / 2, -a / 2, a, -a, 1.5 * a, -1.5 * a, 0.125])
    x = (1.0 + d).astype(dtype)[None]                   # T = 1, v0 = 0, gain 1: u = x, u − v_th = d
    s, u = core.lif_forward(x, 0.5, 1.0, 0.0, v_th=1.0, v_reset=None)
    gx = core.lif_backward(np.ones_like(x), None, x, u, 0.5, 1.0, 0.0, v_th=1.0, v_reset=None,
                           surrogate=kind, sg_param=a)[0].ravel()
    tol = 1e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(gx, SG_ORACLE[kind](d, a), rtol=tol, atol=tol)
    if kind == "sigmoid":
        assert gx[0] == pytest.approx(a / 4)            # the table values: α/4, α/2, 1/a, 1/γ
    elif kind == "atan":
        assert gx[0] == pytest.approx(a / 2)
    else:
        assert gx[0] == pytest.approx(1 / a)


# ----------------------------------------------------------------------------- max and max pooling ties


def test_max_shares_the_gradient_among_tied_maxima():
    """Binary spikes tie in every max (ASA, Razor): each tied maximum gets 1/(number of ties)."""
    a = ms.Tensor(np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0], [0.0, 1.0, 0.0]]), requires_grad=True)
    (F.max(a, axis=1) * np.array([1.0, 3.0, 2.0])).sum().backward()
    np.testing.assert_allclose(a.grad, [[0, 0.5, 0.5], [1, 1, 1], [0, 2, 0]])
    b = ms.Tensor(np.array([[1.0, 0.0], [1.0, 1.0]]), requires_grad=True)
    F.max(b).backward()
    np.testing.assert_allclose(b.grad, [[1 / 3, 0], [1 / 3, 1 / 3]])
    c = ms.Tensor(np.array([[0.0, 1.0], [1.0, 1.0]]), requires_grad=True)
    F.max(c, axis=0, keepdims=True).sum().backward()
    np.testing.assert_allclose(c.grad, [[0, 0.5], [1, 0.5]])


def test_max_pool_ties_go_to_the_first_offset():
    """A window of equal values routes its gradient to its first (row-major) element, as PyTorch does."""
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 2:, 2:] = [[0.0, 1.0], [1.0, 1.0]]             # window (1, 1): three tied maxima
    xt = ms.Tensor(x, requires_grad=True)
    y = F.max_pool2d(xt, 2)
    (y * np.array([[1.0, 2.0], [3.0, 4.0]])).sum().backward()
    want = np.zeros((4, 4))
    want[0, 0], want[0, 2], want[2, 0], want[2, 3] = 1, 2, 3, 4
    np.testing.assert_array_equal(xt.grad[0, 0], want)


@pytest.mark.parametrize("stride", [None, 1, 2])
def test_max_pool_non_square_windows(stride):
    """2×3 windows: the arg-max offset (a, b) is stored as a·kw + b; a loop oracle gives values and gradient."""
    rng = np.random.default_rng(0)
    x = rng.permutation(2 * 7 * 9).reshape(1, 2, 7, 9).astype(np.float64)   # distinct values: no ties
    xt = ms.Tensor(x, requires_grad=True)
    y = F.max_pool2d(xt, (2, 3), stride)
    sh, sw = (2, 3) if stride is None else (stride, stride)
    Ho, Wo = (7 - 2) // sh + 1, (9 - 3) // sw + 1
    assert y.shape == (1, 2, Ho, Wo)
    g = rng.normal(size=y.shape)
    (y * g).sum().backward()
    want_y, want_g = np.zeros(y.shape), np.zeros_like(x)
    for c in range(2):
        for i in range(Ho):
            for j in range(Wo):
                win = x[0, c, sh * i:sh * i + 2, sw * j:sw * j + 3]
                a, b = np.unravel_index(np.argmax(win), win.shape)
                want_y[0, c, i, j] = win[a, b]
                want_g[0, c, sh * i + a, sw * j + b] += g[0, c, i, j]
    np.testing.assert_array_equal(y.data, want_y)
    np.testing.assert_allclose(xt.grad, want_g, atol=1e-12)


@pytest.mark.parametrize("kernel,stride", [((2, 3), None), ((2, 3), 2), ((3, 2), 1), ((1, 3), 2), ((2, 2), 3)])
def test_avg_pool_non_square_windows_against_a_loop(kernel, stride):
    """Average pooling with kh ≠ kw: values 1/(kh·kw)·Σ window, and the gradient spread over (possibly
    overlapping) windows, against a loop; rows/columns outside every window get zero gradient."""
    rng = np.random.default_rng(1)
    kh, kw = kernel
    x = rng.normal(size=(2, 1, 7, 8))
    xt = ms.Tensor(x, requires_grad=True)
    y = F.avg_pool2d(xt, kernel, stride)
    sh, sw = (kh, kw) if stride is None else (stride, stride)
    Ho, Wo = (7 - kh) // sh + 1, (8 - kw) // sw + 1
    assert y.shape == (2, 1, Ho, Wo)
    g = rng.normal(size=y.shape)
    (y * g).sum().backward()
    want_y, want_g = np.zeros(y.shape), np.zeros_like(x)
    for i in range(Ho):
        for j in range(Wo):
            rows, cols = slice(sh * i, sh * i + kh), slice(sw * j, sw * j + kw)
            want_y[..., i, j] = x[..., rows, cols].mean((-2, -1))
            want_g[..., rows, cols] += g[..., i, j][..., None, None] / (kh * kw)
    np.testing.assert_allclose(y.data, want_y, atol=1e-12)
    np.testing.assert_allclose(xt.grad, want_g, atol=1e-12)


def test_pools_and_conv_reject_a_zero_stride():
    x = ms.Tensor(np.ones((1, 1, 4, 4)))
    for fn in (F.max_pool2d, F.avg_pool2d):
        with pytest.raises(ValueError, match="stride"):
            fn(x, 2, 0)
        with pytest.raises(ValueError, match="stride"):
            fn(x, 2, (2, 0))
    with pytest.raises(ValueError, match="stride"):
        F.conv2d(x, ms.Tensor(np.ones((1, 1, 3, 3))), stride=0)


# ----------------------------------------------------------------------------- clip and relu at their bounds


def test_clip_gradient_is_one_at_both_bounds():
    """clip's gradient is 1 on the closed interval [lo, hi] (QCFS: q = 0 exactly for a whole interval of z)."""
    a = ms.Tensor(np.array([-0.5, -0.50001, 0.0, 0.5, 0.50001, 0.2]), requires_grad=True)
    F.clip(a, -0.5, 0.5).sum().backward()
    np.testing.assert_array_equal(a.grad, [1, 0, 1, 1, 0, 1])
    b = ms.Tensor(np.array([0.0, 1.0, -1.0, 2.0]), requires_grad=True)
    F.clip(b, 0.0, 1.0).sum().backward()
    np.testing.assert_array_equal(b.grad, [1, 1, 0, 0])


def test_relu_gradient_is_zero_at_zero():
    a = ms.Tensor(np.array([-1.0, 0.0, 2.0]), requires_grad=True)
    F.relu(a).sum().backward()
    np.testing.assert_array_equal(a.grad, [0, 0, 1])
