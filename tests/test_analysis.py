"""analysis.py against hand computations: firing rates (Def. 1), spike features (Def. 2-3), MPD (Def. 5),
PTD (Def. 6), quantisation error (Table 4), energy and eq. 11."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minisnn import analysis, models, neurons, nn, train
from minisnn.methods.asa import ASA


def test_firing_rates_hand_example():
    s = np.zeros((2, 2, 2, 1, 2))           # [T, N, C, H, W]
    s[0, 0, 0, 0] = [1, 1]                  # t0: sample 0, channel 0 fires at both pixels
    s[0, 1, 0, 0, 0] = 1                    # t0: sample 1, channel 0, pixel 0
    s[1, :, 1, 0, 1] = 1                    # t1: both samples, channel 1, pixel 1
    r = analysis.firing_rates(s)
    np.testing.assert_allclose(r["n_sfr"][0, 0, 0], [1.0, 0.5])
    np.testing.assert_allclose(r["n_sfr"][1, 1, 0], [0.0, 1.0])
    np.testing.assert_allclose(r["c_sfr"], [[0.75, 0.0], [0.0, 0.5]])
    np.testing.assert_allclose(r["t_sfr"], [0.375, 0.25])
    assert r["rate"] == pytest.approx(5 / 16)
    np.testing.assert_allclose(analysis.spike_features(s), r["n_sfr"])


def test_nasfr_weights_layers_by_neuron_count():
    a = np.ones((2, 2, 1))                  # 1 neuron, always firing
    b = np.zeros((2, 2, 3))                 # 3 silent neurons
    b[1, 0, 0] = 1                          # one spike: N-SFR 0.5 at t1
    np.testing.assert_allclose(analysis.t_sfr([a, b]), [1 / 4, (1 + 0.5) / 4])
    assert analysis.nasfr([a, b]) == pytest.approx((0.25 + 0.375) / 2)
    # = Σ rate·n / Σ n, not the plain mean of layer rates (1 and 1/12)
    assert analysis.nasfr([a, b]) == pytest.approx((1 * 1 + (1 / 12) * 3) / 4)
    with pytest.raises(ValueError, match="disagree"):
        analysis.nasfr([a, np.zeros((3, 2, 1))])


@settings(max_examples=20, deadline=None)
@given(T=st.integers(1, 4), N=st.integers(1, 3), seed=st.integers(0, 1000))
def test_nasfr_equals_mean_of_t_sfr_and_weighted_rates(T, N, seed):
    rng = np.random.default_rng(seed)
    layers = [(rng.random((T, N) + shp) < rng.random()).astype(np.uint8) for shp in [(2, 3, 3), (5,), (4, 1, 2)]]
    n = [np.prod(l.shape[2:]) for l in layers]
    weighted = sum(l.mean() * k for l, k in zip(layers, n)) / sum(n)
    assert analysis.nasfr(layers) == pytest.approx(weighted)


def test_feature_similarity_finds_ghost_features():
    f = np.zeros((3, 2, 2))
    f[0, 0, 0], f[1, 0, 0], f[2, 1, 1] = 1.0, 0.3, 0.5   # channels 0 and 1 are ghosts of each other
    sim = analysis.feature_similarity(f)
    np.testing.assert_allclose(sim, [[1, 1, 0], [1, 1, 0], [0, 0, 1]])


def test_membrane_histogram_hand_counts():
    u = np.array([0.1, 0.2, 0.6, 0.9, 1.0, 1.5, -0.2]).reshape(1, 7, 1)   # T = 1, 7 samples, 1 channel
    counts, edges = analysis.membrane_histogram(u, bins=4, range=(0.0, 1.0))
    np.testing.assert_allclose(edges, [[[0, 0.25, 0.5, 0.75, 1.0]]])
    assert counts.tolist() == [[[2, 0, 1, 2]]]                             # 1.0 in the closed last bin
    counts, edges = analysis.membrane_histogram(u, bins=2)                  # own range: -0.2 .. 1.5
    np.testing.assert_allclose(edges, [[[-0.2, 0.65, 1.5]]])
    assert counts.tolist() == [[[4, 3]]]                                  # split at 0.65
    counts, edges = analysis.membrane_histogram(np.full((1, 3, 1), 0.7), bins=5)   # constant: 0.7 ± 0.5
    np.testing.assert_allclose(edges, [[np.linspace(0.2, 1.2, 6)]])
    assert counts.tolist() == [[[0, 0, 3, 0, 0]]]


def test_membrane_histogram_matches_numpy_per_step_and_channel():
    u = np.random.default_rng(0).normal(size=(3, 5, 4, 2, 3)) * np.array([1, 0.01, 3, 0.1])[:, None, None]
    counts, edges = analysis.membrane_histogram(u, bins=7)
    assert counts.shape == (3, 4, 7) and edges.shape == (3, 4, 8) and counts.sum() == u.size
    for t in range(3):
        for c in range(4):
            np.testing.assert_allclose(edges[t, c][[0, -1]], [u[t, :, c].min(), u[t, :, c].max()])
            np.testing.assert_array_equal(counts[t, c], np.histogram(u[t, :, c], bins=edges[t, c])[0])
    shared, e = analysis.membrane_histogram(u, bins=7, range=(-1, 1))
    assert (e == e[0, 0]).all() and shared.sum() == (np.abs(u) <= 1).sum()


def test_ptd_from_hand_histogram():
    edges = np.arange(7.0)                                   # centres 0.5 ... 5.5
    counts = np.array([[0, 5, 1, 7, 6, 0], [2, 2, 2, 2, 0, 0]])
    # row 0: tallest bins 3, 4, 1 -> centres 3.5, 4.5, 1.5; row 1: ties -> lowest potentials 0.5, 1.5, 2.5
    np.testing.assert_allclose(analysis.ptd(counts, edges, v_threshold=1.0), [19 / 6 - 1.0, 1.5 - 1.0])
    with pytest.raises(ValueError, match="edges"):
        analysis.ptd(np.ones((2, 3)), np.arange(3.0), 1.0)


def test_ptd_with_one_and_two_non_empty_bins():
    edges = np.arange(7.0)
    counts = np.array([[0, 0, 0, 9, 0, 0],                   # one bin: its centre 3.5
                       [0, 3, 0, 0, 0, 1],                   # two bins: (1.5 + 5.5) / 2, not the empty bin 0
                       [0, 0, 0, 0, 0, 0]])                  # empty: undefined
    np.testing.assert_allclose(analysis.ptd(counts, edges, 0.5), [3.0, 3.0, np.nan])
    per_row = np.array([np.arange(7.0), np.arange(7.0) * 2, np.arange(7.0)])   # edges per row broadcast
    np.testing.assert_allclose(analysis.ptd(counts, per_row, 0.5), [3.0, 6.5, np.nan])


def test_ptd_of_a_narrow_channel_beside_a_wide_one():
    """A channel concentrated at 0.25 (V_th = 0.3) has PTD ≈ −0.05, however wide the other channels are."""
    rng = np.random.default_rng(0)
    u = np.stack([rng.normal(0.25, 1e-3, (400, 4)), rng.uniform(-3, 3, (400, 4))], axis=1)[None]   # [1, 400, 2, 4]
    counts, edges = analysis.membrane_histogram(u, bins=50)
    d = analysis.ptd(counts, edges, 0.3)
    assert d[0, 0] == pytest.approx(-0.05, abs=2e-3) and (counts[0, 0] > 0).sum() > 10
    np.testing.assert_allclose(analysis.mpd_variance(u)[0], [1e-6, 3.0], rtol=0.15)


def test_mpd_variance_hand_values():
    u = np.zeros((2, 2, 3, 1, 2))                            # [T, N, C, H, W]
    u[0, :, 0] = [[1, 3]], [[1, 3]]                          # t0, c0: values 1, 3, 1, 3 -> variance 1
    u[1, 0, 2] = [[4, 0]]                                    # t1, c2: values 4, 0, 0, 0 -> variance 3
    v = analysis.mpd_variance(u)
    assert v.shape == (2, 3)
    np.testing.assert_allclose(v, [[1, 0, 0], [0, 0, 3]])


def test_quantization_error_hand_values():
    u, s = np.array([[[0.5, 1.2]]]), np.array([[[0.0, 1.0]]])
    assert analysis.quantization_error(u, s) == pytest.approx((0.25 + 0.04) / 2)
    rec = analysis.Recording()
    rec.neurons = {"a": {"u": u, "s": s}, "b": {"u": np.full((1, 1, 3), 2.0), "s": np.ones((1, 1, 3))}}
    assert analysis.quantization_error(rec) == pytest.approx((0.25 + 0.04 + 3 * 1.0) / 5)
    with pytest.raises(ValueError, match="same shape"):
        analysis.quantization_error(u, s[..., :1])


def _two_layer_net():
    """Linear(4→3) → IF(v_th = 1) → Linear(3→2), no biases: only input 0 drives neuron 0 (weight 2)."""
    l1, l2 = nn.Linear(4, 3, bias=False), nn.Linear(3, 2, bias=False)
    l1.weight.data[...] = 0
    l1.weight.data[0, 0] = 2.0
    return nn.Sequential(l1, neurons.IF(v_threshold=1.0), l2)


def test_energy_of_a_tiny_two_layer_net():
    x = np.zeros((2, 2, 4), np.float32)     # T = 2, N = 2
    x[0, 0, 0] = 1.0                        # sample 0, t0: current 2 -> one spike; everything else silent
    x[1, 1, :] = 0.3                        # sample 1, t1: current 0.6 -> no spike (non-zero input, still MACs)
    e = analysis.energy(_two_layer_net(), x)
    # layer 1 (encoder): 4·3 MACs per step × T = 2 -> 24 per sample;  spikes: 1 of 2·2·3 = 12 -> rate 1/12
    # layer 2: dense 3·2·T = 12 per sample, × rate 1/12 -> 1 AC per sample
    assert e["mac"] == pytest.approx(24) and e["ac"] == pytest.approx(1)
    assert e["energy_pj"] == pytest.approx(4.6 * 24 + 0.9 * 1)
    assert e["layers"]["0"]["first"] and e["layers"]["2"]["rate"] == pytest.approx(1 / 12)


def test_energy_counts_conv_macs_and_attention():
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), ASA(3, 2, "asa2"))
    e = analysis.energy(net, np.random.default_rng(0).random((3, 2, 1, 4, 4)))
    conv = 2 * 4 * 4 * 1 * 9 * 3                       # C_out·H·W·C_in·k² per step, T = 3
    att = 2 * 18 * 16 + 3 * 2 * 16                     # ASA.macs: two 3×3 convs + one gate multiply per element
    assert e["mac"] == pytest.approx(conv + att) and e["ac"] == 0
    assert e["layers"]["1"]["kind"] == "attention"


def test_delta_energy_eq11():
    base, other = {"mac": 10.0, "ac": 100.0}, {"mac": 12.0, "ac": 40.0}
    d = analysis.delta_energy(base, other)
    assert d["delta_mac"] == 2 and d["delta_ac"] == 60
    assert d["delta_energy_pj"] == pytest.approx(4.6 * 2 - 0.9 * 60)


def test_record_on_a_model_concatenates_batches_and_agrees_with_train_spike_rate():
    net = models.ConvSNN(10, 2, 12, width=4, rng=np.random.default_rng(0))
    x = (np.random.default_rng(1).random((3, 6, 2, 12, 12)) < 0.3).astype(np.float32) * 3
    net.train()
    rec = analysis.record(net, x)
    assert net.training                                       # mode restored
    assert list(rec.neurons) == ["2", "6"] and rec.n_samples == 6
    assert rec.neurons["2"]["s"].shape == (3, 6, 4, 12, 12) and rec.neurons["6"]["u"].shape == (3, 6, 8, 6, 6)
    assert analysis.nasfr(rec) == pytest.approx(train.spike_rate(net))   # the core's neuron-weighted rate
    rec2 = analysis.record(net, [(x[:, :4], None), (x[:, 4:], None)])
    for k in rec.neurons:
        np.testing.assert_array_equal(rec2.neurons[k]["s"], rec.neurons[k]["s"])
        np.testing.assert_allclose(rec2.neurons[k]["u"], rec.neurons[k]["u"], rtol=1e-6)
    assert analysis.energy(net, rec2)["ac"] == pytest.approx(analysis.energy(net, rec)["ac"])
    assert analysis.record(net, [(x, None)] * 3, max_batches=2).n_samples == 12


def test_bad_inputs():
    with pytest.raises(ValueError, match="s must be"):
        analysis.firing_rates(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="s must be"):
        analysis.spike_features(np.zeros((3, 4, 5)))
    with pytest.raises(ValueError, match="bins"):
        analysis.membrane_histogram(np.zeros((1, 2, 3)), bins=0)
    with pytest.raises(ValueError, match="range"):
        analysis.membrane_histogram(np.zeros((1, 2, 3)), range=(1, 1))
    with pytest.raises(ValueError, match="u must be"):
        analysis.mpd_variance(np.zeros((1, 0, 3)))
    with pytest.raises(ValueError, match="features"):
        analysis.feature_similarity(np.zeros((2, 3)))
