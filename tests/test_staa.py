"""STAA-SNN (methods/staa.py): reductions to the (adaptive) LIF, TSRD, gradients, GC parameter count."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minisnn as ms
from minisnn import functional as F
from minisnn import models, neurons, nn, train
from minisnn.methods import staa

RECT = neurons.Rectangle(1.0)


def _x(T=5, N=3, C=8, H=4, W=4, dtype=np.float32, seed=0):
    return np.random.default_rng(seed).normal(0.8, 1.2, (T, N, C, H, W)).astype(dtype)


def _force_identity(m):
    """GC contributions zeroed (value conv = 0) and SA gates forced to 1 (σ(40) == 1.0 in float32/64)."""
    for gc in (m.gc1, m.gc2):
        gc.value.weight.data[...] = 0
        gc.value.bias.data[...] = 0
    m.sa.conv2.weight.data[...] = 0
    m.sa.conv2.bias.data[...] = 40.0


def _randomise(m, seed=1, scale=0.5):
    rng = np.random.default_rng(seed)
    for _, p in m.named_parameters():
        p.data = (p.data + scale * rng.normal(size=p.shape)).astype(p.dtype)


def _run_recorded(layer, x):
    with nn.recording() as rec:
        s = layer(ms.Tensor(x))
    ex = [r[3] for r in rec if r[0] is layer][0]
    return s.data, ex["u"], ex["h"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_reduces_to_the_library_lif_exactly(dtype):
    """Pos = 0, GC output 0, SA gates 1, M = 1 − 1/τ, N = 1/τ  ->  neurons.LIF(τ = 2), fused: bit-identical."""
    x = _x(dtype=dtype)
    m = staa.STAALIF(8, 5, tsrd=0.0, rng=np.random.default_rng(0))
    _force_identity(m)
    m.gc1.key.weight.data[...] = 3.0        # the key/query branches may be anything: only the value adds
    lif = neurons.LIF(tau=2.0, surrogate=RECT)
    s1, u1, h1 = _run_recorded(m, x)
    s2, u2, h2 = _run_recorded(lif, x)
    assert 0.1 < s2.mean() < 0.6            # the input makes the neurons fire and reset
    assert np.array_equal(s1, s2) and np.array_equal(u1, u2) and np.array_equal(h1, h2)
    m.sa.conv2.bias.data[...] = 0.0         # a gate of 0.5 changes the dynamics: the comparison can fail
    assert not np.array_equal(m(ms.Tensor(x)).data, s2)


def test_default_init_is_close_to_lif_and_flags_off_is_lif():
    x = _x(seed=3)
    lif = neurons.LIF(tau=2.0, surrogate=RECT)(ms.Tensor(x)).data
    off = staa.STAALIF(8, 5, tsrd=0.0, gc=False, pe=None, sa=False)
    assert np.array_equal(off(ms.Tensor(x)).data, lif)
    assert {n for n, _ in off.named_parameters()} == {"M", "N"}
    m = staa.STAALIF(8, 5, tsrd=0.0)        # GC value zero-initialised, Pos = 0, gates σ(4 + ...) near 1
    assert np.all(m.pos.data == 0) and np.all(m.gc1.value.weight.data == 0)
    assert 0.9 < (m(ms.Tensor(x)).data == lif).mean() < 1.0


def test_tsrd_beta_one_is_the_plain_addition_neuron():
    """β = 1: step 1 uses the aggregator, every later step V = H[t−1] + I[t] (no Pos, no GC, no SA)."""
    x = _x(T=6, seed=5)
    m = staa.STAALIF(8, 6, tsrd=1.0, rng=np.random.default_rng(2))
    _randomise(m)
    s, u, h = _run_recorded(m, x)
    assert m.last_dropped.tolist() == [False] + [True] * 5
    plain = neurons.IF(v_threshold=1.0, v_reset=0.0, surrogate=RECT, v0=h[0])
    s2, u2, _ = _run_recorded(plain, x[1:])
    assert np.array_equal(s[1:], s2) and np.array_equal(u[1:], u2)
    m.eval()
    s_eval, u_eval, _ = _run_recorded(m, x)
    assert not m.last_dropped.any() and not np.allclose(u_eval[1:], u2)


def test_tsrd_beta_zero_and_eval_never_drop():
    x = _x(T=8, seed=6)
    m0 = staa.STAALIF(8, 8, tsrd=0.0)
    _randomise(m0)
    outs = [m0(ms.Tensor(x)).data for _ in range(5)]
    assert not m0.last_dropped.any()
    m0.eval()
    assert all(np.array_equal(o, m0(ms.Tensor(x)).data) for o in outs)
    m1 = staa.STAALIF(8, 8, tsrd=1.0).eval()
    for _ in range(5):
        m1(ms.Tensor(x))
        assert not m1.last_dropped.any()


def test_tsrd_same_seed_same_drops_and_rate():
    def pattern(seed):
        m = staa.STAALIF(4, 8, tsrd=0.3, rng=np.random.default_rng(seed), gc=False, sa=False)
        out = []
        for _ in range(6):
            m(ms.Tensor(_x(T=8, C=4, H=2, W=2)))
            out.append(m.last_dropped.copy())
        return np.array(out)
    assert np.array_equal(pattern(7), pattern(7)) and not np.array_equal(pattern(7), pattern(8))
    rng = np.random.default_rng(0)
    draws = np.array([staa.tsrd_mask(8, 0.3, rng, True) for _ in range(3000)])
    assert not draws[:, 0].any() and abs(draws[:, 1:].mean() - 0.3) < 0.015
    assert not staa.tsrd_mask(8, 0.3, rng, False).any() and not staa.tsrd_mask(8, 0.0, rng, True).any()


@pytest.mark.parametrize("pooling", ["softmax", "sigmoid"])
def test_gradients_reach_every_parameter(monkeypatch, pooling):
    """Float64 finite differences of Σ w·S through 3 steps (reset included) for Pos, GC, SA, M, N and I.

    Θ is replaced by its smooth primitive σ(αx), so the surrogate gradient Sigmoid(α) is the exact gradient.
    """
    monkeypatch.setattr(staa.F, "spike", lambda x, sg: F.sigmoid(x * sg.param))
    m = staa.STAALIF(6, 3, tsrd=0.0, surrogate=neurons.Sigmoid(4.0), reduction=2, sa_reduction=2, pooling=pooling,
                     rng=np.random.default_rng(0))
    _randomise(m, seed=3, scale=0.3)
    m.sa.conv1.bias.data += 1.0             # keep SA's ReLU units active and its sigmoid away from saturation
    m.sa.conv2.bias.data -= 3.5
    params = dict(m.named_parameters())
    for p in params.values():
        p.data = p.data.astype(np.float64)
    x = _x(T=3, N=1, C=6, H=2, W=3, dtype=np.float64, seed=4)
    w = np.random.default_rng(1).normal(size=x.shape)
    xt = ms.Tensor(x, requires_grad=True)
    (m(xt) * w).sum().backward()

    def f():
        return float((m(ms.Tensor(x)).data * w).sum())
    for name, p in list(params.items()) + [("input", xt)]:
        arr = x if name == "input" else p.data
        num = np.zeros_like(arr)
        for i in np.ndindex(arr.shape):
            old = arr[i]
            arr[i] = old + 1e-6
            fp = f()
            arr[i] = old - 1e-6
            num[i] = (fp - f()) / 2e-6
            arr[i] = old
        if not (pooling == "softmax" and name.endswith("key.bias")):    # softmax ignores a shift of its logits
            assert np.abs(p.grad).max() > 1e-6, f"{name} received no gradient"
        np.testing.assert_allclose(p.grad, num, rtol=1e-5, atol=1e-8, err_msg=name)
    assert {n.split(".")[0] for n in params} == {"gc1", "gc2", "sa", "M", "N", "pos"}


@pytest.mark.parametrize("C,r", [(16, 4), (64, 4), (32, 8), (12, 1)])
def test_gc_parameter_count(C, r):
    """§4.3: the two compressing 1×1 convs hold 2·C·C/r weights; plus key conv (C + 1), LN (2·C/r), biases."""
    gc = staa.GCBlock(C, reduction=r)
    hand = 2 * C * C // r + (C + 1) + 2 * (C // r) + (C // r + C)
    assert sum(p.size for p in gc.parameters()) == hand
    assert gc.query.weight.size + gc.value.weight.size == 2 * C * C / r


def test_gc_and_sa_blocks():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 8, 5, 5)).astype(np.float32)
    gc = staa.GCBlock(8, pooling="softmax")
    _randomise(gc)
    z = gc(ms.Tensor(x)).data                        # eq. 10: X plus one context vector per sample and step
    d = z - x
    assert np.allclose(d, d[..., :1, :1], atol=1e-6) and np.abs(d).max() > 1e-3
    flat = np.repeat(rng.normal(size=(3, 8, 1)), 25, axis=2)          # constant over the 25 positions
    logits = rng.normal(size=(3, 1, 25))
    ctx = staa.gc_context(ms.Tensor(flat), ms.Tensor(logits), "softmax").data  # softmax weights sum to 1
    np.testing.assert_allclose(ctx, flat[:, :, :1], rtol=1e-12)
    ctx = staa.gc_context(ms.Tensor(flat), ms.Tensor(logits), "sigmoid").data  # eq. 7 literally: Σ σ(k)·x
    np.testing.assert_allclose(ctx, flat[:, :, :1] * (1 / (1 + np.exp(-logits))).sum(-1, keepdims=True), rtol=1e-12)
    sa = staa.StepAttention(8, reduction=4, alpha=2.0)
    g = sa.gate(ms.Tensor(x[0])).data
    assert g.shape == (3, 8, 1, 1) and np.all((g > 0) & (g < 1))
    np.testing.assert_allclose(sa(ms.Tensor(x[0])).data, x[0] * g, rtol=1e-6)


def test_bad_input_is_rejected():
    m = staa.STAALIF(8, 5)
    with pytest.raises(ValueError, match="x must be"):
        m(ms.Tensor(_x(T=4)))
    with pytest.raises(ValueError, match="x must be"):
        m(ms.Tensor(_x(C=6)))
    with pytest.raises(ValueError, match="pooling"):
        staa.GCBlock(8, pooling="max")
    with pytest.raises(ValueError, match="tsrd"):
        staa.STAALIF(8, 5, tsrd=1.5)
    with pytest.raises(ValueError, match="dataset"):
        staa.claim_run_lowT(0, True, dataset="cifar")


def test_factory_in_models_and_flat_input():
    T = 2
    model = models.ConvSNN(10, 2, 16, 4, staa.staa_neuron(T))
    layers = [m for m in model.modules() if isinstance(m, staa.STAALIF)]
    assert [m.channels for m in layers] == [4, 8]
    x = np.random.default_rng(0).random((T, 3, 2, 16, 16)).astype(np.float32) * 3
    out = model(ms.Tensor(x))
    assert out.shape == (T, 3, 10)
    F.sum(out * out).backward()
    for m in layers:
        for name in ("M", "N", "pos"):
            assert np.abs(getattr(m, name).grad).max() > 0, name
    model.eval()
    model(ms.Tensor(x))
    assert 0 <= train.spike_rate(model) <= 1 and all(m.spike_rate is not None for m in layers)
    flat = staa.STAALIF(6, 3, tsrd=0.0)             # [T, N, F] (an FC layer) runs as [T, N, F, 1, 1]
    _force_identity(flat)
    v = _x(T=3, N=4, C=6, H=1, W=1)[..., 0, 0]
    assert np.array_equal(flat(ms.Tensor(v)).data, neurons.LIF(tau=2.0, surrogate=RECT)(ms.Tensor(v)).data)


def _np_gc(g, z):
    """NumPy GC block (eq. 7–10) on z [N, C, H, W]."""
    n, c = z.shape[:2]
    flat = z.reshape(n, c, -1)
    logits = np.einsum("c,ncp->np", g.key.weight.data[0], flat) + g.key.bias.data[0]
    a = 1 / (1 + np.exp(-logits)) if g.pooling == "sigmoid" else np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    q = np.einsum("ncp,np->nc", flat, a) @ g.query.weight.data.T + g.query.bias.data            # eq. 7, 8
    ln = (q - q.mean(-1, keepdims=True)) / np.sqrt(q.var(-1, keepdims=True) + 1e-5) * g.ln_weight.data + g.ln_bias.data
    return z + (np.maximum(ln, 0) @ g.value.weight.data.T + g.value.bias.data)[:, :, None, None]   # eq. 9, 10


def _np_sa(sa, u):
    pooled = sum(u.mean((2, 3)) if p == "avg" else u.max((2, 3)) for p in sa.pool.split("+"))
    z = np.maximum(sa.alpha * pooled @ sa.conv1.weight.data.T + sa.conv1.bias.data, 0)
    return u / (1 + np.exp(-(z @ sa.conv2.weight.data.T + sa.conv2.bias.data)))[:, :, None, None]   # eq. 12


def _np_staa(m, x):
    """NumPy reference of STAALIF's forward (eval, eq. 6–14) -> membranes V [T, N, C, H, W]."""
    pos = {k: getattr(m, k).data[:, None, :, None, None] for k in ("pos", "pos_h") if hasattr(m, k)}
    zero = np.zeros((m.T, 1, m.channels, 1, 1))
    p_in = pos["pos"] if m.pe in ("input", "both") else zero
    p_h = pos.get("pos_h", pos.get("pos")) if m.pe in ("state", "both") else zero
    p_u = pos["pos"] if m.pe == "aggregate" else zero
    h, vs = np.zeros(x.shape[1:]), []
    for t in range(m.T):
        u = m.M.data * _np_gc(m.gc2, h + p_h[t]) + m.N.data * _np_gc(m.gc1, x[t] + p_in[t]) + p_u[t]   # eq. 11, 13
        v = _np_sa(m.sa, u)
        h = np.where(v >= m.v_threshold, 0.0, v)
        vs.append(v)
    return np.stack(vs)


