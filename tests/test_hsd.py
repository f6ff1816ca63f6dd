"""HSD (methods/hsd.py): QCFS (eq. 8), the exact QCFS <-> IF correspondence (spec §4), conversion,
ACE (eq. 5), SKD / KD (eq. 9-11) and a tiny end-to-end pipeline."""
import copy

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minisnn as ms
from conftest import check_grad
from minisnn import losses, nn
from minisnn.methods import hsd


def qcfs64(L, lam):
    q = hsd.QCFS(L, lam)
    q.lam = nn.Parameter(np.array(lam, dtype=np.float64))
    return q


def if_average(z, theta, T, v0):
    """Time-average of θ·s[t] of one soft-reset IF layer fed the constant input z for T steps."""
    layer = hsd.ThetaIF(theta)
    layer.neuron.v0 = v0
    x = np.broadcast_to(np.asarray(z, np.float64), (T,) + np.shape(z)).copy()
    return layer(ms.Tensor(x)).data.mean(0)


# ----------------------------------------------------------------------------- QCFS


def test_qcfs_hand_picked_values():
    # L = 4, λ = 2: step λ/L = 0.5, rounding to nearest, clipped to [0, λ]
    z = np.array([-1.0, 0.0, 0.24, 0.25, 0.7, 0.75, 1.3, 1.8, 5.0])
    out = qcfs64(4, 2.0)(ms.Tensor(z)).data
    np.testing.assert_array_equal(out, [0, 0, 0, 0.5, 0.5, 1.0, 1.5, 2.0, 2.0])
    assert hsd.QCFS()(ms.Tensor(np.float32([3.0]))).dtype == np.float32


def test_qcfs_straight_through_gradient_in_z():
    z = ms.Tensor(np.array([-1.0, 0.3, 0.9, 1.2, 1.6, 5.0]), requires_grad=True)
    qcfs64(4, 2.0)(z).sum().backward()
    np.testing.assert_array_equal(z.grad, [0, 1, 1, 1, 1, 0])  # identity inside the clip range


def test_qcfs_lambda_gradient_matches_finite_differences():
    L, lam, eps = 4, 2.0, 1e-6
    z = np.array([0.3, 0.62, 0.9, 1.2, 1.6])      # inside the clip range, away from the rounding steps
    q = qcfs64(L, lam)
    q(ms.Tensor(z)).sum().backward()
    n0 = np.floor(z * L / lam + 0.5)
    np.testing.assert_allclose(q.lam.grad, np.sum(n0 / L - z / lam), rtol=1e-12)      # q − z/λ, summed

    def straight_through(lam_):                   # the floor's value frozen, its derivative taken as 1
        x = z * L / lam_ + 0.5
        return np.sum(lam_ * np.clip((n0 + x - (z * L / lam + 0.5)) / L, 0, 1))
    fd = (straight_through(lam + eps) - straight_through(lam - eps)) / (2 * eps)
    np.testing.assert_allclose(q.lam.grad, fd, rtol=1e-7)
    # saturated (a = λ) and zero regions: the true function's finite difference, 1 and 0 per element
    for z2, expect in ((np.array([3.0, 7.0]), 2.0), (np.array([-3.0, -0.6]), 0.0)):
        q = qcfs64(L, lam)
        q(ms.Tensor(z2)).sum().backward()
        f = lambda lm: qcfs64(L, lm)(ms.Tensor(z2)).data.sum()
        np.testing.assert_allclose(q.lam.grad, (f(lam + eps) - f(lam - eps)) / (2 * eps), atol=1e-8)
        assert q.lam.grad == pytest.approx(expect)


def test_qcfs_rejects_bad_arguments():
    with pytest.raises(ValueError, match="L"):
        hsd.QCFS(L=0)
    with pytest.raises(ValueError, match="init_lambda"):
        hsd.QCFS(init_lambda=-1.0)


# ----------------------------------------------------------------------------- QCFS <-> IF exactness


