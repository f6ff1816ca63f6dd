"""Relevance propagation (EventRPG §2–3, appendix D): αβ rule, SLTRP, SLRP, maps and faithfulness.

Every rule is checked twice: by the conservation property the paper proves, and against a slow
loop-based re-implementation written straight from the equation (a second oracle).
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minisnn import core, models, neurons, nn, relevance as rv

SETTINGS = settings(max_examples=20, deadline=None)
ALPHAS = st.sampled_from([1.0, 0.0, 0.5, 2.0, 1.5, -0.5])  # with beta = 1 - alpha (α2β1 is alpha=2, beta=-1)


def no_bias_f64(model, scale=1.0):
    """Drop biases (conservation is exact only without them), scale weights, move everything to float64."""
    for _, layer in rv.layers_of(model):
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            layer.bias = None
            layer.weight.data = layer.weight.data * scale
        for name in list(layer._params) + list(layer._buffers):
            v = getattr(layer, name)
            if isinstance(v, np.ndarray):
                layer.register_buffer(name, v.astype(np.float64))
            else:
                v.data = v.data.astype(np.float64)
    return model


# ----------------------------------------------------------------------------- oracles (loops, from the equations)


def ab_oracle(x, w, R, alpha, beta):
    """Eq. 3 with explicit loops over outputs j and inputs i (x [in], w [out, in], R [out])."""
    R_in, lost = np.zeros(len(x)), 0.0
    for j in range(len(R)):
        zp = [max(w[j, i], 0) * max(x[i], 0) + min(w[j, i], 0) * min(x[i], 0) for i in range(len(x))]
        zn = [max(w[j, i], 0) * min(x[i], 0) + min(w[j, i], 0) * max(x[i], 0) for i in range(len(x))]
        sp, sn = sum(zp), sum(zn)
        lost += (alpha * R[j] if sp == 0 else 0) + (beta * R[j] if sn == 0 else 0)
        for i in range(len(x)):
            R_in[i] += R[j] * ((alpha * zp[i] / sp if sp else 0) + (beta * zn[i] / sn if sn else 0))
    return R_in, lost


def conv_matrix(w, H, W, stride, padding):
    """The convolution as a dense matrix [O·Ho·Wo, C·H·W], filled by loops."""
    O, C, kh, kw = w.shape
    Ho, Wo = (H + 2 * padding - kh) // stride + 1, (W + 2 * padding - kw) // stride + 1
    M = np.zeros((O, Ho, Wo, C, H, W))
    for o in range(O):
        for i in range(Ho):
            for j in range(Wo):
                for c in range(C):
                    for a in range(kh):
                        for b in range(kw):
                            y, x = i * stride + a - padding, j * stride + b - padding
                            if 0 <= y < H and 0 <= x < W:
                                M[o, i, j, c, y, x] = w[o, c, a, b]
    return M.reshape(O * Ho * Wo, C * H * W), (O, Ho, Wo)


def sltrp_oracle(R_out, gamma):
    """Eq. 10–11 for one neuron, a plain Python loop; the last γ[1] share goes to R_init."""
    T = len(R_out)
    R_in = [0.0] * T
    R_in[T - 1] = R_out[T - 1]
    for t in range(T - 1, 0, -1):
        R_in[t - 1] = gamma[t] * R_in[t] + R_out[t - 1]
        R_in[t] = (1 - gamma[t]) * R_in[t]
    r_init = gamma[0] * R_in[0]
    R_in[0] -= r_init
    return np.array(R_in), r_init


def mixed(draw_seed, shape, zero_frac=0.3):
    """Mixed-sign values with exact zeros (so some denominators can vanish)."""
    rng = np.random.default_rng(draw_seed)
    return rng.normal(size=shape) * (rng.random(shape) > zero_frac)


# ----------------------------------------------------------------------------- αβ rule


@SETTINGS
@given(seed=st.integers(0, 10 ** 6), alpha=ALPHAS, n_in=st.integers(1, 6), n_out=st.integers(1, 5))
def test_alpha_beta_linear_matches_loops_and_conserves(seed, alpha, n_in, n_out):
    beta = 1 - alpha
    x, w, R = mixed(seed, (n_in,)), mixed(seed + 1, (n_out, n_in)), mixed(seed + 2, (n_out,), 0)
    R_in, lost = rv.alpha_beta(x, w, R, alpha, beta, return_lost=True)
    want, want_lost = ab_oracle(x, w, R, alpha, beta)
    np.testing.assert_allclose(R_in, want, atol=1e-12)
    assert abs(lost.sum() - want_lost) < 1e-12
    assert abs(R_in.sum() + lost.sum() - R.sum()) < 1e-10  # appendix D.1 (+ what zero denominators lost)


def test_alpha_beta_exact_conservation_without_zero_denominators():
    rng = np.random.default_rng(0)
    x, w, R = rng.normal(size=(7, 12)), rng.normal(size=(5, 12)), rng.normal(size=(7, 5))
    for alpha in (1.0, 2.0, 0.3):
        R_in, lost = rv.alpha_beta(x, w, R, alpha, 1 - alpha, return_lost=True)
        assert not lost.any()
        np.testing.assert_allclose(R_in.sum(-1), R.sum(-1), rtol=1e-12)


def test_alpha_beta_reports_relevance_lost_to_zero_denominators():
    x = np.array([1.0, 2.0])
    w = np.array([[1.0, 1.0], [-1.0, 0.0], [0.0, 0.0]])  # output 1: no positive part; output 2: nothing
    R = np.array([1.0, 5.0, 7.0])
    R_in, lost = rv.alpha_beta(x, w, R, return_lost=True)
    np.testing.assert_allclose(R_in, [1 / 3, 2 / 3])
    np.testing.assert_allclose(lost, [0, 5, 7])
    R_in, lost = rv.alpha_beta(x, w, R, alpha=2.0, beta=-1.0, return_lost=True)  # Montavon's α2β1
    np.testing.assert_allclose(R_in, [2 / 3 + 5 * -1.0, 4 / 3])  # β·R_1: z⁻ of output 1 is all on input 0
    np.testing.assert_allclose(lost, [1 * -1, 5 * 2, 7 * 1])


@SETTINGS
@given(seed=st.integers(0, 10 ** 6), alpha=ALPHAS, stride=st.sampled_from([1, 2]), padding=st.sampled_from([0, 1]))
def test_alpha_beta_conv_matches_dense_loops_and_conserves(seed, alpha, stride, padding):
    beta = 1 - alpha
    x, w = mixed(seed, (2, 3, 5, 5)), mixed(seed + 1, (4, 3, 3, 3))
    M, oshape = conv_matrix(w, 5, 5, stride, padding)
    R = mixed(seed + 2, (2,) + oshape, 0)
    R_in, lost = rv.alpha_beta_conv(x, w, R, stride, padding, alpha, beta, return_lost=True)
    for n in range(2):  # the same rule through an explicit dense matrix and loops
        want, want_lost = ab_oracle(x[n].ravel(), M, R[n].ravel(), alpha, beta)
        np.testing.assert_allclose(R_in[n].ravel(), want, atol=1e-10)
        assert abs(lost[n].sum() - want_lost) < 1e-10
    assert abs(R_in.sum() + lost.sum() - R.sum()) < 1e-9


def test_alpha_beta_rejects_bad_arguments():
    x, w, R = np.ones(3), np.ones((2, 3)), np.ones(2)
    with pytest.raises(ValueError, match="alpha"):
        rv.alpha_beta(x, w, R, alpha=1.0, beta=0.5)
    with pytest.raises(ValueError, match="shapes"):
        rv.alpha_beta(x, np.ones((2, 4)), R)
    with pytest.raises(ValueError, match="alpha_beta_conv"):
        rv.alpha_beta_conv(np.ones((1, 2, 4, 4)), np.ones((1, 3, 3, 3)), np.ones((1, 1, 2, 2)))


# ----------------------------------------------------------------------------- pools, gates, residual


def test_pools_against_loops():
    rng = np.random.default_rng(3)
    x, R = rng.normal(size=(1, 2, 4, 4)), rng.normal(size=(1, 1, 2, 2, 2))
    model_in = x[None]  # [T=1, N=1, C, H, W]
    avg, mx = nn.AvgPool2d(2), nn.MaxPool2d(2)
    got_avg = rv._rule(avg, model_in, None, R, "sltrp", 1.0, 0.0, False)[0][0, 0]
    got_max = rv._rule(mx, model_in, None, R, "sltrp", 1.0, 0.0, False)[0][0, 0]
    want_avg, want_max = np.zeros((2, 4, 4)), np.zeros((2, 4, 4))
    for c in range(2):
        for i in range(2):
            for j in range(2):
                win = x[0, c, 2 * i:2 * i + 2, 2 * j:2 * j + 2]
                r = R[0, 0, c, i, j]
                pos = np.maximum(win, 0)  # avg pool: weights 1/4 > 0, α = 1: only the positive inputs share
                want_avg[c, 2 * i:2 * i + 2, 2 * j:2 * j + 2] = r * pos / pos.sum() if pos.sum() else 0
                a, b = np.unravel_index(np.argmax(win), (2, 2))
                want_max[c, 2 * i + a, 2 * j + b] = r  # winner takes all
    np.testing.assert_allclose(got_avg, want_avg, atol=1e-12)
    np.testing.assert_allclose(got_max, want_max)


class Gate(nn.Module):
    """A multiplicative attention gate (as ASA / Razor define them): relevance passes to the gated signal."""
    relevance_rule = "identity"

    def forward(self, x):
        return x * (x.mean(axis=2, keepdims=True).sigmoid())


def test_residual_add_splits_by_positive_parts():
    a, b, R = np.array([1.0, -1.0, 3.0, -2.0]), np.array([3.0, 2.0, 0.0, -1.0]), np.array([4.0, 1.0, 2.0, 5.0])
    Ra, Rb, lost = rv.residual_add(a, b, R)
    np.testing.assert_allclose(Ra, [1.0, 0.0, 2.0, 0.0])
    np.testing.assert_allclose(Rb, [3.0, 1.0, 0.0, 0.0])
    np.testing.assert_allclose(lost, [0, 0, 0, 5.0])
    np.testing.assert_allclose(Ra + Rb + lost, R)


# ----------------------------------------------------------------------------- SLTRP (eq. 9–14)


def random_gamma(rng, shape):
    g = rng.random(shape)
    g[0] = 0.0  # V[0] = 0
    return g


@SETTINGS
@given(seed=st.integers(0, 10 ** 6), T=st.integers(1, 7))
def test_sltrp_recursion_loop_oracle_closed_form_and_proposition_1(seed, T):
    rng = np.random.default_rng(seed)
    R_out, gamma = rng.normal(size=(T, 3, 2)), random_gamma(rng, (T, 3, 2))
    R_in, R_init = rv.sltrp_recursion(R_out, gamma)
    assert R_in.shape == R_out.shape and R_init.shape == (3, 2) and not R_init.any()
    for idx in np.ndindex(3, 2):
        r, g = R_out[(slice(None),) + idx], gamma[(slice(None),) + idx]
        want, _ = sltrp_oracle(list(r), list(g))
        np.testing.assert_allclose(R_in[(slice(None),) + idx], want, atol=1e-12)
        for t in range(T):  # eq. 12
            tail = sum(r[i] * np.prod(g[t + 1:i + 1]) for i in range(t + 1, T))
            assert abs(R_in[(t,) + idx] - (1 - g[t]) * (r[t] + tail)) < 1e-12
        for k in range(1, T):  # Proposition 1, eq. 13
            rhs = r[:k].sum() + sum(r[i] * np.prod(g[k:i + 1]) for i in range(k, T))
            assert abs(R_in[(slice(0, k),) + idx].sum() - rhs) < 1e-12
    np.testing.assert_allclose(R_in.sum(0), R_out.sum(0), atol=1e-12)  # eq. 14, per neuron


@SETTINGS
@given(seed=st.integers(0, 10 ** 6), T=st.integers(1, 6))
def test_sltrp_with_initial_membrane_returns_r_init(seed, T):
    rng = np.random.default_rng(seed)
    R_out, gamma = rng.normal(size=(T, 4)), rng.random((T, 4))  # γ[1] > 0: v0 ≠ 0
    R_in, R_init = rv.sltrp_recursion(R_out, gamma)
    np.testing.assert_allclose(R_in.sum(0) + R_init, R_out.sum(0), atol=1e-12)
    for m in range(4):
        want, want_init = sltrp_oracle(list(R_out[:, m]), list(gamma[:, m]))
        np.testing.assert_allclose(R_in[:, m], want, atol=1e-12)
        assert abs(R_init[m] - want_init) < 1e-12
        for k in range(1, T):  # Proposition 1 with the initial state's share on the left
            rhs = R_out[:k, m].sum() + sum(R_out[i, m] * np.prod(gamma[k:i + 1, m]) for i in range(k, T))
            assert abs(R_in[:k, m].sum() + R_init[m] - rhs) < 1e-12


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sltrp_c_equals_numpy(monkeypatch, dtype):
    monkeypatch.setattr(core, "NUM_THREADS", 3)   # the C kernel runs on three neuron ranges
    rng = np.random.default_rng(1)
    R_out, gamma = rng.normal(size=(9, 5, 1999)).astype(dtype), rng.random((9, 5, 1999)).astype(dtype)
    c_in, c_init = rv.sltrp_recursion(R_out, gamma)
    monkeypatch.setenv("MINISNN_BACKEND", "numpy")
    assert core.backend() == "numpy"
    n_in, n_init = rv.sltrp_recursion(R_out, gamma)
    assert c_in.dtype == dtype
    tol = 1e-5 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(c_in, n_in, rtol=tol, atol=tol)
    np.testing.assert_allclose(c_init, n_init, rtol=tol, atol=tol)


def test_sltrp_recursion_rejects_bad_shapes():
    with pytest.raises(ValueError, match="gamma"):
        rv.sltrp_recursion(np.ones((3, 2)), np.ones((3, 3)))
    with pytest.raises(ValueError, match="R_out"):
        rv.sltrp_recursion(np.ones((0, 2)), np.ones((0, 2)))


def test_sltrp_gamma_formula():
    h, cur = np.array([2.0, -1.0, 0.0, 1.0, -2.0]), np.array([1.0, -3.0, 0.0, -1.0, 2.0])
    c, d = 0.5, 2.0
    g = rv.sltrp_gamma(h, cur, c, d, alpha=0.75, beta=0.25)
    want = [0.75 * 1 / (1 + 2), 0.25 * -0.5 / (-0.5 - 6), 0.0, 0.75, 0.25]
    np.testing.assert_allclose(g, want)
    g = rv.sltrp_gamma(h, cur, c, d, alpha=0.75, beta=0.25, clamp_input=True)  # reference code: I ≥ 0
    np.testing.assert_allclose(g, [0.25, 0.25, 0.0, 0.75, 0.25])


@pytest.mark.parametrize("v_reset,v0,decay_input", [(0.0, 0.0, False), (None, 0.5, False), (0.0, -0.3, False),
                                                    (0.0, 0.0, True), (None, 0.5, True)])
def test_explain_through_one_neuron_uses_post_reset_membrane(v_reset, v0, decay_input):
    """A model made of one LIF layer: explain must use h[t−1] after reset (h[0] = v0), I = the input and the
    neuron's own c and d (decay_input=True: d = 1/τ, not 1)."""
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 1.0, size=(6, 2, 3)) * (3 if decay_input else 1)
    lif = neurons.LIF(tau=1.5, v_reset=v_reset, v0=v0, decay_input=decay_input)
    e = rv.explain(nn.Sequential(lif), x, target=np.array([0, 2]), init="onehot", alpha=0.7, beta=0.3)
    c, d, h = 1 - 1 / 1.5, 1 / 1.5 if decay_input else 1.0, np.full((2, 3), v0)  # simulate the neuron with a loop
    gamma = np.zeros_like(x)
    for t in range(6):
        gamma[t] = rv.sltrp_gamma(h, x[t], c, d, 0.7, 0.3)
        u = c * h + d * x[t]
        s = u >= 1.0
        h = np.where(s, u - 1.0, u) if v_reset is None else np.where(s, v_reset, u)
    want, want_init = rv.sltrp_recursion(e.output_relevance, gamma)
    np.testing.assert_allclose(e.input, want, atol=1e-12)
    np.testing.assert_allclose(e.conservation["0"]["init"], want_init.sum(-1), atol=1e-12)
    assert (abs(want_init).sum() > 0) == (v0 != 0)


