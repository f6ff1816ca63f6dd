"""Hand-computed constants: the numbers a formula is made of (eps, 1/N, 1/T, τ², −1/K, a ReLU, a max subtraction).

Each test evaluates a formula where the constant matters and compares with a value computed here from the
equation; tests that compare two code paths at a default (T = 1, N = 1, τ = 1, v_th = 1) cannot see them.
"""
import numpy as np
import pytest

import minisnn as ms
from minisnn import functional as F, losses, neurons, nn, relevance as rv


def logsumexp(z):
    m = z.max(-1, keepdims=True)
    return m + np.log(np.exp(z - m).sum(-1, keepdims=True))


def log_softmax(z):
    return z - logsumexp(z)


# ----------------------------------------------------------------------------- normalisation and softmax


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_eps_by_hand_and_on_a_silent_channel(training):
    """y = γ(x − μ)/√(σ² + ε) + β. Channel 0: x = ±1 (σ² = 1); channel 1 is silent (σ² = 0: only ε keeps it finite)."""
    x = np.zeros((2, 2, 1, 1))
    x[:, 0, 0, 0] = [1.0, -1.0]
    w, b = np.array([2.0, 1.5]), np.array([0.5, -0.25])
    rm, rv_ = (np.zeros(2), np.array([1.0, 0.0])) if not training else (np.zeros(2), np.ones(2))
    xt, wt, bt = ms.Tensor(x, requires_grad=True), ms.Tensor(w, requires_grad=True), ms.Tensor(b, requires_grad=True)
    y = F.batch_norm(xt, wt, bt, rm, rv_, training, eps=1e-3)
    np.testing.assert_allclose(y.data[:, 0, 0, 0], np.array([2.0, -2.0]) / np.sqrt(1 + 1e-3) + 0.5, rtol=1e-12)
    np.testing.assert_allclose(y.data[:, 1, 0, 0], [-0.25, -0.25], rtol=1e-12)
    (y * np.arange(4.0).reshape(2, 2, 1, 1)).sum().backward()
    for g in (xt.grad, wt.grad, bt.grad):
        assert np.all(np.isfinite(g))
    if not training:   # eval: dx = γ/√(σ² + ε)·g
        np.testing.assert_allclose(xt.grad[:, 1, 0, 0], [1.5 / np.sqrt(1e-3) * 1, 1.5 / np.sqrt(1e-3) * 3], rtol=1e-12)
    bn = nn.BatchNorm2d(2, eps=0.5)
    bn.eval()
    out = bn(ms.Tensor(np.ones((1, 2, 1, 1)))).data     # running stats 0 and 1: x/√(1 + 0.5)
    np.testing.assert_allclose(out, 1 / np.sqrt(1.5), rtol=1e-6)


def test_layer_norm_eps_on_a_constant_row():
    y = F.layer_norm(ms.Tensor(np.array([[2.0, 2.0, 2.0], [1.0, -1.0, 0.0]])), (-1,), eps=0.25)
    np.testing.assert_allclose(y.data[0], 0.0)
    var = 2 / 3
    np.testing.assert_allclose(y.data[1], np.array([1.0, -1.0, 0.0]) / np.sqrt(var + 0.25), rtol=1e-12)


def test_softmax_and_log_softmax_subtract_the_max():
    z = np.array([[1000.0, 1000.0, 0.0], [-1000.0, -1001.0, -1000.0]])
    p = F.softmax(ms.Tensor(z)).data
    np.testing.assert_allclose(p, [[0.5, 0.5, 0.0], [1 / (2 + np.exp(-1)), np.exp(-1) / (2 + np.exp(-1)),
                                                     1 / (2 + np.exp(-1))]], rtol=1e-12, atol=1e-300)
    lp = F.log_softmax(ms.Tensor(z)).data
    np.testing.assert_allclose(lp[0], [-np.log(2), -np.log(2), -1000 - np.log(2)], rtol=1e-12)
    assert np.all(np.isfinite(lp))
    assert losses.cross_entropy(ms.Tensor(z), np.array([0, 1])).item() == pytest.approx(
        (np.log(2) + 1 + np.log(2 + np.exp(-1))) / 2, rel=1e-12)


# ----------------------------------------------------------------------------- losses


Z = np.array([[[1.0, -0.5, 0.25], [0.0, 2.0, -1.0]],
              [[-1.0, 0.5, 1.5], [3.0, 0.0, 0.5]]])        # [T = 2, N = 2, K = 3], steps differ