@settings(max_examples=60, deadline=None)
@given(z=st.lists(st.floats(-2.0, 3.0), min_size=1, max_size=20), theta=st.floats(0.05, 8.0),
       L=st.integers(1, 32))
def test_if_with_half_threshold_start_equals_qcfs_exactly(z, theta, L):
    z = theta * np.array(z)                                   # inputs on the scale of the threshold
    x = z * L / theta + 0.5
    away = np.abs(x - np.round(x)) > 1e-9                     # exact ties are decided by rounding noise
    avg = if_average(z, theta, T=L, v0=theta / 2)             # T_AS = L, v(0) = θ/2, soft reset
    expect = qcfs64(L, theta)(ms.Tensor(z)).data              # λ = θ
    np.testing.assert_allclose(avg[away], expect[away], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("theta,L", [(1.0, 4), (2.5, 8), (0.7, 16)])
def test_v0_half_threshold_beats_v0_zero(theta, L):
    z = theta * np.linspace(0.0, 1.0, 4001)
    x = z * L / theta
    z = z[(np.abs(x - np.round(x)) > 1e-9) & (np.abs(x + 0.5 - np.round(x + 0.5)) > 1e-9)]  # no exact ties
    half, zero = if_average(z, theta, L, theta / 2), if_average(z, theta, L, 0.0)
    qcfs = qcfs64(L, theta)(ms.Tensor(z)).data
    err_half, err_zero = np.abs(half - qcfs).mean(), np.abs(zero - qcfs).mean()
    assert err_half < 1e-3 * theta / L and err_zero > 0.3 * theta / L
    relu = np.clip(z, 0, theta)                               # against the clipped ReLU: θ/4L vs θ/2L
    e_half, e_zero = np.abs(half - relu).mean(), np.abs(zero - relu).mean()
    assert e_half == pytest.approx(theta / (4 * L), rel=0.1) and e_zero == pytest.approx(theta / (2 * L), rel=0.1)


# ----------------------------------------------------------------------------- conversion


def random_ann(rng, L=8):
    ann = hsd.hsd_ann(n_classes=5, in_channels=2, input_size=8, width=4, L=L, rng=rng)
    for m in ann.modules():
        if isinstance(m, nn.BatchNorm2d):                     # non-trivial statistics, to test the folding
            m.running_mean[:] = rng.normal(0, 0.3, m.num_features)
            m.running_var[:] = rng.uniform(0.5, 2.0, m.num_features)
            m.weight.data[:] = rng.uniform(0.5, 1.5, m.num_features)
            m.bias.data[:] = rng.normal(0.3, 0.2, m.num_features)
        if isinstance(m, hsd.QCFS):
            m.lam.data[...] = rng.uniform(1.0, 2.0)
    return ann.eval()


def test_converted_average_approaches_the_ann_as_T_grows():
    """Measured (eq. 6-7): vs the QCFS ANN the error falls until T = L (nearly exact there), then settles at
    the QCFS-vs-clipped-ReLU gap, because as T -> inf the IF average tends to clip(z, 0, θ), not to the
    quantised QCFS; vs the same network with clipped ReLU (QCFS with L -> inf) it falls like 1/T."""
    L, Ts = 4, np.array([1, 2, 4, 8, 16, 32, 64, 128, 256])
    err_q, err_r, gap = [], [], []
    for seed in range(3):
        ann = random_ann(np.random.default_rng(seed), L=L)
        relu = copy.deepcopy(ann)
        for m in relu.modules():
            if isinstance(m, hsd.QCFS):
                m.L = 10 ** 6
        x = np.random.default_rng(10 + seed).uniform(0, 2, (16, 2, 8, 8)).astype(np.float32)
        with ms.no_grad():
            a, r, snn = ann(ms.Tensor(x)).data, relu(ms.Tensor(x)).data, hsd.convert(ann).eval()
            outs = [snn(ms.Tensor(np.broadcast_to(x, (T,) + x.shape).copy())).data.mean(0) for T in Ts]
        err_q.append([np.abs(o - a).mean() for o in outs])
        err_r.append([np.abs(o - r).mean() for o in outs])
        gap.append(np.abs(a - r).mean())
    err_q, err_r, gap = np.mean(err_q, 0), np.mean(err_r, 0), np.mean(gap)
    up_to_L = err_q[Ts <= L]
    assert np.all(up_to_L[1:] <= up_to_L[:-1] * 1.05), err_q
    assert up_to_L[-1] < 0.05 * err_q[0], err_q
    np.testing.assert_allclose(err_q[Ts >= 2 * L], gap, rtol=0.3)
    assert np.all(err_r[1:] <= err_r[:-1] * 1.05) and err_r[-1] < 0.01 * err_r[0], err_r
    ratios = err_r[Ts >= 8] / err_r[np.flatnonzero(Ts >= 8) - 1]
    assert np.all((ratios > 0.3) & (ratios < 0.7)), ratios  # about 1/T


def test_convert_leaves_the_ann_untouched():
    ann = random_ann(np.random.default_rng(1))
    x = ms.Tensor(np.random.default_rng(2).uniform(0, 2, (4, 2, 8, 8)))
    before_state, before_out = ann.state_dict(), ann(x).data.copy()
    snn = hsd.convert(ann)
    for p in snn.parameters():                                # modify the SNN in place: no aliasing
        p.data += 1.0
    assert {id(p) for p in snn.parameters()}.isdisjoint(id(p) for p in ann.parameters())
    after = ann.state_dict()
    assert before_state.keys() == after.keys()
    for k in before_state:
        np.testing.assert_array_equal(before_state[k], after[k])
    np.testing.assert_array_equal(ann(x).data, before_out)
    thetas = [m.theta for m in snn.modules() if isinstance(m, hsd.ThetaIF)]
    assert thetas == [float(m.lam.data) for m in ann.modules() if isinstance(m, hsd.QCFS)]
    assert not any(isinstance(m, (nn.BatchNorm2d, hsd.QCFS)) for m in snn.modules())


def test_unfolded_batchnorm_gives_the_same_eval_output():
    ann = random_ann(np.random.default_rng(4))
    x = ms.Tensor(np.random.default_rng(5).uniform(0, 2, (6, 8, 2, 8, 8)))
    folded, kept = hsd.convert(ann).eval(), hsd.convert(ann, fold_bn=False).eval()
    assert sum(isinstance(m, nn.BatchNorm2d) for m in kept.modules()) == 2
    np.testing.assert_allclose(kept(x).data, folded(x).data, atol=1e-4)


def test_convert_rejects_what_it_cannot_convert():
    with pytest.raises(ValueError, match="MaxPool2d"):
        hsd.convert(nn.Sequential(nn.Conv2d(2, 4, 3), hsd.QCFS(), nn.MaxPool2d(2)))
    with pytest.raises(TypeError, match="ann"):
        hsd.convert(hsd.QCFS())
    with pytest.raises(ValueError, match="theta"):
        hsd.ThetaIF(0.0)


# ----------------------------------------------------------------------------- losses


def test_ace_loss_is_the_mean_of_per_frame_cross_entropies():
    rng = np.random.default_rng(0)
    z, y = rng.normal(size=(3, 4, 5)), np.array([0, 4, 2, 2])
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    assert hsd.ace_loss(z, y).item() == pytest.approx(-logp[:, np.arange(4), y].mean(), rel=1e-12)
    assert hsd.ace_loss(z, y, mode="mean").item() == pytest.approx(losses.cross_entropy(z.mean(0), y).item())
    with pytest.raises(ValueError, match="mode"):
        hsd.ace_loss(z, y, mode="sum")
    with pytest.raises(ValueError, match="ann_logits"):
        hsd.ace_loss(z[0], y)


def test_skd_equals_kd_for_one_step_and_vanishes_when_every_step_matches():
    rng = np.random.default_rng(0)
    teacher, student = rng.normal(size=(5, 4, 6)), rng.normal(size=(1, 4, 6)) * 3
    assert hsd.skd_loss(student, teacher).item() == pytest.approx(hsd.kd_loss(student, teacher).item(), rel=1e-12)
    assert hsd.skd_loss(student, teacher, tau=2.0).item() == pytest.approx(
        losses.kd_loss(student, teacher, tau=2.0).item(), rel=1e-12)
    matching = teacher.mean(0) + rng.normal(size=(3, 4, 1))   # each step's softmax equals the teacher's
    assert abs(hsd.skd_loss(matching, teacher).item()) < 1e-12
    assert hsd.skd_loss(matching[:, :, ::-1], teacher).item() > 1e-3


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), T2=st.integers(1, 5), tau=st.floats(0.5, 20.0), scale=st.floats(0.1, 30.0))
def test_skd_is_nonnegative_and_bounds_kd(seed, T2, tau, scale):
    rng = np.random.default_rng(seed)
    student, teacher = rng.normal(size=(T2, 3, 4)) * scale, rng.normal(size=(2, 3, 4)) * scale
    skd, kd = hsd.skd_loss(student, teacher, tau).item(), hsd.kd_loss(student, teacher, tau).item()
    # −log softmax is convex in the logits, so KD on the time-mean logits ≤ the mean of per-step terms
    assert skd >= -1e-9 and kd >= -1e-9 and skd >= kd - 1e-9 * max(1.0, skd)