# ----------------------------------------------------------------------------- whole networks


def random_network(rng, v0):
    """Every supported layer type, random parameters and BN statistics, no biases."""
    gain = rng.uniform(0.5, 1.0)
    layers = [nn.Conv2d(2, 4, 3, padding=1, rng=rng), nn.BatchNorm2d(4),
              neurons.LIF(tau=rng.uniform(1.5, 4), decay_input=False, v_reset=rng.choice([0.0, None]), v0=v0),
              nn.AvgPool2d(2), Gate(), nn.Conv2d(4, 6, 3, stride=1, rng=rng),
              neurons.IF(v_threshold=0.5, v0=v0, v_reset=None),
              nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(1), nn.Dropout(0.3), nn.Sequential(nn.Flatten(), nn.Identity()),
              nn.Linear(6, 5, rng=rng), neurons.PLIF(v_threshold=0.2), nn.Linear(5, 3, rng=rng)]
    m = nn.Sequential(*layers)
    bn = layers[1]
    bn.running_mean[:] = rng.normal(0, 0.3, 4)
    bn.running_var[:] = rng.uniform(0.5, 2, 4)
    bn.weight.data[:] = rng.uniform(0.5, 2, 4)
    bn.bias.data[:] = rng.normal(0, 0.5, 4)
    return no_bias_f64(m, scale=3.0 * gain)


