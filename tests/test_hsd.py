"""HSD (methods/hsd.py): QCFS (eq. 8), the exact QCFS <-> IF correspondence (spec §4), conversion,
ACE (eq. 5), SKD / KD (eq. 9-11) and a tiny end-to-end pipeline."""
import copy

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minisnn as ms
from conftest import check_grad
from minisnn import losses, models, nn
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


def _softmax(z, tau):
    e = np.exp(z / tau - (z / tau).max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_kd_and_skd_are_eq_9_to_11_with_probability_averages():
    rng = np.random.default_rng(7)
    teacher, student, tau = rng.normal(size=(5, 4, 6)) * 4, rng.normal(size=(3, 4, 6)) * 4, 2.0
    p_a = _softmax(teacher, tau).mean(0)                                 # "p_a resembles Eq. (10)"
    p_s = _softmax(student, tau).mean(0)                                 # eq. 10: (1/T2) Σ_t p_s^t
    kd = tau ** 2 * np.sum(p_a * np.log(p_a / p_s)) / 4                  # eq. 9, batch mean, Hinton's τ²
    skd = tau ** 2 * np.mean([np.sum(p_a * np.log(p_a / _softmax(z, tau))) / 4 for z in student])   # eq. 11
    assert hsd.kd_loss(student, teacher, tau).item() == pytest.approx(kd, rel=1e-12)
    assert losses.kd_loss(student, teacher, tau).item() == pytest.approx(kd, rel=1e-12)
    assert hsd.skd_loss(student, teacher, tau).item() == pytest.approx(skd, rel=1e-12)
    q_a, q_s = _softmax(teacher.mean(0), tau), _softmax(student.mean(0), tau)      # averaged logits would differ
    assert abs(tau ** 2 * np.sum(q_a * np.log(q_a / q_s)) / 4 - kd) > 1e-3 * kd
    big = student * 200                                                  # log-mean-exp stays finite
    assert np.isfinite(hsd.kd_loss(big, teacher, 1.0).item())


def test_skd_equals_kd_for_one_step_and_vanishes_when_every_step_matches():
    rng = np.random.default_rng(0)
    teacher, student = rng.normal(size=(5, 4, 6)), rng.normal(size=(1, 4, 6)) * 3
    assert hsd.skd_loss(student, teacher).item() == pytest.approx(hsd.kd_loss(student, teacher).item(), rel=1e-12)
    assert hsd.skd_loss(student, teacher, tau=2.0).item() == pytest.approx(
        losses.kd_loss(student, teacher, tau=2.0).item(), rel=1e-12)
    log_p_a = np.log(_softmax(teacher, 10.0).mean(0))                    # each step's softmax is p_a itself
    matching = 10.0 * log_p_a + rng.normal(size=(3, 4, 1))
    assert abs(hsd.skd_loss(matching, teacher).item()) < 1e-12
    assert hsd.skd_loss(matching[:, :, ::-1], teacher).item() > 1e-3


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), T2=st.integers(1, 5), tau=st.floats(0.5, 20.0), scale=st.floats(0.1, 30.0))
def test_skd_is_nonnegative_and_bounds_kd(seed, T2, tau, scale):
    rng = np.random.default_rng(seed)
    student, teacher = rng.normal(size=(T2, 3, 4)) * scale, rng.normal(size=(2, 3, 4)) * scale
    skd, kd = hsd.skd_loss(student, teacher, tau).item(), hsd.kd_loss(student, teacher, tau).item()
    # −log is convex, so KL(p_a ‖ mean_t p_s^t) (KD on eq. 10's average) ≤ mean_t KL(p_a ‖ p_s^t) (SKD)
    assert skd >= -1e-9 and kd >= -1e-9 and skd >= kd - 1e-9 * max(1.0, skd)


