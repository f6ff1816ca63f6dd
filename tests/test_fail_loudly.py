"""Bad input fails loudly with an error that names what is wrong; nothing runs on with NaN, an empty batch or a
shape that means something else (issue "Fail loudly")."""
import os
import subprocess
import sys

import numpy as np
import pytest

import minisnn as ms
from minisnn import losses, models, neurons, nn, optim, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def batches(n_batches=2, N=4, T=3, size=8, seed=0):
    rng = np.random.default_rng(seed)
    return [((rng.random((T, N, 2, size, size)) < 0.3).astype(np.float32), rng.integers(0, 3, N))
            for _ in range(n_batches)]


def small_net(seed=0):
    return models.ConvSNN(n_classes=3, in_channels=2, input_size=8, width=4, rng=np.random.default_rng(seed))


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_neurons_reject_non_finite_input(bad, fused):
    x = np.full((4, 2, 3), 0.5)
    x[2, 1, 0] = bad
    with pytest.raises(ValueError, match="LIF: input current holds NaN or inf"):
        neurons.LIF(fused=fused)(ms.Tensor(x))


def test_fit_rejects_nan_frames_wrong_layout_and_empty_data():
    data = batches()
    data[1][0][0, 0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="epoch 1, batch 1: the frames hold NaN"):
        train.fit(small_net(), data, epochs=1, log=None)
    x, y = batches(1)[0]
    with pytest.raises(ValueError, match=r"time-first \[T, N, P, H, W\]"):
        small_net()(ms.Tensor(x[0]))                              # a 4-D [N, P, H, W] batch
    with pytest.raises(ValueError, match="time-first"):
        train.fit(small_net(), [(x, y[:3])], epochs=1, log=None)  # N != len(labels)
    with pytest.raises(ValueError, match="time-first"):
        train.fit(small_net(), [(x[0], y)], epochs=1, log=None)   # no time axis
    with pytest.raises(ValueError, match="no samples"):
        train.fit(small_net(), [], epochs=1, log=None)
    with pytest.raises(ValueError, match="empty batch"):
        train.fit(small_net(), [(x[:, :0], y[:0])], epochs=1, log=None)
    with pytest.raises(ValueError, match="empty batch"):
        losses.cross_entropy(ms.Tensor(np.zeros((0, 3))), np.zeros(0, np.int64))
    with pytest.raises(ValueError, match="epochs"):
        train.fit(small_net(), batches(), epochs=0, log=None)
    with pytest.raises(ValueError, match="keep"):
        train.fit(small_net(), batches(), epochs=1, keep="best", log=None)   # "best" needs validation data