@SETTINGS
@given(seed=st.integers(0, 10 ** 6), alpha=ALPHAS, v0=st.sampled_from([0.0, 0.4]), mode=st.sampled_from(rv.MODES))
def test_whole_network_conservation(seed, alpha, v0, mode):
    rng = np.random.default_rng(seed)
    m = random_network(rng, v0)
    x = rng.normal(0.5, 1.0, size=(4, 3, 2, 12, 12))
    e = rv.explain(m, x, init="logit", mode=mode, alpha=alpha, beta=1 - alpha)
    assert e.input.shape == x.shape[mode == "slrp":]
    assert list(e.layers) == [n for n, _ in rv.layers_of(m)][::-1]
    for name, r in e.residuals().items():  # per layer: Σ R_out = Σ R_in + lost + R_init, per sample
        np.testing.assert_allclose(r, 0, atol=1e-9, err_msg=name)
    lost = sum(c["lost"].sum() + c["init"].sum() for k, c in e.conservation.items() if k != "output")
    start = e.output_relevance.sum() / (len(x) if mode == "slrp" else 1)  # SLRP: time-averaged output
    assert abs(e.input.sum() + lost - start) < 1e-9
    logits = e.output[:, np.arange(3), e.target]
    assert abs(start - (logits.mean(0) if mode == "slrp" else logits.sum(0)).sum()) < 1e-9


