"""Razor SNN: the gate's equations (6-11), pruning rules, gradients, efficiency accounting, LIAF."""
import time

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
    feat = x.mean(axis=tuple(range(3, x.ndim))) if x.ndim > 3 else x              # an FC input: F[t] = X[t]
    z = feat.mean(0) @ gate.weighting.weight.data.T + gate.weighting.bias.data
    w = np.exp(z - z.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    e_bar = (w[:, :, None] * gate.embeddings.data).mean(1)                 # [N, C]
    sim = np.einsum("tnc,nc->tn", feat, e_bar) / np.sqrt(x.shape[2])
    return 1 / (1 + np.exp(-sim))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.floats(0.01, 5.0), T=st.integers(1, 5), N=st.integers(1, 3),
       fc=st.booleans())
def test_mask_matches_eq7_and_lies_in_open_unit_interval(seed, scale, T, N, fc):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, scale, (T, N, 3) if fc else (T, N, 3, 4, 5))
    gate = _gate(T=T, rng=seed)
    y = gate(ms.Tensor(x)).data
    M, Mx = _hand_mask(gate, x), _hand_mask(gate, x)[(...,) + (None,) * (x.ndim - 2)]
    assert gate.mask.shape == gate.scores.shape == (T, N)
    assert np.all((gate.mask > 0) & (gate.mask < 1))
    np.testing.assert_allclose(gate.mask, M, rtol=1e-10)
    np.testing.assert_allclose(y, Mx * x, rtol=1e-10)                                   # eq. 8, soft path
    np.testing.assert_allclose(gate.scores, (Mx * x).max(axis=tuple(range(2, x.ndim))))   # eq. 9
    assert gate.pruned_fraction is None and gate.frame_mask is None                    # training pass


def test_threshold_below_all_scores_keeps_every_frame_unscaled_by_default():
    x = np.random.default_rng(1).normal(size=(4, 2, 3, 5, 5))
    gate = _gate()
    soft = gate(ms.Tensor(x)).data
    np.testing.assert_allclose(soft, _hand_mask(gate, x)[:, :, None, None, None] * x, rtol=1e-10)   # training: M·X
    gate.eval().set_pruning(threshold=float(gate.scores.min()) - 1e-3)
    np.testing.assert_array_equal(gate(ms.Tensor(x)).data, x)        # eq. 11 as the prose reads: X' = m·X
    assert gate.pruned_fraction == 0.0 and np.all(gate.frame_mask == 1) and gate.hard_input == "raw"
    gate.set_pruning(threshold=float(gate.scores.min()) - 1e-3, hard_input="refined")
    np.testing.assert_array_equal(gate(ms.Tensor(x)).data, soft)      # the option X' = m·X̃: the soft path
    gate.set_pruning()
    np.testing.assert_array_equal(gate(ms.Tensor(x)).data, soft)      # no rule: eval is the soft path


def _razor(T=4, size=16, seed=2, **kw):
    return razor.razor_tasnn(10, 2, size, T, width=0.125, rng=np.random.default_rng(seed),
                             gate_rng=np.random.default_rng(seed + 1), **kw)


def test_razor_tasnn_gates_every_spiking_layer_but_the_encoder_and_prunes_all_above_every_score():
    T, rng = 4, np.random.default_rng(2)
    model = _razor(T, threshold=1e6).eval()
    kinds = [type(m).__name__ for m in model]
    assert kinds[:5] == ["Conv2d", "BatchNorm2d", "AvgPool2d", "LIAF", "Conv2d"]          # encoder block: no gate
    assert [kinds[i + 1] for i, k in enumerate(kinds) if k == "RazorGate"] == ["LIAF"] * 3
    assert kinds[-4:] == ["Linear", "RazorGate", "LIAF", "Linear"]                         # the hidden FC layer too
    with ms.no_grad(), recording() as rec:
        out = model(ms.Tensor(rng.uniform(0, 3, (T, 2, 2, 16, 16)))).data
    outs = {id(m): np.asarray(o.data) for m, _, o, _ in rec}
    for g in razor.gates(model):
        assert g.pruned_fraction == 1.0 and np.all(outs[id(g)] == 0)
    assert [done for g, done, n, per in model.macs] == [T * 2, T * 2, 0, 0, 0]  # the layers after gates: nothing
    np.testing.assert_allclose(out, np.broadcast_to(model[-1].bias.data, out.shape))   # empty frames: the bias


