"""Razor SNN: the gate's equations (6-11), pruning rules, gradients, efficiency accounting, LIAF."""
import numpy as np
import pytest
from conftest import numeric_grad
from hypothesis import given, settings, strategies as st

import minisnn as ms
from minisnn import models, neurons
from minisnn.methods import razor
from minisnn.methods.razor import RazorGate
from minisnn.nn import Conv2d, Flatten, Linear, Sequential, recording


def _gate(C=3, T=4, rng=0, **kw):
    return RazorGate(C, T, rng=np.random.default_rng(rng), **kw)


def _hand_mask(gate, x):
    """Eq. 6-7 in plain NumPy: w = softmax(FC(mean_{t,HW} X)), M = σ(⟨mean_HW X[t], mean_k w_k E_k⟩ / √C)."""
    z = x.mean(axis=(0, 3, 4)) @ gate.weighting.weight.data.T + gate.weighting.bias.data
    w = np.exp(z - z.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    e_bar = (w[:, :, None] * gate.embeddings.data).mean(1)                 # [N, C]
    sim = np.einsum("tnc,nc->tn", x.mean(axis=(3, 4)), e_bar) / np.sqrt(x.shape[2])
    return 1 / (1 + np.exp(-sim))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.floats(0.01, 5.0), T=st.integers(1, 5), N=st.integers(1, 3))
def test_mask_matches_eq7_and_lies_in_open_unit_interval(seed, scale, T, N):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, scale, (T, N, 3, 4, 5))
    gate = _gate(T=T, rng=seed)
    y = gate(ms.Tensor(x)).data
    M = _hand_mask(gate, x)
    assert gate.mask.shape == gate.scores.shape == (T, N)
    assert np.all((gate.mask > 0) & (gate.mask < 1))
    np.testing.assert_allclose(gate.mask, M, rtol=1e-10)
    np.testing.assert_allclose(y, M[:, :, None, None, None] * x, rtol=1e-10)          # eq. 8, soft path
    np.testing.assert_allclose(gate.scores, (M[:, :, None, None, None] * x).max(axis=(2, 3, 4)))   # eq. 9
    assert gate.pruned_fraction is None and gate.frame_mask is None                    # training pass


def test_threshold_below_all_scores_prunes_nothing_and_equals_soft_path():
    x = np.random.default_rng(1).normal(size=(4, 2, 3, 5, 5))
    gate = _gate()
    soft = gate(ms.Tensor(x)).data
    gate.eval()
    gate.set_pruning(threshold=float(gate.scores.min()) - 1e-3)
    hard = gate(ms.Tensor(x)).data
    np.testing.assert_array_equal(hard, soft)
    np.testing.assert_allclose(hard, _hand_mask(gate, x)[:, :, None, None, None] * x, rtol=1e-10)  # M applied
    assert gate.pruned_fraction == 0.0 and np.all(gate.frame_mask == 1)
    raw = _gate(hard_input="raw", threshold=float(gate.scores.min()) - 1e-3).eval()
    np.testing.assert_array_equal(raw(ms.Tensor(x)).data, x)              # eq. 11 read literally: X' = m·X


def test_threshold_above_all_scores_zeroes_the_layer_output():
    T, rng = 4, np.random.default_rng(2)
    model = models.TASNN(10, 2, 16, width=0.125, fc=16, neuron=razor.liaf, gate=razor.razor_gate(T, threshold=1e6),
                         rng=rng).eval()
    with ms.no_grad(), recording() as rec:
        model(ms.Tensor(rng.uniform(0, 3, (T, 2, 2, 16, 16))))
    outs = [np.asarray(o.data) for m, _, o, _ in rec]
    mods = [m for m, *_ in rec]
    gate_pos = [i for i, m in enumerate(mods) if isinstance(m, RazorGate)]
    assert len(gate_pos) == 2                                           # not in the first (encoder) block
    for i in gate_pos:
        assert mods[i].pruned_fraction == 1.0
        assert np.all(outs[i] == 0) and isinstance(mods[i + 1], neurons.LIAF) and np.all(outs[i + 1] == 0)
    assert np.any(outs[gate_pos[0] - 3] != 0)                           # the encoder layer still fires