Y = np.array([2, 1])


def test_cross_entropy_means_over_the_batch_of_time_mean_logits():
    zm = Z.mean(0)
    want = -log_softmax(zm)[np.arange(2), Y].mean()
    assert losses.cross_entropy(ms.Tensor(Z), Y).item() == pytest.approx(want, rel=1e-12)
    assert losses.cross_entropy(ms.Tensor(zm), Y).item() == pytest.approx(want, rel=1e-12)
    soft = np.array([[0.25, 0.25, 0.5], [0.0, 1.0, 0.0]])
    want_soft = -(log_softmax(zm) * soft).sum(-1).mean()
    assert losses.cross_entropy(ms.Tensor(zm), soft).item() == pytest.approx(want_soft, rel=1e-12)


def test_tet_loss_means_over_steps_and_samples():
    per_step = -log_softmax(Z)[:, np.arange(2), Y]            # [T, N]
    assert losses.tet_loss(ms.Tensor(Z), Y).item() == pytest.approx(per_step.mean(), rel=1e-12)
    lam, phi = 0.25, 0.75
    want = (1 - lam) * per_step.mean() + lam * ((Z - phi) ** 2).mean()
    assert losses.tet_loss(ms.Tensor(Z), Y, lamb=lam, phi=phi).item() == pytest.approx(want, rel=1e-12)


def test_mse_rate_against_coded_levels():
    s = (np.random.default_rng(0).random((4, 2, 3)) < 0.5).astype(float)
    r = s.mean(0)
    y = np.full((2, 3), 0.1)
    y[np.arange(2), Y] = 0.9
    assert losses.mse_rate(ms.Tensor(s), Y, on=0.9, off=0.1).item() == pytest.approx(((r - y) ** 2).mean(), rel=1e-12)


def mean_probs(z, tau):
    """HSD eq. 10: p = (1/T) Σ_t softmax(z_t/τ) of [T, N, K] logits (softmax(z/τ) of [N, K] ones)."""
    p = np.exp(log_softmax(np.asarray(z) / tau))
    return p.mean(0) if p.ndim == 3 else p


@pytest.mark.parametrize("tau", [2.0, 5.0])
def test_kd_loss_by_hand(tau):
    """τ²·(1/N) Σ_n KL(p_t ‖ p_s), each side's probabilities averaged over its steps (eq. 10)."""
    teacher = np.array([[[0.5, 1.0, -1.0], [2.0, -2.0, 0.0]], [[1.5, -1.0, 0.0], [0.0, 1.0, 1.0]]])
    p_t, p_s = mean_probs(teacher, tau), mean_probs(Z, tau)
    want = tau ** 2 * (p_t * np.log(p_t / p_s)).sum(-1).mean()
    assert losses.kd_loss(ms.Tensor(Z), teacher, tau).item() == pytest.approx(want, rel=1e-10)
    p_s1 = mean_probs(Z[1], tau)
    want1 = tau ** 2 * (p_t * np.log(p_t / p_s1)).sum(-1).mean()
    assert losses.kd_loss(ms.Tensor(Z[1]), teacher, tau).item() == pytest.approx(want1, rel=1e-10)


def test_kd_loss_is_finite_for_huge_logits():
    """The log-mean-exp over t subtracts its maximum: logits of ±1000·τ give a finite loss (0 when they match)."""
    z = np.array([[[1000.0, -1000.0]], [[-1000.0, 1000.0]]]) * 4.0       # [T = 2, N = 1, K = 2], τ = 4
    assert losses.kd_loss(ms.Tensor(z), z, tau=4.0).item() == pytest.approx(0.0, abs=1e-9)
    loss = losses.kd_loss(ms.Tensor(z[:1]), z, tau=4.0).item()    # log p_s = (0, −2000), p_t = (½, ½)
    assert loss == pytest.approx(16 * (0.5 * np.log(0.5) + 0.5 * (np.log(0.5) + 2000)), rel=1e-12)


def test_losses_reject_bad_labels():
    with pytest.raises(ValueError, match="labels"):
        losses.cross_entropy(ms.Tensor(Z[0]), np.array([0, 3]))
    with pytest.raises(ValueError, match="labels"):
        losses.cross_entropy(ms.Tensor(Z[0]), np.array([-1, 0]))
    with pytest.raises(ValueError, match="soft labels"):
        losses.tet_loss(ms.Tensor(Z), np.array([[0.5, 0.2, 0.2], [0.0, 1.0, 0.0]]))


