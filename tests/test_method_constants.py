"""HSD (methods/hsd.py) and redundancy analysis (analysis.py): constants and edges by hand.

Kept apart from test_hsd.py / test_analysis.py (rewritten by others for paper fidelity): small hand-computed
checks of the converted neuron (θ, v0 = θ/2, soft reset), BN folding with its ε, the SKD normalisation
1/(T2·N) and τ², the Student's segments (eq. 1), and the MPD's degenerate range.
"""
import numpy as np
import pytest

import minisnn as ms
from minisnn import analysis, neurons, nn
from minisnn.methods import hsd


def log_softmax(z):
    m = z.max(-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(-1, keepdims=True))


# ----------------------------------------------------------------------------- the converted neuron (eq. 3–4, 12)


@pytest.mark.parametrize("fused", [True, False])
def test_theta_if_by_hand(fused):
    """θ = 0.75, v(0) = θ/2, soft reset, output θ·s: x = 0.375 -> u = 0.75 (spike, v = 0), 0.375, 0.75 (spike), ...;
    x = 0.5 -> u = 0.875 (spike, v = 0.125), 0.625, 1.125 (spike, v = 0.375), 0.875 (spike, v = 0.125)."""
    layer = hsd.ThetaIF(0.75)
    layer.neuron.fused = fused
    assert isinstance(layer.neuron.surrogate, neurons.Triangle) and layer.neuron.surrogate.param == 1.0
    x = ms.Tensor(np.array([[0.375, 0.5]] * 4))
    np.testing.assert_array_equal(layer(x).data, [[0.75, 0.75], [0.0, 0.0], [0.75, 0.75], [0.0, 0.75]])
    # the triangle surrogate (eq. 12), γ = 1: ∂(θ·s[0])/∂x[0] = θ·max(0, 1 − |u[0] − θ|) = 0.75·(1 − 0.125)
    xt = ms.Tensor(np.array([[0.5]]), requires_grad=True)
    layer(xt).sum().backward()
    assert xt.grad.item() == pytest.approx(0.75 * 0.875)


# ----------------------------------------------------------------------------- BN folding


def conv_bn(rng, bias, eps):
    conv = nn.Conv2d(2, 3, 3, padding=1, bias=bias, rng=rng)
    conv.weight.data = conv.weight.data.astype(np.float64)
    if bias:
        conv.bias.data = rng.normal(size=3)
    bn = nn.BatchNorm2d(3, eps=eps)
    bn.register_buffer("running_mean", rng.normal(0, 0.5, 3))
    bn.register_buffer("running_var", np.array([0.5, 2.0, 0.0]))   # channel 2 silent (σ² = 0): only ε keeps it finite
    bn.weight.data, bn.bias.data = rng.uniform(0.5, 1.5, 3), rng.normal(0, 0.5, 3)
    return conv, bn.eval()


@pytest.mark.parametrize("bias", [True, False])
def test_bn_folding_matches_conv_then_bn(bias):
    """w' = w·γ/√(σ² + ε), b' = (b − μ)·γ/√(σ² + ε) + β: the folded conv equals conv → eval-mode BN exactly."""
    rng = np.random.default_rng(0)
    conv, bn = conv_bn(rng, bias, eps=0.1)
    x = ms.Tensor(rng.normal(size=(2, 2, 5, 5)))
    with ms.no_grad():
        want = bn(conv(x)).data
        got = hsd._fold_bn(conv, bn)(x).data
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------- SKD (eq. 11) and fine-tuning (eq. 13)


STUDENT = np.array([[[1.0, -0.5, 0.25], [0.0, 2.0, -1.0]],
                    [[-1.0, 0.5, 1.5], [3.0, 0.0, 0.5]],
                    [[0.5, 0.5, -0.5], [1.0, -1.0, 2.0]]])      # [T2 = 3, N = 2, K = 3]
TEACHER = np.array([[[0.5, 1.0, -1.0], [2.0, -2.0, 0.0]],
                    [[1.5, -1.0, 0.0], [0.0, 1.0, 1.0]]])       # [T1 = 2, N = 2, K = 3]


@pytest.mark.parametrize("tau", [10.0, 2.0])
def test_skd_loss_by_hand(tau):
    """L_SKD = τ²·(1/(T2·N)) Σ_t Σ_n KL(p_a ‖ p_s^t), p_a = (1/T1) Σ_t' softmax(z^ANN_t'/τ), p_s^t = softmax(z_t/τ)."""
    p_a = np.exp(log_softmax(TEACHER / tau)).mean(0)
    kl = (p_a * (np.log(p_a) - log_softmax(STUDENT / tau))).sum(-1)        # [T2, N]
    want = tau ** 2 * kl.mean()
    assert hsd.skd_loss(STUDENT, TEACHER, tau).item() == pytest.approx(want, rel=1e-10)
    want_2d = tau ** 2 * (np.exp(log_softmax(TEACHER[1] / tau)) * (log_softmax(TEACHER[1] / tau)
                                                                   - log_softmax(STUDENT / tau))).sum(-1).mean()
    assert hsd.skd_loss(STUDENT, TEACHER[1], tau).item() == pytest.approx(want_2d, rel=1e-10)


def test_student_feeds_the_teacher_the_first_t1_frames_and_the_snn_the_rest():
    frames = np.arange(7.0).reshape(7, 1, 1) * np.ones((7, 2, 3))
    seen = {}

    class Probe(nn.Module):
        def __init__(self, key):
            super().__init__()
            object.__setattr__(self, "key", key)

        def forward(self, x):
            seen[self.key] = x.data[:, 0, 0].tolist()
            return x

    student = hsd.Student(Probe("snn"), T1=3, teacher=Probe("teacher"))
    student(ms.Tensor(frames))
    assert seen == {"teacher": [0, 1, 2], "snn": [3, 4, 5, 6]}


# ----------------------------------------------------------------------------- analysis: degenerate inputs


def test_membrane_histogram_of_a_constant_membrane():
    """A constant (t, c) row (a silent channel at rest) spans value ± 0.5: edges [0, 1] for u = 0.5, all in bin 2 of 4;
    a varying channel beside it keeps its own min..max."""
    u = np.full((2, 3, 2), 0.5)
    u[:, :, 1] = [0.0, 1.0, 2.0]
    counts, edges = analysis.membrane_histogram(u, bins=4)
    np.testing.assert_allclose(edges[:, 0], [[0.0, 0.25, 0.5, 0.75, 1.0]] * 2)
    np.testing.assert_allclose(edges[:, 1], [[0.0, 0.5, 1.0, 1.5, 2.0]] * 2)
    assert counts.tolist() == [[[0, 0, 3, 0], [1, 0, 1, 1]]] * 2