def test_gradients_reach_embeddings_weighting_and_conv_weights():
    rng = np.random.default_rng(3)
    conv, gate = Conv2d(2, 3, 3, padding=1, rng=rng), _gate(C=3, T=3, rng=4)
    params = [conv.weight, conv.bias, gate.embeddings, gate.weighting.weight, gate.weighting.bias]
    for p in params:
        p.data = p.data.astype(np.float64)
    x, w = rng.normal(size=(3, 2, 2, 4, 4)), rng.normal(size=(3, 2, 3, 4, 4))
    (gate(conv(ms.Tensor(x))) * w).sum().backward()
    num = numeric_grad(lambda *_: float((gate(conv(ms.Tensor(x))).data * w).sum()), [p.data for p in params])
    for p, g, name in zip(params, num, ["conv.weight", "conv.bias", "embeddings", "fc.weight", "fc.bias"]):
        assert p.grad is not None and np.abs(p.grad).max() > 1e-6, name
        np.testing.assert_allclose(p.grad, g, rtol=1e-5, atol=1e-8, err_msg=name)


def _toy():
    """conv 1→2 (centre tap 1: X = input in both channels) → gate (E = 0: M = 1/2) → LIAF → conv 2→3 (3×3, no pad)
    → flatten → linear 27→4, on T = 4, N = 2, 5×5 frames whose maxima are set by hand."""
    rng = np.random.default_rng(5)
    conv1, conv2 = Conv2d(1, 2, 3, padding=1, bias=False, rng=rng), Conv2d(2, 3, 3, rng=rng)
    conv1.weight.data[:] = 0
    conv1.weight.data[:, 0, 1, 1] = 1
    gate = RazorGate(2, 4, rng=rng)
    gate.embeddings.data[:] = 0
    model = Sequential(conv1, gate, razor.liaf(), conv2, Flatten(), Linear(27, 4, rng=rng))
    x = np.zeros((4, 2, 1, 5, 5))
    x[:, 0, 0, 2, 2] = [1.0, 3.0, 0.5, 4.0]              # s = M·max = [0.5, 1.5, 0.25, 2.0]
    x[:, 1, 0, 1, 3] = [2.0, 2.0, 5.0, 0.2]              # s = [1.0, 1.0, 2.5, 0.1]
    return model, gate, x


def test_pruned_fraction_and_saved_operations_by_hand():
    model, gate, x = _toy()
    gate.set_pruning(threshold=0.8)                       # m = [0,1,0,1] and [1,1,1,0]: 3 of 8 frames pruned
    r = razor.saved_operations(model, x)
    assert model.training and gate.training               # the eval pass restores the mode
    np.testing.assert_allclose(gate.scores, [[0.5, 1.0], [1.5, 1.0], [0.25, 2.5], [2.0, 0.1]])
    np.testing.assert_array_equal(gate.frame_mask, [[0, 1], [1, 1], [0, 1], [1, 0]])
    assert gate.pruned_fraction == 3 / 8
    per_frame = {"conv1": 2 * 25 * 9, "conv2": 3 * 9 * (2 * 9), "fc": 27 * 4}      # outputs × fan-in
    assert r["layers"] == [{"pruned_fraction": 3 / 8, "macs_per_frame": 486, "pruned_frames": 3.0, "saved_macs": 1458.0}]
    assert r["total_macs"] == 8 * sum(per_frame.values()) == 8352
    assert r["saved_fraction"] == pytest.approx(1458 / 8352)
    gate.set_pruning(keep_ratio=0.5)                     # top 2 per sample; tie 1.0 vs 1.0 -> the earlier frame
    r = razor.saved_operations(model, x)
    np.testing.assert_array_equal(gate.frame_mask, [[0, 1], [1, 0], [0, 1], [1, 0]])
    assert r["saved_macs"] == 4 * 486 and gate.pruned_fraction == 0.5


