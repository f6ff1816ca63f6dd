"""Modules, checkpoints, losses, optimisers and a real (small) training run on DigitsDVS."""
import os

import numpy as np
import pytest

import minisnn as ms
from minisnn import functional as F, losses, models, nn, optim, train
from conftest import check_grad

R = np.random.default_rng(7)


def test_module_registry_and_state_dict():
    m = models.ConvSNN(n_classes=3, input_size=8, width=2)
    names = [n for n, _ in m.named_parameters()]
    assert names[:3] == ["0.weight", "0.bias", "1.weight"] and len(names) == len(m.parameters())
    sd = m.state_dict()
    assert "1.running_mean" in sd and "1.running_var" in sd
    m.eval()
    assert not any(mod.training for mod in m.modules())
    with pytest.raises(ValueError, match="missing keys"):
        m.load_state_dict({k: v for k, v in sd.items() if k != "0.weight"})
    bad = dict(sd, **{"0.weight": np.zeros((1, 1, 1, 1))})
    with pytest.raises(ValueError, match="shape"):
        m.load_state_dict(bad)


def test_time_folding_equals_per_step_application():
    conv, bn = nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3)
    bn.eval()
    x = R.normal(size=(4, 2, 2, 6, 6)).astype(np.float32)
    y = bn(conv(ms.Tensor(x))).data
    for t in range(4):
        np.testing.assert_allclose(y[t], bn(conv(ms.Tensor(x[t]))).data, rtol=1e-5, atol=1e-6)
    assert nn.Flatten()(ms.Tensor(x)).shape == (4, 2, 72)
    with pytest.raises(ValueError, match="expected a 4-D"):
        conv(ms.Tensor(np.zeros((2, 6, 6))))


def test_checkpoint_roundtrip_and_corruption(tmp_path):
    m = models.ConvSNN(n_classes=4, input_size=8, width=2, rng=np.random.default_rng(1))
    m2 = models.ConvSNN(n_classes=4, input_size=8, width=2, rng=np.random.default_rng(2))
    x = ms.Tensor((R.random((3, 2, 2, 8, 8)) < 0.3).astype(np.float32) * 3)
    m(x)  # updates running stats (train mode)
    path = tmp_path / "ckpt.npz"
    m.save(path)
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp.npz")]  # atomic: no temp file left
    m2.load(path)
    m.eval(), m2.eval()
    np.testing.assert_array_equal(m(x).data, m2(x).data)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="not a valid minisnn checkpoint"):
        m2.load(path)
    path.write_bytes(b"garbage" * 10)
    with pytest.raises(ValueError):
        m2.load(path)
    with pytest.raises(FileNotFoundError):
        m2.load(tmp_path / "missing.npz")


@pytest.mark.parametrize("name", ["ce_int", "ce_soft", "ce_time", "tet", "mse_rate", "kd"])
def test_loss_gradients(name):
    labels = np.array([0, 2, 1])
    soft = np.array([[0.7, 0.3, 0.0], [0.0, 0.5, 0.5], [0.2, 0.2, 0.6]])
    teacher = R.normal(size=(2, 3, 3))
    fns = {"ce_int": (lambda z: losses.cross_entropy(z, labels), (3, 3)),
           "ce_soft": (lambda z: losses.cross_entropy(z, soft), (3, 3)),
           "ce_time": (lambda z: losses.cross_entropy(z, labels), (4, 3, 3)),
           "tet": (lambda z: losses.tet_loss(z, labels, lamb=0.3), (4, 3, 3)),
           "mse_rate": (lambda z: losses.mse_rate(F.sigmoid(z), labels), (4, 3, 3)),
           "kd": (lambda z: losses.kd_loss(z, teacher, tau=3.0), (4, 3, 3))}
    fn, shape = fns[name]
    check_grad(fn, R.normal(size=shape))