def spiking_convsnn(rng):
    """A float64 ConvSNN on 8×8 inputs, no biases, weights scaled so that every layer spikes."""
    return no_bias_f64(models.ConvSNN(rng=rng, input_size=8, width=4), scale=8.0)


def test_whole_network_conservation_is_not_vacuous():
    """On a net that spikes, most of the logit reaches the input and per-step sums move between steps."""
    rng = np.random.default_rng(0)
    m = spiking_convsnn(rng)
    x = (rng.random((5, 2, 2, 8, 8)) < 0.5) * 2.0
    e = rv.explain(m, x, init="onehot")
    lost = sum(c["lost"].sum() for k, c in e.conservation.items() if k != "output")
    assert e.input.sum() > 0.5 * e.output_relevance.sum() and abs(e.input.sum() + lost - 10.0) < 1e-9
    assert (e.input >= 0).all()  # z⁺ rule with positive init: relevance stays positive
    lif = e.conservation["2"]["relevance"].sum(1)
    assert not np.allclose(lif, e.conservation["3"]["relevance"].sum(1))  # SLTRP moved relevance in time


def test_explain_rejects_bad_arguments():
    m = nn.Sequential(nn.Flatten(2), nn.Linear(4, 3, rng=np.random.default_rng(0)))
    x = np.ones((2, 1, 4))
    with pytest.raises(ValueError, match="mode"):
        rv.explain(m, x, mode="lrp")
    with pytest.raises(ValueError, match="init"):
        rv.explain(m, x, init="softmax")
    with pytest.raises(ValueError, match="target"):
        rv.explain(m, x, target=3)
    with pytest.raises(ValueError, match="x must be"):
        rv.explain(m, np.full((2, 1, 4), np.nan))
    with pytest.raises(TypeError, match="Sequential"):
        rv.explain(m[1], x)
    with pytest.raises(TypeError, match="relevance_rule"):
        rv.explain(nn.Sequential(nn.Sequential(nn.Linear(4, 4)), Unknown()), np.ones((2, 1, 4)))