def test_keep_ratio_extremes_and_eval_without_rule():
    model, gate, x = _toy()
    for ratio, expected in ((1.0, 0.0), (0.0, 1.0), (0.6, 0.5)):     # ⌊0.6·4 + ½⌋ = 2 kept
        gate.set_pruning(keep_ratio=ratio)
        assert razor.saved_operations(model, x)["layers"][0]["pruned_fraction"] == expected
    gate.set_pruning()
    assert razor.saved_operations(model, x)["saved_macs"] == 0 and gate.pruned_fraction == 0.0


def test_razor_tasnn_trains_end_to_end():
    T, rng = 3, np.random.default_rng(6)
    model = models.TASNN(4, 2, 16, width=0.125, fc=8, neuron=razor.liaf, gate=razor.razor_gate(T), rng=rng)
    out = model(ms.Tensor(rng.uniform(0, 2, (T, 2, 2, 16, 16))))
    assert out.shape == (T, 2, 4)
    ms.losses.cross_entropy(out, np.array([0, 3])).backward()
    for g in razor.gates(model):
        assert np.abs(g.embeddings.grad).sum() > 0 and np.abs(g.weighting.weight.grad).sum() > 0
    assert RazorGate.relevance_rule == "identity"


def test_bad_arguments_raise():
    gate = _gate()
    with pytest.raises(ValueError, match="x must be"):
        gate(ms.Tensor(np.zeros((5, 2, 3, 4, 4))))                     # T = 5, gate built for 4
    with pytest.raises(ValueError, match="x must be"):
        gate(ms.Tensor(np.zeros((4, 2, 3, 4))))
    with pytest.raises(ValueError, match="keep_ratio"):
        gate.set_pruning(keep_ratio=1.5)
    with pytest.raises(ValueError, match="not both"):
        _gate(threshold=0.1, keep_ratio=0.5)
    with pytest.raises(ValueError, match="threshold"):
        gate.set_pruning(threshold=float("nan"))
    with pytest.raises(ValueError, match="channels"):
        RazorGate(0, 4)
    with pytest.raises(ValueError, match="hard_input"):
        _gate(hard_input="scaled")
    with pytest.raises(ValueError, match="dataset"):
        razor.run_comparison("cifar")


def test_liaf_outputs_relu_u_and_spike_resets():
    x = ms.Tensor(np.array([0.2, 0.25, 0.0, 0.5, -0.2, 0.1])[:, None], dtype=np.float64)
    liaf = razor.liaf()
    with recording():
        out = liaf(x).data.ravel()
    # u = .2; .06+.25 = .31 (spike → h = 0); 0; .5 (spike); -.2; -.06+.1 = .04   (no reset: t2 would give .093)
    np.testing.assert_allclose(out, [0.2, 0.31, 0.0, 0.5, 0.0, 0.04], atol=1e-12)
    assert liaf.extras["s"].ravel().tolist() == [0, 1, 0, 1, 0, 0]
    np.testing.assert_allclose(liaf.extras["u"].ravel(), [0.2, 0.31, 0.0, 0.5, -0.2, 0.04], atol=1e-12)


@pytest.mark.parametrize("detach", [False, True])
def test_liaf_fused_equals_unrolled(detach):
    rng = np.random.default_rng(7)
    x, w = rng.normal(0.2, 0.4, (7, 3, 5)), rng.normal(size=(7, 3, 5))
    results = []
    for fused in (True, False):
        n = neurons.LIAF(decay=0.3, gain=1.0, v_threshold=0.3, surrogate=neurons.Rectangle(0.5),
                         detach_reset=detach, fused=fused)
        xt = ms.Tensor(x, requires_grad=True)
        out = n(xt)
        (out * w).sum().backward()
        results.append((out.data, xt.grad))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-12)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-10, atol=1e-12)
    assert np.abs(results[0][1]).sum() > 0 and 0 < np.mean(results[0][0] > 0) < 1