def test_fit_stops_on_nan_weights_and_divergence():
    net = small_net()
    net[0].weight.data[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        train.fit(net, batches(), epochs=1, log=None)
    for lr in (1e3, 1e6, 1e12):   # a runaway learning rate: the loss explodes
        with pytest.raises(FloatingPointError, match="epoch 1, batch 1: training diverged"):
            train.fit(small_net(), batches(8), epochs=3, lr=lr, log=None)
    with np.errstate(all="ignore"), pytest.raises(ValueError, match="NaN or inf"):   # weights ~1e36: currents overflow
        train.fit(small_net(), batches(8), epochs=3, lr=1e36, log=None)
    # a gradient that turns NaN is caught before the step
    net = small_net()
    with pytest.raises(FloatingPointError, match="epoch 1, batch 0: gradient '0.weight' is NaN"):
        train.fit(net, batches(), epochs=1, log=None,
                  step_hook=lambda m: setattr(m[0].weight, "grad", m[0].weight.grad * np.nan))


def test_fit_keeps_the_best_validation_epoch(tmp_path, monkeypatch):
    snapshots, scripted = [], iter([0.5, 0.9, 0.9, 0.6])   # best at epoch 2 (tie with 3: the earliest is kept)

    def fake_evaluate(model, loader, loss_fn):
        snapshots.append(model.state_dict())
        return {"loss": 1.0, "accuracy": next(scripted), "spike_rate": 0.1}
    monkeypatch.setattr(train, "evaluate", fake_evaluate)
    net = small_net()
    hist = train.fit(net, batches(2), ["val"], epochs=4, lr=0.05, checkpoint=tmp_path / "c.npz", log=None)
    assert [bool(h.get("kept")) for h in hist] == [False, True, False, False]
    for state in (net.state_dict(), small_net(1).load(tmp_path / "c.npz").state_dict()):
        for k, v in state.items():
            np.testing.assert_array_equal(v, snapshots[1][k], err_msg=k)
    assert any(not np.array_equal(v, snapshots[3][k]) for k, v in net.state_dict().items())
    hist = train.fit(small_net(), batches(2), epochs=2, log=None)          # no validation data: the last epoch
    assert hist[-1].get("kept") and not hist[0].get("kept")


@pytest.mark.parametrize("make, match", [
    (lambda: nn.Conv2d(2, 4, 3, stride=0), "stride"), (lambda: nn.Conv2d(2, 4, 0), "kernel_size"),
    (lambda: nn.Conv2d(0, 4, 3), "in_channels"), (lambda: nn.Conv2d(2, 4, 3, padding=-1), "padding"),
    (lambda: nn.Linear(3, 0), "out_features"), (lambda: nn.AvgPool2d(0), "kernel_size"),
    (lambda: nn.MaxPool2d(2, stride=0), "stride"), (lambda: nn.BatchNorm2d(0), "num_features"),
    (lambda: nn.BatchNorm2d(4, eps=-1e-5), "eps"),
    (lambda: optim.Adam(nn.Linear(2, 2).parameters(), lr=np.inf), "lr"),
    (lambda: optim.Adam(nn.Linear(2, 2).parameters(), betas=(0.9, 1.0)), "betas"),
    (lambda: optim.Adam(nn.Linear(2, 2).parameters(), betas=(-0.1, 0.9)), "betas"),
    (lambda: optim.Adam(nn.Linear(2, 2).parameters(), eps=-1), "eps"),
    (lambda: optim.Adam(nn.Linear(2, 2).parameters(), weight_decay=-1), "weight_decay"),
    (lambda: optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1, momentum=-0.5), "momentum"),
    (lambda: optim.CosineAnnealing(optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1), T_max=0), "T_max"),
])
def test_bad_settings_are_rejected_at_construction(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_parameters_and_gradients():
    with pytest.raises(TypeError, match=r"params\[0\] must be a Tensor"):
        optim.SGD([np.zeros(3)], lr=0.1)
    lin = nn.Linear(2, 2)
    opt = optim.Adam(lin.parameters())
    lin.weight.grad = np.zeros(3)
    with pytest.raises(ValueError, match=r"params\[0\]: gradient of shape \(3,\)"):
        opt.step()
    bn = nn.BatchNorm2d(4)
    with pytest.raises(ValueError, match=r"BatchNorm2d\(4\)"):
        bn(ms.Tensor(np.zeros((2, 3, 5, 5), np.float32)))


def test_load_rejects_files_that_are_not_checkpoints(tmp_path):
    np.save(tmp_path / "a.npy", np.ones(3))
    (tmp_path / "t.txt").write_text("hello")
    for f in ("a.npy", "t.txt"):
        with pytest.raises(ValueError, match="not a minisnn checkpoint"):
            nn.Linear(2, 3).load(tmp_path / f)
    with pytest.raises(FileNotFoundError):
        nn.Linear(2, 3).load(tmp_path / "missing.npz")


def test_save_removes_temporaries_of_killed_processes(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".ck.npz.{int(dead.stdout)}.x1.tmp"
    alive = tmp_path / f".ck.npz.{os.getppid()}.x2.tmp"      # a live process may still be writing this one
    other = tmp_path / f".other.npz.{int(dead.stdout)}.x3.tmp"
    for f in (stale, alive, other):
        f.write_bytes(b"partial")
    nn.Linear(2, 3).save(tmp_path / "ck.npz")
    assert not stale.exists() and alive.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, other.name, "ck.npz"])


def test_dat_header_with_implausible_sensor_size(tmp_path):
    from data_tools import io
    from data_tools.events import make_events
    path = tmp_path / "a.dat"
    io.write_dat(path, make_events([1], [2], [3], [1]), sensor_size=(120, 100, 2))
    path.write_bytes(path.read_bytes().replace(b"% Width 120", b"% Width 999999999"))
    with pytest.raises(ValueError, match="implausible sensor size"):
        io.read_dat(path)


def _python(code, **env):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **env})


def test_bad_environment_settings_name_the_variable():
    for var, value in (("MINISNN_BACKEND", "bogus"), ("MINISNN_NUM_THREADS", "abc"), ("MINISNN_NUM_THREADS", "0")):
        r = _python("import minisnn", **{var: value})
        assert r.returncode != 0 and f"{var} must be" in r.stderr, r.stderr


def test_thread_count_does_not_change_the_numbers():
    # at this size an uncapped BLAS (2 threads inside 1 minisnn thread) sums in another order: other weights
    code = ("import numpy as np, hashlib, minisnn as ms\nfrom minisnn import models, train\n"
            "rng = np.random.default_rng(0)\n"
            "data = [((rng.random((4, 32, 2, 34, 34)) < 0.3).astype(np.float32), rng.integers(0, 10, 32)) for _ in range(2)]\n"
            "net = models.ConvSNN(10, 2, 34, rng=np.random.default_rng(0))\n"
            "train.fit(net, data, epochs=1, log=None)\n"
            "print(hashlib.sha256(b''.join(a.tobytes() for a in net.state_dict().values())).hexdigest())")
    digests = {n: _python(code, MINISNN_NUM_THREADS=n).stdout for n in ("1", "2")}
    assert len(set(digests.values())) == 1 and all(len(d) > 60 for d in digests.values()), digests


def test_cli_user_errors_are_one_line_and_exit_2(tmp_path):
    for args in (["demo", "--epochs", "0"], ["reproduce", "--seeds", "1"], ["asa", "--bogus"]):
        r = subprocess.run([sys.executable, "-m", "minisnn", *args], capture_output=True, text=True, cwd=tmp_path,
                           env={**os.environ, "PYTHONPATH": ROOT})
        assert r.returncode == 2 and "error:" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_the_public_modules_are_attributes_of_the_package():
    for name in ("losses", "optim", "train", "relevance", "analysis", "models", "nn", "neurons", "core"):
        assert getattr(ms, name).__name__ == f"minisnn.{name}"