class Unknown(nn.Module):
    def forward(self, x):
        return x * 2


# ----------------------------------------------------------------------------- SLRP vs SLTRP


def test_slrp_is_sltrp_averaged_over_time_for_one_linear_layer_and_a_neuron():
    """Constant-in-time input, Flatten → Linear → LIF: SLRP's map equals the time mean of SLTRP's exactly
    (the linear layer's ratios do not depend on t, and the LIF conserves each neuron's relevance over time,
    eq. 14, so SLRP's identity is the time-summed SLTRP)."""
    rng = np.random.default_rng(2)
    m = nn.Sequential(nn.Flatten(2), nn.Linear(12, 4, bias=False, rng=rng), neurons.LIF(tau=2.0, decay_input=False))
    m[1].weight.data = m[1].weight.data.astype(np.float64) * 5
    x = np.broadcast_to(rng.normal(size=(1, 3, 3, 2, 2)), (6, 3, 3, 2, 2))
    for alpha in (1.0, 0.6, 2.0):
        kw = dict(target=np.array([0, 1, 3]), init="onehot", alpha=alpha, beta=1 - alpha)
        t, s = rv.explain(m, x, mode="sltrp", **kw), rv.explain(m, x, mode="slrp", **kw)
        np.testing.assert_allclose(s.input, t.input.mean(0), atol=1e-12)
        lif_t = t.layers["2"].mean(0)  # relevance at the neuron's input: SLRP identity == time mean of SLTRP
        np.testing.assert_allclose(s.layers["2"], lif_t, atol=1e-12)
        assert not np.allclose(t.input[0], t.input[-1])  # yet SLTRP's per-step maps differ


def test_slrp_and_sltrp_differ_when_hidden_spikes_vary():
    """Deeper nets: hidden spike trains vary in time even for a static input, so the maps differ (slightly)."""
    rng = np.random.default_rng(0)
    m = spiking_convsnn(rng)
    x = np.broadcast_to((rng.random((1, 2, 2, 8, 8)) < 0.5) * 2.0, (5, 2, 2, 8, 8))
    t, s = rv.saliency(m, x, mode="sltrp", init="onehot"), rv.saliency(m, x, mode="slrp", init="onehot")
    assert not np.allclose(s, t.mean(0), atol=1e-6)
    assert np.corrcoef(s.ravel(), t.mean(0).ravel())[0, 1] > 0.5