def test_skd_gradient_finite_differences():
    rng = np.random.default_rng(3)
    teacher = rng.normal(size=(4, 3, 5))
    check_grad(lambda z: hsd.skd_loss(z, teacher, tau=2.0), rng.normal(size=(3, 3, 5)) * 2)
    check_grad(lambda z: hsd.skd_loss(z, teacher[0], tau=10.0), rng.normal(size=(2, 3, 5)) * 5)
    check_grad(lambda z: hsd.kd_loss(z, teacher, tau=1.5), rng.normal(size=(3, 3, 5)) * 3)


def test_skd_rejects_bad_shapes():
    with pytest.raises(ValueError, match="student_logits"):
        hsd.skd_loss(np.zeros((3, 5)), np.zeros((2, 3, 5)))
    with pytest.raises(ValueError, match="teacher_logits"):
        hsd.skd_loss(np.zeros((2, 3, 5)), np.zeros((2, 4, 5)))
    with pytest.raises(ValueError, match="tau"):
        hsd.skd_loss(np.zeros((2, 3, 5)), np.zeros((3, 5)), tau=0)


# ----------------------------------------------------------------------------- pipeline


class Cue:
    """Two classes of 8×8 event streams of 300 events: the first ``informative`` events (in time) lie in the left
    or the right half by class, the rest anywhere (no information) — so which frames a model sees matters."""
    sensor_size, classes = (8, 8, 2), ["left", "right"]

    def __init__(self, n, seed, informative=200):
        from data_tools.events import make_events
        rng = np.random.default_rng(seed)
        self.labels = np.arange(n) % 2
        x = lambda c: np.concatenate([rng.integers(0, 4, informative) + 4 * c, rng.integers(0, 8, 300 - informative)])
        self.items = [make_events(x(c), rng.integers(0, 8, 300), np.arange(300) * 10, rng.integers(0, 2, 300))
                      for c in self.labels]

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.items[i], int(self.labels[i])


TINY = dict(epochs=3, ft_epochs=3, width=2, L=4, batch_size=8, log=None)


def test_the_ann_gets_the_first_T1_frames_and_every_snn_the_last_T2():
    """T1 = 2, T2 = 1: frames 1-2 (the first 200 events) carry the class, frame 3 does not. An ANN on the first two
    frames learns it; every SNN is tested on frame 3 and cannot. (Reversing the partition fails both.)"""
    r = hsd.run_t2((Cue(64, 0), Cue(64, 1)), T1=2, T2=1, arms=("direct", "hsd", "dts"), **TINY)
    assert r["ann"]["accuracy"] >= 0.9 and r["ann"]["frame_1"] >= 0.9 and r["ann"]["frame_3"] <= 0.75
    assert max(r[a]["accuracy"] for a in ("converted", "direct", "hsd", "dts")) <= 0.75, r


def test_the_frames_for_one_T2_do_not_depend_on_the_other_T2s():
    """Each T2 cuts the stream into its own T1 + T2 frames (eq. 1); running other T2s first changes nothing."""
    data = (Cue(48, 2, informative=150), Cue(32, 3, informative=150))
    strip = lambda r: {a: {k: v for k, v in m.items() if k != "seconds"} for a, m in r.items()}
    alone = strip(hsd.run_t2(data, 2, 1, **TINY))
    hsd.run_t2(data, 2, 2, **TINY)
    assert strip(hsd.run_t2(data, 2, 1, **TINY)) == alone and len(alone["ann"]) == 1 + 3   # frame_1..3


def test_pipeline_learns_a_trivial_task_end_to_end():
    lines = []
    r = hsd.run_t2((Cue(64, 0, informative=300), Cue(32, 10, informative=300)), 2, 1, **{**TINY, "log": lines.append})
    assert set(r) == {"ann", "converted", "direct", "hsd"} and set(r["ann"]) >= {"accuracy", "frame_1", "frame_3"}
    assert r["ann"]["accuracy"] >= 0.9 and r["hsd"]["accuracy"] >= 0.9 and 0 <= r["direct"]["accuracy"] <= 1
    assert any(ln.startswith("T1=2, T2=1: ann") for ln in lines)
    with pytest.raises(ValueError, match="dataset"):
        hsd.run_t2("cifar")
    with pytest.raises(ValueError, match="arms"):
        hsd.run_t2(None, 2, 1, arms=("tet",))