def test_skipping_pruned_frames_equals_the_dense_computation_with_the_dropped_outputs():
    T, rng = 6, np.random.default_rng(3)
    model = _razor(T, keep_ratio=0.5).eval()
    x = ms.Tensor(rng.uniform(0, 3, (T, 3, 2, 16, 16)))
    with ms.no_grad():
        fast = model(x).data
        h, gate = x, None                                  # by hand: every layer on every frame, then drop the frames
        for layer in model:
            if isinstance(layer, (Conv2d, Linear)) and gate is not None:
                h, gate = h * gate.frame_mask.reshape(gate.frame_mask.shape + (1,) * (h.ndim - 2)), None
            h = layer(h)
            gate = layer if isinstance(layer, RazorGate) else gate
    np.testing.assert_allclose(fast, h.data, rtol=1e-5, atol=1e-6)
    kept = [int(g.frame_mask.sum()) for g in razor.gates(model)]
    assert kept == [9, 9, 9] and [d for _, d, _, _ in model.macs] == [18, 18, 9, 9, 9]   # computed (t, n) frames
    model.mode = "leaky"                                   # eq. 11 on the input only: LIAF leaks on pruned frames
    with ms.no_grad(), recording() as rec:
        leaky = model(x).data
    np.testing.assert_allclose(leaky, Sequential.forward(model, x).data, rtol=1e-6)
    assert [d for _, d, _, _ in model.macs] == [18] * 5 and np.abs(leaky - fast).max() > 1e-4
    liaf_out = [np.asarray(o.data) for m, _, o, _ in rec if isinstance(m, neurons.LIAF)][1]   # after the first gate
    pruned = razor.gates(model)[0].frame_mask == 0
    assert np.mean(liaf_out[pruned] > 0) > 0.01            # not idle there: ReLU(0.3·h) ≠ 0, so skipping needs the drop


def test_on_kept_frames_computes_only_the_kept_rows():
    rows = []

    class Spy(Linear):
        def forward(self, x):
            rows.append(int(np.prod(x.shape[:-1])))
            return super().forward(x)
    layer, keep = Spy(3, 2, rng=np.random.default_rng(0)), np.array([[1, 0], [0, 0], [1, 1]], bool)
    x = np.random.default_rng(1).normal(size=(3, 2, 3))
    out = razor.on_kept_frames(layer, x, keep).data
    assert rows == [3]                                      # the 3 kept frames, nothing else
    np.testing.assert_allclose(out, layer(ms.Tensor(x * keep[..., None])).data, rtol=1e-12)


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
    model = razor.RazorNet(conv1, gate, razor.liaf(), conv2, Flatten(), Linear(27, 4, rng=rng))
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
    assert r["layers"] == [{"pruned_fraction": 3 / 8, "pruned_frames": 3.0, "macs_per_frame": 486,
                            "saved_macs": 1458.0}]
    assert r["total_macs"] == 8 * sum(per_frame.values()) == 8352
    assert r["saved_fraction"] == pytest.approx(1458 / 8352)
    gate.set_pruning(keep_ratio=0.5)                     # top 2 per sample; tie 1.0 vs 1.0 -> the earlier frame
    r = razor.saved_operations(model, x)
    np.testing.assert_array_equal(gate.frame_mask, [[0, 1], [1, 0], [0, 1], [1, 0]])
    assert r["saved_macs"] == 4 * 486 and gate.pruned_fraction == 0.5
    ev = razor.evaluate_pruning(model, [(x[:, :1], [0]), (x[:, 1:], [1])])    # two batches of one sample
    assert ev["pruned_fraction"] == [0.5] and ev["saved_macs"] == 4 * 486 and ev["total_macs"] == 8352
    assert ev["accuracy"] == np.mean(r["output"].mean(0).argmax(-1) == [0, 1])   # per-sample masks: batch-free