# ----------------------------------------------------------------------------- maps


def tiny_cam_net():
    """x [T, N, 1, 2, 2] -> conv 1×1 (weights 1 and 0.25) -> flatten -> linear (rows of 1 and −2): no neurons."""
    conv = nn.Conv2d(1, 2, 1, bias=False)
    conv.weight.data = np.array([1.0, 0.25]).reshape(2, 1, 1, 1)
    lin = nn.Linear(8, 2, bias=False)
    lin.weight.data = np.array([[1.0] * 4 + [-2.0] * 4, [0.5] * 8])
    return nn.Sequential(conv, nn.Flatten(), lin)


def test_grad_cam_and_grad_cam_pp_by_hand():
    x = np.array([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 1, 1, 2, 2).repeat(2, 0)  # T = 2, N = 1
    m = tiny_cam_net()
    # y_0 = mean_t Σ W A: dy/dA[t, ch] = W[0, ch-block] / T = 0.5 (ch 0) and −1 (ch 1)
    # Grad-CAM: w = (0.5, −1), map = ReLU(0.5·x − 1·0.25·x) = x/4
    np.testing.assert_allclose(rv.grad_cam(m, x, layer=0, target=0), np.broadcast_to(x[:, :, 0] / 4, (2, 1, 2, 2)))
    # Grad-CAM++: ch 1 has g < 0 -> weight 0; ch 0: a = 0.25/(2·0.25 + 10·0.125) = 1/7, w = 4·(1/7)·0.5 = 2/7
    want = np.broadcast_to(x[:, :, 0] * 2 / 7, (2, 1, 2, 2))
    np.testing.assert_allclose(rv.grad_cam_pp(m, x, layer=0, target=0), want)
    m[0].weight.grad = np.ones((2, 1, 1, 1))
    rv.grad_cam(m, x, layer="0")
    np.testing.assert_allclose(m[0].weight.grad, 1.0)  # parameter gradients are left untouched
    assert m[2].weight.grad is None


def test_sam_reference_and_original():
    rng = np.random.default_rng(0)
    x = (rng.random((4, 2, 1, 2, 2)) < 0.5).astype(np.float64)
    m = tiny_cam_net()
    A = np.stack([x[:, :, 0], 0.25 * x[:, :, 0]], 2)  # the conv's output [T, N, 2, 2, 2]
    ref, orig = rv.sam(m, x, layer=0), rv.sam(m, x, layer=0, variant="original")
    for tp in range(4):
        trace = sum(A[t] * np.exp(-0.2 * (tp - t)) for t in range(tp)) if tp else np.zeros_like(A[0])
        np.testing.assert_allclose(ref[tp], trace.sum(1), atol=1e-12)
        np.testing.assert_allclose(orig[tp], (trace * A[tp]).sum(1), atol=1e-12)
    with pytest.raises(ValueError, match="variant"):
        rv.sam(m, x, layer=0, variant="new")


def test_cam_and_relcam_are_channel_sums_of_the_explanation():
    rng = np.random.default_rng(0)
    m = spiking_convsnn(rng)
    x = (rng.random((5, 2, 2, 8, 8)) < 0.5) * 2.0
    for mode in rv.MODES:
        e = rv.explain(m, x, mode=mode)
        R = e.layers["7"]  # default layer: the LIF "6" before the final pool "7" and Flatten "8" (reference)
        np.testing.assert_allclose(rv.cam(m, x, mode=mode), R.sum(-3), atol=1e-12)
        A = e.activations["6"].mean(0) if mode == "slrp" else e.activations["6"]
        want = (R.sum((-2, -1), keepdims=True) * A).sum(-3)
        np.testing.assert_allclose(rv.relcam(m, x, mode=mode), want, atol=1e-12)
        np.testing.assert_allclose(rv.cam(m, x, layer="3", mode=mode), e.layers["4"].sum(-3), atol=1e-12)
    e = rv.explain(m, x, until="5")
    assert e.input is None and list(e.layers) == ["9", "8", "7", "6", "5"]
    with pytest.raises(ValueError, match="until"):
        rv.explain(m, x, until="12")
    with pytest.raises(ValueError, match="layer"):
        rv.cam(m, x, layer="9")
    with pytest.raises(ValueError, match="layer"):
        rv.cam(m, x, layer="nope")


def test_normalize_and_resize():
    maps = np.array([[[1.0, 3.0], [2.0, 5.0]], [[2.0, 2.0], [2.0, 2.0]]])
    np.testing.assert_allclose(rv.normalize(maps), [[[0, 0.5], [0.25, 1]], [[0, 0], [0, 0]]])  # 0/0 := 0
    tf = np.stack([maps, 2 * maps])  # [T=2, N=2, 2, 2]
    out = rv.normalize(tf, sample_axis=1)
    np.testing.assert_allclose(out[:, 0].ravel(), (tf[:, 0].ravel() - 1) / 9)
    np.testing.assert_allclose(rv.resize(np.array([[0.0, 1.0], [2.0, 3.0]]), (4, 4))[0], [0, 0.25, 0.75, 1])


def test_average_drop_increase_by_hand():
    """logits = x (identity linear): sample 1 unchanged, 2 drops, 3 increases (target 0 for all)."""
    m = nn.Sequential(nn.Flatten(), nn.Linear(2, 2, bias=False))
    m[1].weight.data = np.eye(2)
    x = np.array([[2.0, 0.0], [1.0, 0.5], [1.0, 2.0]]).reshape(1, 3, 1, 1, 2)
    maps = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]).reshape(3, 1, 2)  # [N, h, w]
    ad, ai = rv.average_drop_increase(m, x, maps, target=np.zeros(3, int))
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    drop = (sig(0.5) - sig(-0.5)) / sig(0.5)
    assert abs(ad - 100 * drop / 3) < 1e-9 and abs(ai - 100 / 3) < 1e-9
    with pytest.raises(ValueError, match="layout"):
        rv.average_drop_increase(m, x, np.ones((1, 3, 1, 2)), layout="NHW")