def test_skd_gradient_finite_differences():
    rng = np.random.default_rng(3)
    teacher = rng.normal(size=(4, 3, 5))
    check_grad(lambda z: hsd.skd_loss(z, teacher, tau=2.0), rng.normal(size=(3, 3, 5)) * 2)
    check_grad(lambda z: hsd.skd_loss(z, teacher[0], tau=10.0), rng.normal(size=(2, 3, 5)) * 5)


def test_skd_rejects_bad_shapes():
    with pytest.raises(ValueError, match="student_logits"):
        hsd.skd_loss(np.zeros((3, 5)), np.zeros((2, 3, 5)))
    with pytest.raises(ValueError, match="teacher_logits"):
        hsd.skd_loss(np.zeros((2, 3, 5)), np.zeros((2, 4, 5)))
    with pytest.raises(ValueError, match="tau"):
        hsd.skd_loss(np.zeros((2, 3, 5)), np.zeros((3, 5)), tau=0)


# ----------------------------------------------------------------------------- pipeline


class Halves:
    """Two classes of 8×8 event streams: events in the left or the right half (a trivially learnable task)."""
    sensor_size, classes = (8, 8, 2), ["left", "right"]

    def __init__(self, n, seed):
        from data_tools.events import make_events
        rng = np.random.default_rng(seed)
        self.labels = np.arange(n) % 2
        self.items = [make_events(rng.integers(0, 4, 200) + 4 * c, rng.integers(0, 8, 200),
                                  np.sort(rng.integers(0, 10_000, 200)), rng.integers(0, 2, 200)) for c in self.labels]

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.items[i], int(self.labels[i])


def test_pipeline_learns_a_trivial_task_end_to_end():
    lines = []
    r = hsd.run_pipeline((Halves(48, 0), Halves(32, 10)), T1=2, T2s=(1,), epochs=3, ft_epochs=3, width=2, L=4,
                         batch_size=8, ft_lr=3e-3, log=lines.append)
    assert set(r) >= {"ann_accuracy", "T2", "lambdas"} and set(r["T2"]) == {1}
    assert r["ann_accuracy"] >= 0.9 and r["T2"][1]["hsd"] >= 0.9
    assert 0 <= r["T2"][1]["converted"] <= 1 and 0 <= r["T2"][1]["direct"] <= 1
    assert any(ln.startswith("T2=1: converted") for ln in lines)
    with pytest.raises(ValueError, match="dataset"):
        hsd.run_pipeline("cifar")
    with pytest.raises(ValueError, match="T2"):
        list(hsd.FrameWindow([(np.zeros((3, 1, 2, 4, 4)), np.zeros(1, int))], T1=2, T2=2))