def test_loss_values():
    z = np.log(np.array([[0.5, 0.25, 0.25]]))
    assert losses.cross_entropy(ms.Tensor(z), np.array([0])).item() == pytest.approx(np.log(2))
    # per-step CE of TET vs CE of the time-mean: equal when every step is the same
    zt = np.stack([z, z])
    assert losses.tet_loss(ms.Tensor(zt), np.array([1])).item() == pytest.approx(np.log(4))
    assert losses.kd_loss(ms.Tensor(z), z, tau=2.0).item() == pytest.approx(0, abs=1e-6)
    with pytest.raises(ValueError, match="labels"):
        losses.cross_entropy(ms.Tensor(z), np.array([3]))
    with pytest.raises(ValueError, match="soft labels"):
        losses.cross_entropy(ms.Tensor(z), np.array([[0.5, 0.1, 0.1]]))


def test_sgd_and_adam_updates_by_hand():
    w = nn.Parameter(np.array([1.0, -2.0]))
    opt = optim.SGD([w], lr=0.1, momentum=0.9, weight_decay=0.01)
    for _ in range(2):
        w.grad = np.array([0.5, 0.5])
        opt.step()
    g1 = np.array([0.5, 0.5]) + 0.01 * np.array([1.0, -2.0])
    w1 = np.array([1.0, -2.0]) - 0.1 * g1
    g2 = np.array([0.5, 0.5]) + 0.01 * w1
    np.testing.assert_allclose(w.data, w1 - 0.1 * (0.9 * g1 + g2))
    a = nn.Parameter(np.array([1.0]))
    adam = optim.Adam([a], lr=0.1)
    a.grad = np.array([2.0])
    adam.step()
    np.testing.assert_allclose(a.data, [0.9], rtol=1e-6)  # first Adam step moves by lr·sign(g)
    sched = optim.CosineAnnealing(adam, T_max=4)
    lrs = []
    for _ in range(4):
        sched.step()
        lrs.append(adam.lr)
    np.testing.assert_allclose(lrs, [0.1 * (1 + np.cos(np.pi * e / 4)) / 2 for e in range(1, 5)])
    with pytest.raises(ValueError):
        optim.SGD([], lr=0.1)


@pytest.fixture(scope="module")
def digits():
    pytest.importorskip("sklearn")
    from data_tools.datasets import DigitsDVS
    return DigitsDVS(train=True), DigitsDVS(train=False)


def test_training_on_digits_beats_chance(digits, tmp_path):
    from data_tools.datasets import Subset, validation_split
    from data_tools.loader import DataLoader
    tr, te = digits
    sub = Subset(tr, np.random.default_rng(0).permutation(len(tr))[:600])
    assert len(sub) == 600 and np.array_equal(sub.labels[:5], [tr[int(i)][1] for i in sub.indices[:5]])
    per_class = np.bincount(sub.labels, minlength=10)
    sub, val = validation_split(sub, 0.2, seed=0)
    assert len(sub) + len(val) == 600 and not set(sub.indices) & set(val.indices)
    assert np.all(np.abs(np.bincount(val.labels, minlength=10) - 0.2 * per_class) <= 0.5)   # stratified
    train_loader = DataLoader(sub, 32, 4, rng=np.random.default_rng(0))
    val_loader, test_loader = DataLoader(val, 128, 4, shuffle=False), DataLoader(te, 128, 4, shuffle=False)
    model = models.ConvSNN(n_classes=10, width=8, rng=np.random.default_rng(0))
    hist = train.fit(model, train_loader, val_loader, epochs=3, lr=5e-3, checkpoint=tmp_path / "best.npz", log=None)
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert not any("test_accuracy" in h for h in hist)   # fit never sees the test set
    kept = [h for h in hist if h.get("kept")]
    assert len(kept) == 1 and kept[0]["val_accuracy"] == max(h["val_accuracy"] for h in hist)
    assert 0 < hist[-1]["val_spike_rate"] < 0.5
    # the model holds the kept epoch's weights, and the checkpoint is that model
    assert train.evaluate(model, val_loader)["accuracy"] == pytest.approx(kept[0]["val_accuracy"])
    assert train.evaluate(model, test_loader)["accuracy"] > 0.6  # chance is 0.1
    again = models.ConvSNN(n_classes=10, width=8, rng=np.random.default_rng(1)).load(tmp_path / "best.npz")
    for (k, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=k)