# ----------------------------------------------------------------------------- a trained model


@pytest.fixture(scope="module")
def trained_digits():
    """ConvSNN (width 8) on 17×17 DigitsDVS frames, T = 4, trained 3 epochs on 480 samples (~8 s CPU)."""
    datasets = pytest.importorskip("data_tools.datasets")
    from data_tools import frames as fr, loader
    from minisnn import optim, train

    def frames(train_split, n):
        ds = datasets.Subset(datasets.DigitsDVS(train=train_split), np.arange(n))
        x, y = next(iter(loader.DataLoader(ds, n, 4, shuffle=False)))
        return fr.downsample(x, 2).astype(np.float32), y

    rng = np.random.default_rng(0)
    (x, y), (x_te, y_te) = frames(True, 480), frames(False, 64)
    model = models.ConvSNN(width=8, input_size=17, rng=rng)
    opt = optim.Adam(model.parameters(), 1e-2)
    for _ in range(3):
        perm = rng.permutation(len(y))
        train.train_epoch(model, [(x[:, perm[i:i + 32]], y[perm[i:i + 32]]) for i in range(0, len(y), 32)], opt)
    acc = train.evaluate(model, [(x_te, y_te)])["accuracy"]
    return model, x_te, y_te, acc


def test_trained_saliency_is_more_faithful_than_random_maps(trained_digits):
    """§5.1.1 on a trained net (default protocol: maps summed over time): the SLRP / SLTRP saliency maps lower A.D.
    below the best of three random maps by a margin (measured: 71.2 / 71.9 vs 76.8-77.4).  A.I. is 0 for every map
    here (this small net never grows more confident on fewer events); the hand-made test below shows A.I."""
    model, x, y, acc = trained_digits
    assert acc > 0.6
    randoms = [rv.average_drop_increase(model, x, np.random.default_rng(s).random((x.shape[1],) + x.shape[-2:]),
                                        layout="NHW") for s in range(3)]
    for mode in rv.MODES:
        ad, _ = rv.average_drop_increase(model, x, rv.saliency(model, x, mode=mode))
        assert ad < min(r[0] for r in randoms) - 3.0, (mode, ad, randoms)