# ----------------------------------------------------------------------------- neurons: validation


def test_neuron_arguments_are_validated():
    for cls in (neurons.Sigmoid, neurons.ATan, neurons.Rectangle, neurons.Triangle):
        with pytest.raises(ValueError, match="parameter"):
            cls(0.0)
        with pytest.raises(ValueError, match="parameter"):
            cls(-1.0)
    with pytest.raises(ValueError, match="v_threshold"):
        neurons.LIF(v_threshold=np.inf)
    with pytest.raises(ValueError, match="init_tau"):
        neurons.PLIF(init_tau=1.0)
    with pytest.raises(ValueError, match="tau"):
        neurons.LIF(tau=0.5)
    with pytest.raises(TypeError, match="surrogate"):
        neurons.LIF(surrogate=lambda x: x)


def test_spike_rate_is_the_mean_firing_rate():
    x = np.zeros((4, 2, 3))
    x[1, 0, 0] = x[3, 1, 2] = x[2, 1, 1] = 2.0
    for fused in (True, False):
        lif = neurons.IF(fused=fused).eval()
        lif(ms.Tensor(x))
        assert lif.spike_rate == pytest.approx(3 / 24) and lif.n_neurons == 3


def test_unrolled_trace_holds_spikes_and_membranes():
    x = np.array([[0.5], [0.75], [0.25]])
    trace = {}
    neurons.multistep_unrolled(ms.Tensor(x), 0.5, 1.0, 0.0, 1.0, 0.0, 0.0, trace=trace)
    np.testing.assert_array_equal(trace["u"].ravel(), [0.5, 1.0, 0.25])
    np.testing.assert_array_equal(trace["s"].ravel(), [0, 1, 0])


# ----------------------------------------------------------------------------- relevance: initialisation and targets


def linear_net(w):
    """x [T, N, F] -> Linear (no bias) with weights w: logits = x·wᵀ per step."""
    lin = nn.Linear(w.shape[1], w.shape[0], bias=False)
    lin.weight.data = np.asarray(w, np.float64)
    return nn.Sequential(lin)


def test_clrp_logit_and_onehot_initial_relevance():
    out = np.arange(24.0).reshape(2, 3, 4) - 5                  # [T, N, K = 4]
    target = np.array([1, 3, 0])
    clrp = rv.init_relevance(out, target, "clrp")
    want = np.full((2, 3, 4), -0.25)
    want[:, np.arange(3), target] = 0.75                         # 1 − 1/K at the target, −1/K elsewhere
    np.testing.assert_array_equal(clrp, want)
    np.testing.assert_allclose(clrp.sum(-1), 0)
    logit = rv.init_relevance(out, target, "logit")
    want = np.zeros_like(out)
    want[:, np.arange(3), target] = out[:, np.arange(3), target]
    np.testing.assert_array_equal(logit, want)
    np.testing.assert_array_equal(rv.init_relevance(out, target, "onehot"), want != 0)


def test_explain_default_target_is_the_arg_max_of_the_time_mean():
    """Step 0 votes strongly for class 0, the last step weakly for class 1: the time mean says class 0."""
    x = np.array([[[5.0, 0.0]], [[0.0, 1.0]]])                 # [T = 2, N = 1, F = 2], identity weights
    e = rv.explain(linear_net(np.eye(2)), x)
    assert e.target.tolist() == [0]
    np.testing.assert_array_equal(e.output_relevance, [[[0.5, -0.5]], [[0.5, -0.5]]])   # CLRP, K = 2
    np.testing.assert_allclose(e.input, [[[0.5, 0.0]], [[0.0, -0.5]]])   # identity weights: R_j to input j (if x_j ≠ 0)