def test_every_arm_is_wired_as_tab_2_and_fig_2_say(monkeypatch):
    calls = []

    def spy(st, tr, va, epochs, lr, distil, *a, **k):
        x, _ = next(iter(tr))
        calls.append((isinstance(st.snn, models.ConvSNN), distil, st.teacher is not None, st.dts, epochs, lr, len(x)))
    monkeypatch.setattr(hsd, "finetune", spy)
    r = hsd.run_t2((Cue(24, 0), Cue(16, 1)), 2, 3, hsd.ARMS, epochs=2, ft_epochs=1, width=2, L=4, batch_size=8,
                   lr=1e-3, ft_lr=2e-3, log=None)
    #  fresh ConvSNN, distillation, teacher, trained on all T, epochs (equal budget: 2 + 1), lr, frames (T1 + T2)
    expect = {"direct": (True, None, False, False, 3, 1e-3, 5), "hsd": (False, "skd", True, False, 1, 2e-3, 5),
              "ht": (False, None, False, False, 1, 2e-3, 5), "skd": (True, "skd", True, False, 3, 1e-3, 5),
              "kd": (False, "kd", True, False, 1, 2e-3, 5), "dts": (True, None, False, True, 3, 1e-3, 5)}
    assert dict(zip(hsd.ARMS, calls)) == expect and set(r) == {"ann", "converted", *hsd.ARMS}


def test_student_routes_the_frames_and_keeps_the_teacher_frozen():
    x = ms.Tensor(np.arange(5.0)[:, None, None] * np.ones((5, 2, 3)))   # frame t holds the value t
    teacher = nn.Linear(3, 2, rng=np.random.default_rng(0))
    st = hsd.Student(nn.Sequential(), 3, teacher)                       # an identity SNN shows what it gets
    assert st(x).data[:, 0, 0].tolist() == [3, 4] and st.parameters() == [] and not teacher.training
    np.testing.assert_allclose(st.teacher_logits, teacher(x[:3]).data)   # the teacher: the first T1 frames
    dts = hsd.Student(nn.Sequential(), 3, dts=True)
    assert dts.train()(x).data[:, 0, 0].tolist() == [0, 1, 2, 3, 4]      # DTS trains on every frame ...
    assert dts.eval()(x).data[:, 0, 0].tolist() == [3, 4] and dts.teacher_logits is None   # ... infers on few


@pytest.mark.parametrize("distil", ["skd", "kd", None])
def test_finetune_minimises_ce_plus_lambda_times_the_distillation_term(distil):
    rng, T1, tau, lam = np.random.default_rng(4), 2, 3.0, 0.7
    ann = hsd.hsd_ann(3, 2, 8, width=2, L=4, init_lambda=0.5, rng=rng)
    snn = hsd.convert(ann)
    batches = [(rng.poisson(0.7, (5, n, 2, 8, 8)).astype(np.float64), rng.integers(0, 3, n)) for n in (4, 6)]
    hist = hsd.finetune(hsd.Student(snn, T1, ann if distil else None), batches, None, epochs=1, lr=1e-12,
                        distil=distil, tau=tau, lam=lam, log=None)               # lr ≈ 0: the loss of fixed weights
    total = 0.0
    for x, y in batches:
        out, p_a = snn(ms.Tensor(x[T1:])).data, _softmax(ann.eval()(ms.Tensor(x[:T1])).data, tau).mean(0)
        kl = lambda p: np.sum(p_a * np.log(p_a / p)) / len(y) * tau ** 2
        term = {"skd": np.mean([kl(_softmax(z, tau)) for z in out]), "kd": kl(_softmax(out, tau).mean(0)), None: 0}
        total += (losses.cross_entropy(out, y).item() + lam * term[distil]) * len(y)
    assert hist[0]["train_loss"] == pytest.approx(total / 10, rel=1e-6)
    with pytest.raises(ValueError, match="distil"):
        hsd.finetune(hsd.Student(snn, T1), batches, None, distil="skd")