def test_saliency_masks_out_the_evidence_for_another_class_average_increase():
    """logits = W·x: pixels 0, 1 support class 0, pixels 2, 3 class 1. Each sample shows class 0 (pixels 0, 1) and a
    distractor on pixel 2. CLRP relevance (1/2 for class 0, −1/2 for class 1, z⁺ rule) is R_i = x_i / (2(x_0 + x_1))
    on 0, 1, −1/2 on the distractor and 0 on the dark pixel 3, so the min-max mask is (R + 1/2) / (max R + 1/2):
    exactly 0 on the distractor, most of the object kept, and every sample's probability of class 0 rises
    (A.I. = 100, A.D. = 0). The negated map masks the object instead: A.I. = 0."""
    m = nn.Sequential(nn.Flatten(2), nn.Linear(4, 2, bias=False))
    m[1].weight.data = np.array([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
    obj = np.array([[2.0, 1.0], [1.5, 1.5], [1.0, 3.0]])
    x = np.concatenate([obj, [[1.5], [2.0], [2.5]], np.zeros((3, 1))], 1).reshape(1, 3, 1, 2, 2).repeat(3, 0)
    for mode in rv.MODES:
        s = rv.saliency(m, x, mode=mode)
        s = s if mode == "slrp" else s.sum(0)
        assert (s[:, 0, 0] > 0).all() and (s[:, 0, 1, 0] < 0).all() and (s[:, 0, 1, 1] == 0).all()
        mask = rv.mask_like(s, x.shape)[0, :, 0].reshape(3, 4)
        R = np.concatenate([obj / (2 * obj.sum(1, keepdims=True)), np.full((3, 1), -0.5), np.zeros((3, 1))], 1)
        want = (R + 0.5) / (R.max(1, keepdims=True) + 0.5)
        np.testing.assert_allclose(mask, want, atol=1e-12)
        assert rv.average_drop_increase(m, x, s) == (0.0, 100.0)
        ad, ai = rv.average_drop_increase(m, x, -s)
        assert ai == 0.0 and ad > 20


def test_time_indexed_mask_and_protocol_options_by_hand():
    """A per-step map [T, N, h, w] (T = 2): ``aggregate=""`` masks frame t with map t (both normalised together per
    sample), ``aggregate="T"`` (default) with their sum; the probabilities of logits = mean_t W·x_t by hand.
    Negative values kept or clipped; min-max before or after the bilinear upsampling."""
    m = nn.Sequential(nn.Flatten(2), nn.Linear(4, 2, bias=False))
    m[1].weight.data = np.array([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
    x = np.array([[1.0, 2.0, 1.0, 1.0], [3.0, 0.0, 1.0, 2.0]]).reshape(2, 1, 1, 2, 2)
    maps = np.array([[1.0, 0.0, 0.0, 0.5], [0.0, 0.5, 0.0, 0.0]]).reshape(2, 1, 2, 2)
    np.testing.assert_allclose(rv.mask_like(maps, x.shape, aggregate="")[:, 0, 0], maps[:, 0])
    np.testing.assert_allclose(rv.mask_like(maps, x.shape)[0, 0, 0], [[1, 0.5], [0, 0.5]])   # the sum, min 0, max 1
    p0 = lambda z: 1 / (1 + np.exp(z[1] - z[0]))  # noqa: E731  softmax probability of class 0
    W = m[1].weight.data
    y = p0(W @ x.reshape(2, 4).mean(0))
    o_step = p0(W @ (x.reshape(2, 4) * maps.reshape(2, 4)).mean(0))
    o_sum = p0(W @ (x.reshape(2, 4) * [1, 0.5, 0, 0.5]).mean(0))
    for kw, o in (({"aggregate": ""}, o_step), ({}, o_sum)):
        ad, ai = rv.average_drop_increase(m, x, maps, target=np.zeros(1, int), **kw)
        assert abs(ad - 100 * max(y - o, 0) / y) < 1e-9 and ai == 100 * (o > y)
    signed = np.array([[-1.0, 0.0], [1.0, 3.0]]).reshape(1, 2, 2)          # [N, h, w]: negatives kept or clipped
    np.testing.assert_allclose(rv.mask_like(signed, x.shape)[0, 0, 0], [[0, 0.25], [0.5, 1]])
    np.testing.assert_allclose(rv.mask_like(signed, x.shape, clip=True)[0, 0, 0], [[0, 0], [1 / 3, 1]])
    peak = np.zeros((1, 3, 3))
    peak[0, 1, 1] = 1.0               # upsampled 3x3 -> 4x4, no output pixel sits on the peak: min-max first (the
    norm_first = rv.mask_like(peak, (1, 1, 1, 4, 4))[0, 0, 0]                            # reference) keeps it < 1
    np.testing.assert_allclose(norm_first, rv.resize(peak[0], (4, 4)))
    assert norm_first.max() < 0.5 and rv.mask_like(peak, (1, 1, 1, 4, 4), order="resize").max() == 1
    with pytest.raises(ValueError, match="aggregate"):
        rv.mask_like(maps, x.shape, aggregate="X")


def test_trained_slrp_and_sltrp_maps_agree_closely_on_static_digits(trained_digits):
    """The paper's observation for static data: SLRP ≈ time-mean SLTRP (exact through spiking layers, approximate
    through linear layers whose spiking inputs vary over time). Measured median correlation ≈ 0.85."""
    model, x, _, _ = trained_digits
    s, t = rv.saliency(model, x[:, :16], mode="slrp"), rv.saliency(model, x[:, :16], mode="sltrp").mean(0)
    corr = [np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in zip(s, t)]
    assert np.median(corr) > 0.7
    model.train()
    e = rv.explain(model, x[:, :8], init="logit")
    assert model.training and e.input.dtype == np.float32  # mode restored, dtype kept
    for name, r in e.residuals().items():  # conservation holds on a trained net (float32)
        np.testing.assert_allclose(r, 0, atol=1e-4 * np.abs(e.output_relevance).sum(), err_msg=name)