def test_keep_ratio_extremes_and_eval_without_rule():
    model, gate, x = _toy()
    for ratio, expected in ((1.0, 0.0), (0.0, 1.0), (0.6, 0.5), (0.65, 0.25)):     # ⌊0.6·4 + ½⌋ = 2, ⌊3.1⌋ = 3 kept
        gate.set_pruning(keep_ratio=ratio)
        assert razor.saved_operations(model, x)["layers"][0]["pruned_fraction"] == expected
    gate.set_pruning()
    assert razor.saved_operations(model, x)["saved_macs"] == 0 and gate.pruned_fraction == 0.0


def test_paired_seconds_takes_medians_of_interleaved_runs():
    order = []
    r = razor.paired_seconds({"a": lambda: order.append("a"), "b": lambda: (order.append("b"), time.sleep(0.01))}, 3)
    assert order == ["a", "b"] * 3 and r["b"].shape == (3,) and np.all(r["b"] >= 0.01) and np.median(r["a"]) < 0.01


def test_comparison_trains_both_nets_with_the_rate_coding_loss_and_reports_every_arm(monkeypatch):
    seen = []
    monkeypatch.setattr(razor.train, "fit", lambda model, tr, va, epochs, lr, loss_fn, log: seen.append(loss_fn))
    r = razor.run_comparison("motion", quick=True, log=None, repeats=1)
    assert seen == [ms.losses.mse_rate] * 2                                # §4.1: rate coding as the loss
    assert set(r) == {"plain", "razor", "razor_pruned", "razor_refined", "razor_leaky"}
    assert r["plain"]["macs"] == r["razor"]["macs"] == r["razor_leaky"]["macs"] > r["razor_pruned"]["macs"]
    assert r["razor_pruned"]["pruned_fraction"] == 0.25 and 0 < r["razor_pruned"]["saved_fraction"] < 0.25
    assert r["razor_leaky"]["saved_fraction"] == 0 and r["plain"]["time_vs_plain"] == 1.0
    assert all(r[a]["seconds"] > 0 and r[a]["time_vs_plain"] > 0 for a in ("plain", "razor", "razor_pruned"))
    assert r["razor_pruned"]["macs"] == pytest.approx(r["razor"]["macs"] * (1 - r["razor_pruned"]["saved_fraction"]))


def test_razor_tasnn_trains_end_to_end():
    T, rng = 3, np.random.default_rng(6)
    model = _razor(T)
    out = model(ms.Tensor(rng.uniform(0, 2, (T, 2, 2, 16, 16))))
    assert out.shape == (T, 2, 10) and len(razor.gates(model)) == 3
    ms.losses.cross_entropy(out, np.array([0, 3])).backward()
    for g in razor.gates(model):
        assert np.abs(g.embeddings.grad).sum() > 0 and np.abs(g.weighting.weight.grad).sum() > 0
    assert RazorGate.relevance_rule == "identity"


def test_bad_arguments_raise():
    gate = _gate()
    with pytest.raises(ValueError, match="x must be"):
        gate(ms.Tensor(np.zeros((5, 2, 3, 4, 4))))                     # T = 5, gate built for 4
    with pytest.raises(ValueError, match="x must be"):
        gate(ms.Tensor(np.zeros((4, 2, 5, 4, 4))))                     # C = 5, gate built for 3
    with pytest.raises(ValueError, match="x must be"):
        gate(ms.Tensor(np.zeros((4, 3))))
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