def test_slrp_uses_time_averaged_inputs_and_initial_relevance():
    """SLRP (§3.3): the αβ rule on mean_t x⁺, mean_t x⁻ with the time-mean initial relevance."""
    rng = np.random.default_rng(0)
    x, w = rng.normal(size=(3, 2, 5)), rng.normal(size=(4, 5))   # inputs vary over time
    for init in ("logit", "clrp"):
        e = rv.explain(linear_net(w), x, target=np.array([1, 2]), mode="slrp", init=init, alpha=2.0, beta=-1.0)
        R0 = rv.init_relevance(x @ w.T, np.array([1, 2]), init).mean(0)
        xp, xn = np.maximum(x, 0).mean(0), np.minimum(x, 0).mean(0)
        # α2β1 with z⁺ = w⁺x⁺ + w⁻x⁻, z⁻ = w⁺x⁻ + w⁻x⁺ (eq. 3), from the time-averaged parts
        wp, wn = np.maximum(w, 0), np.minimum(w, 0)
        zp, zn = xp @ wp.T + xn @ wn.T, xn @ wp.T + xp @ wn.T
        sp, sn = 2.0 * R0 / zp, -1.0 * R0 / zn
        want = xp * (sp @ wp + sn @ wn) + xn * (sp @ wn + sn @ wp)
        np.testing.assert_allclose(e.input, want, rtol=1e-10, atol=1e-12)


def test_slrp_max_pool_winner_is_the_arg_max_of_the_time_mean():
    """Step 0's maximum sits at (0, 0), but the time mean's at (1, 1): SLRP routes everything to (1, 1)."""
    x = np.zeros((2, 1, 1, 2, 2))
    x[0, 0, 0] = [[3.0, 0.0], [0.0, 2.0]]
    x[1, 0, 0] = [[0.0, 0.0], [0.0, 2.0]]                       # mean: [[1.5, 0], [0, 2]]
    R = np.full((1, 1, 1, 1), 7.0)
    R_in = rv._rule(nn.MaxPool2d(2), x, None, R, "slrp", 1.0, 0.0, False)[0]
    np.testing.assert_array_equal(R_in[0, 0], [[0.0, 0.0], [0.0, 7.0]])
    R_t = rv._rule(nn.MaxPool2d(2), x, None, np.full((2, 1, 1, 1, 1), 7.0), "sltrp", 1.0, 0.0, False)[0]
    np.testing.assert_array_equal(R_t[:, 0, 0], [[[7.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 7.0]]])   # per step


def test_sltrp_reports_the_initial_membranes_share():
    """One IF neuron with v0 = 0.5, x = 0.25 for T = 2 (no spike): γ[t] = V/(V + I) = 2/3 then 3/4 (α = 1), so
    R_init = γ[1]·R_in[1] and the per-layer residual Σ R_out − Σ R_in − R_init is 0."""
    x = np.full((2, 1, 1), 0.25)
    e = rv.explain(nn.Sequential(neurons.IF(v0=0.5)), x, target=0, init="onehot")   # K = 1: R_out = 1 per step
    # R_in[2] = (1 − 3/4)·1 = 1/4, carry 3/4 -> R_in[1] = 1 + 3/4 = 7/4, R_init = 2/3·7/4, R_in[1] = 7/4·1/3
    np.testing.assert_allclose(e.input.ravel(), [7 / 12, 1 / 4])
    np.testing.assert_allclose(e.conservation["0"]["init"], [7 / 6])
    np.testing.assert_allclose(e.residuals()["0"], 0, atol=1e-12)


def test_explain_passes_clamp_input_to_gamma():
    """clamp_input=True (the reference code): γ uses max(I, 0), so with a negative input current the β part sends all of
    a negative membrane's share back in time; explain must build γ that way (α = 0.6, β = 0.4)."""
    x = np.array([[[0.5, -0.75]], [[-0.5, 0.25]], [[0.75, -0.25]]])           # [T, N = 1, 2]
    lif = neurons.LIF(tau=2.0, decay_input=False, v0=-0.5)                    # u = h/2 + x, no spikes here
    h, hs = np.full((1, 2), -0.5), []
    for t in range(3):
        h = 0.5 * h + x[t]
        hs.append(h)
    h_prev = np.concatenate([np.full((1, 1, 2), -0.5), np.stack(hs)[:-1]])
    gammas = {}
    for clamp in (False, True):
        e = rv.explain(nn.Sequential(lif), x, target=0, alpha=0.6, beta=0.4, clamp_input=clamp)   # CLRP: both
        gammas[clamp] = rv.sltrp_gamma(h_prev, x, 0.5, 1.0, 0.6, 0.4, clamp_input=clamp)
        want, _ = rv.sltrp_recursion(e.output_relevance, gammas[clamp])
        np.testing.assert_allclose(e.input, want, atol=1e-12)
    assert not np.allclose(gammas[True], gammas[False])         # the two γ really differ on these inputs


# ----------------------------------------------------------------------------- relevance: Grad-CAM, RelCAM, A.D./A.I.