@pytest.mark.parametrize("pe,pooling,sa_pool", [("input", "sigmoid", "avg"), ("state", "softmax", "max"),
                                                ("both", "sigmoid", "avg+max"), ("aggregate", "sigmoid", "avg")])
def test_forward_values_with_position_encoding_match_numpy(pe, pooling, sa_pool):
    """Pos ≠ 0, trained-looking GC and SA: the whole forward equals an independent NumPy reference."""
    m = staa.STAALIF(8, 4, tsrd=0.0, pe=pe, pooling=pooling, sa_pool=sa_pool, reduction=2, sa_reduction=4,
                     rng=np.random.default_rng(0)).eval()
    _randomise(m, seed=11, scale=0.4)
    for p in m.parameters():
        p.data = p.data.astype(np.float64)
    m.pos.data = np.random.default_rng(12).normal(0, 0.8, m.pos.shape)
    x = _x(T=4, N=2, C=8, H=3, W=3, dtype=np.float64, seed=13)
    s, v, _ = _run_recorded(m, x)
    ref = _np_staa(m, x)
    np.testing.assert_allclose(v, ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(s, ref >= 1.0)
    assert 0.05 < s.mean() < 0.95
    m.pos.data = np.zeros_like(m.pos.data)                 # the encoding changes the result
    assert not np.allclose(_run_recorded(m, x)[1], v)


def test_step_attention_hand_example():
    u = np.zeros((1, 2, 2, 2))
    u[0, 0] = [[1, 2], [3, 6]]                              # channel 0: mean 3, max 6
    u[0, 1] = [[0, 0], [4, 0]]                              # channel 1: mean 1, max 4
    sig = lambda z: 1 / (1 + np.exp(-z))

    def gates(**kw):
        sa = staa.StepAttention(2, reduction=2, **kw)
        sa.conv1.weight.data[...], sa.conv1.bias.data[...] = [[0.5, -1.0]], 0.25
        sa.conv2.weight.data[...], sa.conv2.bias.data[...] = [[2.0], [-1.0]], [0.0, 1.0]
        out = sa(ms.Tensor(u)).data
        np.testing.assert_allclose(out, u * sa.gate(ms.Tensor(u)).data)
        return sa.gate(ms.Tensor(u)).data.ravel()
    # α·AvgPool, α = 2: z1 = ReLU(0.5·6 − 1·2 + 0.25) = 1.25 -> gates σ(2.5), σ(−1.25 + 1)
    np.testing.assert_allclose(gates(), sig(np.array([2.5, -0.25])))
    np.testing.assert_allclose(gates(alpha=1.0), sig(np.array([1.5, 0.25])))                 # +1 AvgPool
    np.testing.assert_allclose(gates(alpha=1.0, pool="max"), sig(np.array([0.0, 1.0])))      # ReLU(3 − 4 + .25) = 0
    np.testing.assert_allclose(gates(alpha=1.0, pool="avg+max"), sig(np.array([0.0, 1.0])))  # ReLU(4.5 − 5 + .25)
    with pytest.raises(ValueError, match="pool"):
        staa.StepAttention(2, pool="min")


def test_fixed_position_encoding_and_placements():
    pe = staa.fixed_position_encoding(3, 4)
    np.testing.assert_allclose(pe[0], [0, 1, 0, 1])                          # sin(0), cos(0)
    np.testing.assert_allclose(pe[2], [np.sin(2), np.cos(2), np.sin(2 / 100), np.cos(2 / 100)], rtol=1e-6)
    fixed = staa.STAALIF(4, 3, pe_learn=False)
    assert "pos" not in dict(fixed.named_parameters()) and "pos" in fixed.state_dict()
    np.testing.assert_array_equal(fixed.pos, pe)
    names = lambda **kw: {n for n, _ in staa.STAALIF(4, 3, **kw).named_parameters() if n.startswith("pos")}
    assert names() == {"pos"} and names(pe="both") == {"pos", "pos_h"} and names(pe=None) == set()
    assert staa.GCBlock(4).pooling == "sigmoid" and staa.STAALIF(4, 3).gc1.pooling == "sigmoid"   # eq. 7
    sa = staa.STAALIF(4, 3).sa
    assert sa.pool == "avg" and sa.alpha == 2.0                                  # eq. 12: α·AvgPool, α = 2
    with pytest.raises(ValueError, match="pe in"):
        staa.STAALIF(4, 3, pe="output")


def test_low_T_quick_run_claims_and_ablations():
    from minisnn import claims
    rep = staa.claim_run_lowT(0, True, Ts=(2, 4))
    assert set(rep) == {f"{n}_T{T}" for n in staa.VARIANTS for T in (2, 4)}
    assert all(0 <= r["accuracy"] <= 1 and 0 <= r["spike_rate"] <= 1 for r in rep.values())
    assert claims.collect("staa")[1] == staa.CLAIMS
    arms = {f"{n}_T{T}" for n in staa.VARIANTS for T in (2, 4, 8)}
    assert all(c.baseline in arms and c.method in arms and c.metric == "accuracy" for c in staa.CLAIMS)
    assert {c.baseline for c in staa.CLAIMS} == {"lif_T2", "lif_T4", "lif_T8"}
    layers = lambda name: [m for m in models.ConvSNN(10, 2, 8, 4, staa.ABLATIONS[name](4, np.random.default_rng(0)))
                           .modules() if isinstance(m, staa.STAALIF)]
    assert layers("pe_fixed")[0].pe == "input" and "pos" not in dict(layers("pe_fixed")[0].named_parameters())
    assert layers("sa_max")[1].sa.pool == "max" and layers("sa_max")[1].sa.alpha == 1.0
    assert layers("gc_softmax")[0].gc2.pooling == "softmax" and layers("staa")[0].gc2.pooling == "sigmoid"
    assert layers("pe_both")[0].pe == "both" and layers("pe_none")[0].pe is None
    biases = [staa.VARIANTS[n](2, np.random.default_rng(0))(8).sa.conv2.bias.data for n in ("staa", "staa_paper_init")]
    assert (biases[0] == 4.0).all() and np.abs(biases[1]).max() < 1.0          # sa_bias=4 vs the default init


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), T=st.integers(1, 6))
def test_reduces_to_the_adaptive_lif(seed, T):
    """Same reductions with learnt per-channel M, N: V = M ⊙ H + N ⊙ I (eq. 6) == LIF(decay=M, gain=N)."""
    rng = np.random.default_rng(seed)
    x = _x(T=T, seed=seed)
    m = staa.STAALIF(8, T, tsrd=0.5, rng=rng)
    _force_identity(m)
    m.M.data = rng.uniform(0.1, 1.0, (8, 1, 1)).astype(np.float32)
    m.N.data = rng.uniform(0.2, 1.5, (8, 1, 1)).astype(np.float32)
    m.eval()
    ref = neurons.LIF(decay=m.M.data, gain=m.N.data, surrogate=RECT)
    for a, b in zip(_run_recorded(m, x), _run_recorded(ref, x)):
        assert np.array_equal(a, b)
