"""ASA-SNN (Yao et al. ICCV 2023, eq. 5-10): masks, attention maps, identity limit, gradients, STE, placement."""
import numpy as np
import pytest
from conftest import check_grad
from hypothesis import given, settings, strategies as st

import minisnn as ms
from minisnn import models, nn, neurons
from minisnn.methods import asa
from minisnn.methods.asa import ASA, asa_gate, asa_output, channel_masks, spatial_attention


def _topk_sets(M, k, axis):
    """Reference top-k by full sorting, one slice at a time (independent of asa.topk_mask)."""
    out = np.zeros_like(M)
    moved, res = np.moveaxis(M, axis, -1), np.moveaxis(out, axis, -1)
    for idx in np.ndindex(moved.shape[:-1]):
        res[idx][np.argsort(-moved[idx], kind="stable")[:k]] = 1
    return out


@settings(max_examples=30, deadline=None)
@given(T=st.integers(1, 7), N=st.integers(1, 3), C=st.integers(1, 9), seed=st.integers(0, 10**6))
def test_masks_are_the_per_sample_xor_of_two_topk_sets(T, N, C, seed):
    M = np.random.default_rng(seed).normal(size=(T, N, C))
    m1 = channel_masks(ms.Tensor(M)).data
    mc, mt = _topk_sets(M, C // 2, 2), _topk_sets(M, T // 2, 0)
    assert (mc.sum(2) == C // 2).all() and (mt.sum(0) == T // 2).all()          # k = ⌊C/2⌋, ⌊T/2⌋
    np.testing.assert_array_equal(m1, np.where((mc + mt) / 2 == 0.5, 1, 0))     # the paper's g2 pseudo-code
    m2 = 1 - m1
    assert set(np.unique(m1)) <= {0.0, 1.0} and ((m1 + m2) == 1).all()
    if N > 1:  # per sample: another sample's importance does not move sample 0's mask
        M2 = M.copy()
        M2[:, 1:] = np.random.default_rng(seed + 1).normal(size=M2[:, 1:].shape) * 100
        np.testing.assert_array_equal(channel_masks(ms.Tensor(M2)).data[:, 0], m1[:, 0])


def test_mask_hand_example():
    # T = 2, one sample, C = 4: top-2 channels per step, top-1 step per channel
    M = np.array([[[4.0, 3.0, 2.0, 1.0]], [[1.0, 5.0, 6.0, 0.0]]])
    # mask_c: t0 -> {0, 1}, t1 -> {1, 2};  mask_t: c0 -> t0, c1 -> t1, c2 -> t1, c3 -> t0
    expected = np.array([[[0, 1, 0, 1]], [[0, 0, 0, 0]]], float)
    np.testing.assert_array_equal(channel_masks(ms.Tensor(M)).data, expected)


def test_attention_maps_lie_in_open_unit_interval_and_shapes():
    rng = np.random.default_rng(0)
    z = ms.Tensor(rng.normal(size=(4, 3, 6, 5, 7)))
    a = spatial_attention(z, ms.Tensor(rng.normal(size=(1, 2, 3, 3)) * 0.3)).data
    assert a.shape == (3, 1, 5, 7) and (a > 0).all() and (a < 1).all()
    m = ASA(4, 6, rng=rng)
    with nn.recording():
        y = m(z)
    assert y.shape == z.shape and y.dtype == np.float64
    assert m.extras["M1"].shape == (4, 3, 6) and ((m.extras["M"] > 0) & (m.extras["M"] < 1)).all()
    assert m(ms.Tensor(z.data.astype(np.float32))).dtype == np.float32


def test_spatial_attention_hand_value():
    z = np.zeros((2, 1, 2, 1, 1))
    z[0, 0, 0], z[1, 0, 1] = 3.0, 1.0                      # mean over T, C = 1.0, max = 3.0
    w = np.zeros((1, 2, 3, 3))
    w[0, 0, 1, 1], w[0, 1, 1, 1] = 0.5, -0.25              # centre taps only (1×1 map, padding 1)
    a = spatial_attention(ms.Tensor(z), ms.Tensor(w)).data  # σ(0.5·1 − 0.25·3): the plain mean, no divisor
    assert a.item() == pytest.approx(1 / (1 + np.exp(0.25)))
    w7 = np.zeros((1, 2, 7, 7))
    w7[0, 1, 3, 3] = 1.0                                   # a 7×7 kernel is centred too (padding 3)
    assert spatial_attention(ms.Tensor(z), ms.Tensor(w7)).data.item() == pytest.approx(1 / (1 + np.exp(-3.0)))


@pytest.mark.parametrize("mode", ["asa1", "asa2"])
def test_identity_when_both_attention_maps_are_one(mode, monkeypatch):
    ones = lambda z, w, frac=0.5: ms.Tensor(np.ones((z.shape[1], 1) + z.shape[3:], z.dtype))
    monkeypatch.setattr(asa, "spatial_attention", ones)
    x = np.random.default_rng(1).normal(size=(6, 2, 5, 4, 3)).astype(np.float32)
    y = ASA(6, 5, mode)(ms.Tensor(x))
    assert y.shape == x.shape and y.dtype == np.float32
    np.testing.assert_array_equal(y.data, x)


def test_gradients_with_masks_fixed():
    rng = np.random.default_rng(2)
    x, w1, w2 = rng.normal(size=(3, 2, 4, 3, 4)), rng.normal(size=(1, 2, 3, 3)), rng.normal(size=(1, 2, 3, 3))
    m1 = channel_masks(ms.Tensor(rng.normal(size=(3, 2, 4)))).data
    check_grad(lambda x, w1, w2: asa_output(x, ms.Tensor(m1), w1, w2), x, w1, w2, rtol=1e-5, atol=1e-7)
    # the mask as a continuous input: the path the straight-through estimator feeds (x > 0: no max ties at 0)
    check_grad(lambda m: asa_output(ms.Tensor(np.abs(x) + 0.1), m, ms.Tensor(w1), ms.Tensor(w2)), m1, atol=1e-7)
    # the whole module (hard masks are locally constant, so finite differences see the same function)
    m = ASA(3, 4, "asa1", ste=False, rng=rng)
    check_grad(lambda x: m(x), x, atol=1e-7)


def _soft_xor(M, T, C):
    """NumPy soft XOR with θ, τ frozen at M (what the STE differentiates)."""
    def soft(axis, k):
        srt = -np.sort(-M, axis=axis)
        theta = (np.take(srt, [k - 1], axis) + np.take(srt, [k], axis)) / 2
        tau = M.std(axis=axis, keepdims=True) + 1e-6
        return lambda m: 1 / (1 + np.exp(-(m - theta) / tau))
    sc, st = soft(2, C // 2), soft(0, T // 2)
    return lambda m: sc(m) + st(m) - 2 * sc(m) * st(m)


def test_straight_through_gradient_is_the_soft_xor_gradient():
    T, N, C = 4, 2, 6
    M = np.random.default_rng(3).normal(size=(T, N, C))
    w = np.random.default_rng(4).normal(size=(T, N, C))
    t = ms.Tensor(M.copy(), requires_grad=True)
    (channel_masks(t) * w).sum().backward()
    f, eps = _soft_xor(M, T, C), 1e-6
    num = np.zeros_like(M)
    for i in np.ndindex(M.shape):
        d = np.zeros_like(M)
        d[i] = eps
        num[i] = ((f(M + d) - f(M - d)) * w).sum() / (2 * eps)
    np.testing.assert_allclose(t.grad, num, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("mode,reduction", [("asa1", 1), ("asa1", 2), ("asa2", 1)])
def test_a_b_w_are_trained_only_with_the_straight_through_estimator(mode, reduction):
    x = ms.Tensor(np.random.default_rng(5).normal(size=(4, 2, 6, 5, 5)))
    for ste in (False, True):
        m = ASA(4, 6, mode, reduction, ste=ste)
        (m(x) ** 2).sum().backward()
        learn = [m.a, m.b] + ([m.w1] + ([m.w2] if reduction > 1 else []) if mode == "asa1" else [])
        for p in learn:
            assert (p.grad is None) if not ste else (np.isfinite(p.grad).all() and np.abs(p.grad).sum() > 0)
        assert np.abs(m.sa1.grad).sum() > 0 and np.abs(m.sa2.grad).sum() > 0


def test_importance_eq8_and_parameter_counts():
    x = np.random.default_rng(6).normal(size=(4, 2, 4, 5, 5))
    m = ASA(4, 4, "asa2")
    avg, mx = x.mean((3, 4)), x.max((3, 4))
    np.testing.assert_allclose(m.importance(ms.Tensor(x)).data, 0.5 * (avg + mx) + 0.5 * avg + 0.5 * mx)
    m1 = ASA(4, 4, "asa1")                                  # eq. 9: σ(W2 ReLU(W1 M')), W1 [T/2, T], W2 [T, T/2]
    assert m1.w1.shape == (2, 4) and m1.w2.shape == (4, 2)
    hidden = np.maximum(np.einsum("ht,tnc->hnc", m1.w1.data, avg + mx), 0)
    assert 0 < (hidden > 0).mean() < 1                      # the ReLU is active and matters
    np.testing.assert_allclose(m1.importance(ms.Tensor(x)).data,
                               1 / (1 + np.exp(-np.einsum("sh,hnc->snc", m1.w2.data, hidden))), rtol=1e-6)
    n = lambda mod: sum(p.size for p in mod.parameters())
    # Table 3 (T = 60, three layers): ASA-1 adds 10,914 parameters, ASA-2 adds 114
    assert 3 * n(ASA(60, 64, "asa1")) == 10914 and 3 * n(ASA(60, 64, "asa2")) == 114
    assert n(ASA(8, 4, "asa1", reduction=4)) == 2 * 8 * 2 + 2 + 36


def test_macs_hand_count():
    # two 3×3 convs 2→1 on 5×5 (2·18·25) + T×T per channel (3·16) + one gating multiply per element (4·3·25)
    assert ASA(4, 3, "asa1").macs((4, 7, 3, 5, 5)) == 900 + 48 + 300
    assert ASA(4, 3, "asa2").macs((4, 7, 3, 5, 5)) == 900 + 300


def test_bad_arguments():
    with pytest.raises(ValueError, match="mode"):
        ASA(4, 3, "asa3")
    with pytest.raises(ValueError, match="x must be"):
        ASA(4, 3)(ms.Tensor(np.zeros((4, 1, 5, 2, 2))))
    with pytest.raises(ValueError, match="x must be"):
        ASA(4, 3)(ms.Tensor(np.zeros((5, 1, 3, 2, 2))))
    with pytest.raises(ValueError, match="T, channels"):
        ASA(0, 3)
    with pytest.raises(ValueError, match="dataset"):
        asa.claim_run_table3(0, True, None, dataset="nope")


def test_gate_placement_in_tasnn():
    net = models.TASNN(10, 2, 34, width=0.125, gate=asa_gate(4))
    kinds = [type(m).__name__ for m in net]
    gates = [i for i, k in enumerate(kinds) if k == "ASA"]
    assert len(gates) == 3                                                    # every conv block, not FC
    for i in gates:
        assert kinds[i - 1] == "AvgPool2d" and kinds[i + 1] == "LIF" and kinds[i - 3] == "Conv2d"
    assert [net[i].channels for i in gates] == [8, 16, 16]
    out = net(ms.Tensor(np.random.default_rng(0).random((4, 2, 2, 34, 34), dtype=np.float32)))
    assert out.shape == (4, 2, 10)
    assert isinstance(net[gates[0] + 1], neurons.LIF)


def test_table3_quick_run_and_claims():
    from minisnn import analysis, claims
    logs = []
    rep = asa.claim_run_table3(0, True, logs.append)
    assert list(rep) == list(asa.ARMS) and any("kept epoch" in line for line in logs)
    for r in rep.values():
        assert 0 <= r["accuracy"] <= 1 and 0 <= r["nasfr"] <= 1 and r["qe"] > 0 and r["energy_pj"] > 0
        assert 0 <= r["ptd_nonneg"] <= 1 and np.isfinite(r["ptd"]) and r["mpd_var"] > 0
        assert r["energy_pj"] == pytest.approx(4.6 * r["mac"] + 0.9 * r["ac"])
    added = {k: rep[k]["params"] - rep["vanilla"]["params"] for k in asa.ARMS}
    # T = 4, channels 8/16/16: eq. 9 (2·4·2) + a, b + two 3×3 convs; SA one 7×7 conv; TCSA + TA (4→1→4), CA (C→C/4→C)
    assert added == {"vanilla": 0, "asa1": 3 * (16 + 2 + 36), "asa2": 3 * 38, "sa": 3 * 98,
                     "tcsa": 3 * 98 + 3 * 8 + 2 * 8 * 2 + 2 * 2 * 16 * 4}
    assert rep["tcsa"]["mac"] > rep["sa"]["mac"] > rep["vanilla"]["mac"] and rep["asa1"]["mac"] > rep["asa2"]["mac"]
    d = analysis.delta_energy(rep["vanilla"], rep["asa1"])["delta_energy_pj"]          # eq. 11 = E_ASA − E_vanilla
    assert d == pytest.approx(rep["asa1"]["energy_pj"] - rep["vanilla"]["energy_pj"])
    for c in asa.CLAIMS:                                   # every claim names an arm and a metric the run returns
        assert c.experiment in asa.EXPERIMENTS and c.metric in rep[c.method] and c.baseline in rep
        assert c.margin in (0.0, 0.01) and (c.margin == 0 or c.metric == "accuracy")
    assert {c.baseline for c in asa.CLAIMS} == {"vanilla", "sa", "tcsa"}
    assert claims.collect("asa")[1] == asa.CLAIMS


def _paper_layers(make):
    """Table 3's three-layer SNN: T = 60, channels 64/128/128 on 32², 16², 8² -> [(module, input shape)]."""
    return [(make(c), (60, 1, c, s, s)) for c, s in ((64, 32), (128, 16), (128, 8))]


def test_table3_parameter_counts_and_delta_macs():
    n = lambda mod: sum(p.size for p in mod.parameters())
    kinds = {"sa": lambda c: asa.TCSA(60, c, False, False), "tcsa": lambda c: asa.TCSA(60, c),
             "asa1": lambda c: ASA(60, c, "asa1"), "asa2": lambda c: ASA(60, c, "asa2")}
    layers = {k: _paper_layers(f) for k, f in kinds.items()}
    params = {k: sum(n(m) for m, _ in v) for k, v in layers.items()}
    assert params == {"sa": 294, "tcsa": 24126, "asa1": 10914, "asa2": 114}       # Table 3, exactly
    macs = {k: sum(m.macs(shp) for m, shp in v) for k, v in layers.items()}        # ours: per sample
    assert macs == {"sa": 6521472, "tcsa": 19348656, "asa1": 7590144, "asa2": 6438144}
    # the paper's SA row: the 7×7 conv at each of the T steps plus one gate multiply per element
    per_step = lambda k, gates: sum(shp[0] * (m.conv.size * shp[3] ** 2 + gates * np.prod(shp[2:]))
                                    for m, shp in layers[k])
    assert round(per_step("sa", 1) / 1e5) == 143                                  # 14.3 M
    tcsa_mlp = sum(2 * (m.t1.size + m.t2.size + m.c1.size + m.c2.size) for m, _ in layers["tcsa"])
    assert round((per_step("tcsa", 3) + tcsa_mlp) / 1e5) == 271                   # paper: 27.3 M
    asa1 = sum(shp[0] * 18 * shp[3] ** 2 + shp[2] * (m.w1.size + m.w2.size) for m, shp in layers["asa1"])
    assert round(asa1 / 1e5) == 26                                               # paper: 2.6 M


def test_asa_forward_gates_exactly_the_hand_masks(monkeypatch):
    """ASA-2 with a, b = 0.5: M = F_avg + F_max. Constant maps per (t, c) make M the hand example's M."""
    M = np.array([[4.0, 3.0, 2.0, 1.0], [1.0, 5.0, 6.0, 0.0]])            # [T = 2, C = 4], one sample
    x = np.repeat(np.repeat((M / 2)[:, None, :, None, None], 3, 3), 2, 4)    # [2, 1, 4, 3, 2], F_avg = F_max = M/2
    x[..., 0, 0] *= 1.0 + 1e-9                                               # (a non-constant map keeps ties away)
    m = ASA(2, 4, "asa2")
    # f_S1 = 1 and f_S2 = 0: the output is X ⊙ M1 exactly
    monkeypatch.setattr(asa, "spatial_attention", lambda z, w: ms.Tensor(np.full((z.shape[1], 1) + z.shape[3:],
                                                                              1.0 if w is m.sa1 else 0.0)))
    y = m(ms.Tensor(x)).data
    m1 = np.array([[0, 1, 0, 1], [0, 0, 0, 0]], float)                      # test_mask_hand_example's M1
    np.testing.assert_array_equal(y, x * m1[:, None, :, None, None])


def _np_tcsa(x, m):
    """NumPy reference of TCSA's forward (independent of minisnn.functional)."""
    sig, mlp = lambda v: 1 / (1 + np.exp(-v)), lambda v, w1, w2: np.maximum(v @ w1.T, 0) @ w2.T
    T, N, C, H, W = x.shape
    if m.temporal:
        g = sig(mlp(x.mean((2, 3, 4)).T, m.t1.data, m.t2.data) + mlp(x.max((2, 3, 4)).T, m.t1.data, m.t2.data))
        x = x * g.T[:, :, None, None, None]
    if m.channel:
        g = sig(mlp(x.mean((0, 3, 4)), m.c1.data, m.c2.data) + mlp(x.max((0, 3, 4)), m.c1.data, m.c2.data))
        x = x * g[None, :, :, None, None]
    k = m.conv.shape[-1]
    feat = np.pad(np.stack([x.mean((0, 2)), x.max((0, 2))], 1), ((0, 0), (0, 0), (k // 2,) * 2, (k // 2,) * 2))
    conv = sum(m.conv.data[0, :, i, j, None, None] * feat[:, :, i:i + H, j:j + W] for i in range(k) for j in range(k))
    return np.maximum(x * sig(conv.sum(1))[None, :, None], 0)


@pytest.mark.parametrize("temporal,channel", [(False, False), (True, False), (False, True), (True, True)])
def test_tcsa_forward_matches_numpy_reference_and_gradients(temporal, channel):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(8, 2, 8, 5, 5))
    m = asa.TCSA(8, 8, temporal, channel, rng=rng)
    y = m(ms.Tensor(x)).data
    np.testing.assert_allclose(y, _np_tcsa(x, m), rtol=1e-5, atol=1e-6)
    assert (y >= 0).all() and (y == 0).mean() > 0.3                       # [51]'s ReLU on the attended current
    names = {n for n, _ in m.named_parameters()}
    assert names == {"conv"} | ({"t1", "t2"} if temporal else set()) | ({"c1", "c2"} if channel else set())
    m64 = asa.TCSA(4, 4, temporal, channel, kernel=3, rng=rng)
    for p in m64.parameters():
        p.data = p.data.astype(np.float64)
    check_grad(lambda x: m64(x), np.abs(rng.normal(size=(4, 2, 4, 3, 3))) + 0.1, atol=1e-7)


def test_tcsa_macs_and_gate_factory():
    m = asa.TCSA(8, 16)                                     # TA 8->2->8, CA 16->4->16, conv 7×7
    assert m.macs((8, 5, 16, 6, 6)) == 98 * 36 + 2 * (16 + 16) + 2 * (64 + 64) + 3 * 8 * 16 * 36
    assert asa.TCSA(8, 16, False, False).macs((8, 5, 16, 6, 6)) == 98 * 36 + 8 * 16 * 36
    kinds = {mode: asa_gate(8, mode)(16, 0) for mode in ("asa1", "asa2", "sa", "tcsa")}
    assert [type(g).__name__ for g in kinds.values()] == ["ASA", "ASA", "TCSA", "TCSA"]
    assert kinds["sa"].conv.shape == (1, 2, 7, 7) and not kinds["sa"].temporal and kinds["tcsa"].channel
    with pytest.raises(ValueError, match="TCSA: x must be"):
        m(ms.Tensor(np.zeros((4, 1, 16, 3, 3))))