def signed_cam_net():
    """x [T, N, 1, 2, 2] -> conv 1×1 (weights 1 and 0.25) -> flatten -> linear: class 0 reads channel 0 only."""
    conv = nn.Conv2d(1, 2, 1, bias=False)
    conv.weight.data = np.array([1.0, 0.25]).reshape(2, 1, 1, 1)
    lin = nn.Linear(8, 2, bias=False)
    lin.weight.data = np.array([[1.0] * 4 + [0.0] * 4, [0.0] * 4 + [-2.0] * 4])
    return nn.Sequential(conv, nn.Flatten(), lin)


def test_grad_cam_and_grad_cam_pp_clip_negative_maps():
    """Signed activations: Grad-CAM = ReLU(Σ_c mean_hw(∂y/∂A_c)·A_c); with T = 2, ∂y_0/∂A_0 = 1/2, so the map is
    ReLU(x/2). Grad-CAM++ for class 0: ΣA = −2, g = ½: a = g²/(2g² + ΣA·g³) = 1, w = 4·1·½ = 2, map ReLU(2x).
    Class 1: g = −1 on channel 1 (A_1 = x/4): Grad-CAM = ReLU(−x/4); Grad-CAM++ w_1 = Σ a·ReLU(g) = 0."""
    x = np.array([[1.0, -2.0], [3.0, -4.0]]).reshape(1, 1, 1, 2, 2).repeat(2, 0)
    m = signed_cam_net()
    relu = lambda a: np.maximum(a, 0)  # noqa: E731
    np.testing.assert_allclose(rv.grad_cam(m, x, layer=0, target=0), relu(x[:, :, 0] / 2))
    np.testing.assert_allclose(rv.grad_cam_pp(m, x, layer=0, target=0), relu(2 * x[:, :, 0]))
    # class 1: ∂y_1/∂A_1 = −2/T = −1 everywhere, map = ReLU(−1·0.25·x)
    np.testing.assert_allclose(rv.grad_cam(m, x, layer=0, target=1), relu(-0.25 * x[:, :, 0]))
    np.testing.assert_allclose(rv.grad_cam_pp(m, x, layer=0, target=1), 0)


def test_relcam_sums_relevance_over_space():
    m = signed_cam_net()
    x = np.array([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 1, 1, 2, 2).repeat(3, 0)
    e = rv.explain(m, x, target=0, init="logit", mode="slrp")
    R, A = e.layers["1"], e.activations["0"].mean(0)
    np.testing.assert_allclose(rv.relcam(m, x, layer=0, target=0, init="logit", mode="slrp"),
                               (R.sum((-2, -1), keepdims=True) * A).sum(-3))
    # logit init, z⁺ rule, one positive path: channel 0's relevance is the logit 10, channel 1 gets none
    np.testing.assert_allclose(R.sum((-2, -1)), [[10.0, 0.0]])


def test_average_drop_and_increase_by_hand_on_time_first_maps():
    """A [T, N, h, w] map masking frame by frame (``aggregate=""``; the default sums it over time first) is normalised
    per sample over all its steps, not per step (mask_like, sample axis 1)."""
    m = linear_net(np.eye(2))
    m = nn.Sequential(nn.Flatten(), m[0])
    x = np.array([[2.0, 0.0], [1.0, 1.0]]).reshape(1, 2, 1, 1, 2).repeat(2, 0)   # T = 2, N = 2
    maps = np.zeros((2, 2, 1, 2))
    maps[0, :, 0] = [[1.0, 0.0], [0.0, 0.5]]
    maps[1, :, 0] = [[3.0, 0.0], [0.0, 1.0]]   # normalised over T: sample 0 [1/3, 0], [1, 0]; sample 1 [0, ½], [0, 1]
    ad, ai = rv.average_drop_increase(m, x, maps, target=np.array([0, 0]), layout="TNHW", aggregate="")
    sm = lambda z: np.exp(z[0]) / np.exp(z).sum()  # noqa: E731  class-0 probability of time-mean logits
    y = np.array([sm(np.array([2.0, 0.0])), sm(np.array([1.0, 1.0]))])
    o = np.array([sm(np.array([(2 / 3 + 2) / 2, 0.0])), sm(np.array([0.0, (0.5 + 1) / 2]))])
    assert ad == pytest.approx(100 * np.mean(np.maximum(y - o, 0) / y), rel=1e-9)
    assert ai == pytest.approx(100 * np.mean(y < o))
