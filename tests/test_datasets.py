import gzip
import struct
import time

import numpy as np
import pytest

from data_tools import datasets as D
from data_tools import io
from data_tools.augment import flip_x
from data_tools.events import EVENT_DTYPE, make_events, validate
from data_tools.frames import to_frames
from data_tools.loader import DataLoader
from data_tools.simulate import dvs_events

DIGIT_COUNTS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]   # sklearn's load_digits per class


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits")
    t0 = time.perf_counter()
    train = D.DigitsDVS(root=root, train=True)
    build_s = time.perf_counter() - t0
    return root, train, D.DigitsDVS(root=root, train=False), build_s


@pytest.fixture
def small_digits(monkeypatch):
    """Make DigitsDVS convert only the first 60 digits (for tests that rebuild the cache)."""
    images, labels = D.digits_images()
    monkeypatch.setattr(D, "digits_images", lambda: (images[:60], labels[:60]))


# --------------------------------------------------------------------------- DigitsDVS
def test_digits_sizes_split_and_balance(digits):
    _, train, test, build_s = digits
    assert build_s < 20                                        # all 1,797 conversions in the budget
    assert len(train) + len(test) == 1797 and len(train) == 1438 and len(test) == 359
    assert train.sensor_size == test.sensor_size == (34, 34, 2) and train.classes == [str(d) for d in range(10)]
    ntr, nte = np.bincount(train.labels, minlength=10), np.bincount(test.labels, minlength=10)
    np.testing.assert_array_equal(ntr + nte, DIGIT_COUNTS)
    np.testing.assert_array_equal(nte, np.round(0.2 * np.array(DIGIT_COUNTS)))
    assert ntr.min() >= 139 and ntr.max() <= 147
    per_sample = np.diff(train.offsets)
    assert 3500 < per_sample.mean() < 5500 and per_sample.min() > 1000


def test_digits_samples_are_valid_events(digits):
    _, train, test, _ = digits
    for ds in (train, test):
        for i in (0, len(ds) // 2, -1):
            ev, label = ds[i]
            validate(ev, ds.sensor_size)
            assert ev.dtype == EVENT_DTYPE and label == ds.labels[i] and ev["t"].max() <= 315_000
    with pytest.raises(IndexError):
        train[len(train)]
    ev, _ = train[0]
    ev["x"] = 0                                                # returned copies: the dataset is untouched
    assert train[0][0]["x"].max() > 0


def test_train_and_test_are_disjoint(digits):
    _, train, test, _ = digits
    key = lambda ds: {ds[i][0].tobytes() for i in range(len(ds))}
    assert not key(train) & key(test)


def test_digits_cache_is_reused(digits, monkeypatch):
    root, train, _, _ = digits
    monkeypatch.setattr(D, "convert_digits", lambda seed: pytest.fail("cache not reused"))
    t0 = time.perf_counter()
    again = D.DigitsDVS(root=root, train=True)
    assert time.perf_counter() - t0 < 2
    np.testing.assert_array_equal(again.events, train.events)
    np.testing.assert_array_equal(again.labels, train.labels)


def test_digits_deterministic_per_seed(small_digits, tmp_path):
    a = D.DigitsDVS(root=tmp_path / "a", seed=3)
    b = D.DigitsDVS(root=tmp_path / "b", seed=3)
    c = D.DigitsDVS(root=tmp_path / "c", seed=4)
    np.testing.assert_array_equal(a.events, b.events)
    np.testing.assert_array_equal(a.labels, b.labels)
    n_train = len(D.stratified_split(D.digits_images()[1], 0.2, 3)[0])
    assert len(a) == len(b) == n_train and 45 <= n_train <= 52 and not np.array_equal(a.events, c.events)


@pytest.mark.parametrize("damage", ["garbage", "truncate", "flip_byte", "bad_offsets"])
def test_corrupt_cache_is_rebuilt(small_digits, tmp_path, damage):
    good = D.DigitsDVS(root=tmp_path)
    path = tmp_path / "digits_dvs_seed0_v1.npz"
    raw = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(b"not a zip file at all")
    elif damage == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "flip_byte":
        path.write_bytes(raw[:5000] + bytes([raw[5000] ^ 0xFF]) + raw[5001:])
    else:
        ev, off, lab, size = D._load_packed(path)
        D._save_packed(path, ev, off[::-1], lab, size)
    with pytest.warns(UserWarning, match="rebuilding"):
        again = D.DigitsDVS(root=tmp_path)
    np.testing.assert_array_equal(again.events, good.events)
    assert D._load_packed(path) is not None                       # the rebuilt cache is readable


def test_cache_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("MINISNN_CACHE", str(tmp_path / "m"))
    assert D.cache_dir() == tmp_path / "m" and D.cache_dir(tmp_path) == tmp_path
    monkeypatch.delenv("MINISNN_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert D.cache_dir() == tmp_path / "x" / "minisnn"


# --------------------------------------------------------------------------- MotionDVS
def test_motion_opposite_classes_same_summed_frame_different_order():
    times = np.rint(np.linspace(0, 320_000, 64)).astype(np.int64)
    size = (34, 34, 2)
    for a, b in [(0, 4), (1, 5), (2, 6), (3, 7), (8, 9)]:
        ev = [dvs_events(D.motion_video(k, offset=2.0, radius=3.0, theta0=0.4), times, np.random.default_rng(0))
              for k in (a, b)]
        total = [to_frames(e, size, 1) for e in ev]
        halves = [to_frames(e, size, 2, "time") for e in ev]
        n = total[0].sum()
        assert n > 500
        assert np.abs(total[0] - total[1]).sum() < 0.02 * n               # time-summed: (nearly) identical
        assert np.abs(halves[0] - halves[1]).sum() > 1.0 * n              # first/second halves: different
        assert np.abs(halves[0][:, 1] - halves[1][:, 1]).sum() > 0.5 * n  # ... already in ON events alone


def test_motion_dataset():
    ds = D.MotionDVS(train=True, n_samples=40, seed=1)
    again = D.MotionDVS(train=True, n_samples=40, seed=1)
    test = D.MotionDVS(train=False, n_samples=40, seed=1)
    assert len(ds) == 40 and len(ds.classes) == 10 and ds.sensor_size == (34, 34, 2)
    np.testing.assert_array_equal(np.bincount(ds.labels), [4] * 10)
    np.testing.assert_array_equal(ds.events, again.events)
    assert not np.array_equal(ds.events, test.events)
    for i in range(len(ds)):
        ev, label = ds[i]
        validate(ev, ds.sensor_size)
        assert len(ev) > 200 and ev["t"].max() <= 320_000


# --------------------------------------------------------------------------- IDX
def write_idx(path, arr, compress=False):
    code = {np.uint8: 0x08, np.int32: 0x0C}[arr.dtype.type]
    raw = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


def test_load_idx_round_trip_and_errors(tmp_path):
    a = np.random.default_rng(0).integers(0, 256, (3, 5, 4)).astype(np.uint8)
    write_idx(tmp_path / "a", a)
    write_idx(tmp_path / "a.gz", a, compress=True)
    b = np.arange(-3, 3, dtype=np.int32)
    write_idx(tmp_path / "b", b)
    np.testing.assert_array_equal(D.load_idx(tmp_path / "a"), a)
    np.testing.assert_array_equal(D.load_idx(tmp_path / "a.gz"), a)
    np.testing.assert_array_equal(D.load_idx(tmp_path / "b"), b)
    raw = (tmp_path / "a").read_bytes()
    for name, data, msg in [("magic", b"\x01\x02" + raw[2:], "not an IDX"), ("short", raw[:-1], "data bytes"),
                            ("head", raw[:9], "truncated"), ("gz", (tmp_path / "a.gz").read_bytes()[:20], "gzip")]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError, match=msg):
            D.load_idx(tmp_path / name)
    with pytest.raises(FileNotFoundError):
        D.load_idx(tmp_path / "nope")


def test_fashion_dvs_from_idx(tmp_path):
    rng = np.random.default_rng(0)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (6, 28, 28)).astype(np.uint8), True)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(6).astype(np.uint8))
    ds = D.FashionDVS(root=tmp_path, train=False, limit=4, cache_root=tmp_path / "cache")
    assert len(ds) == 4 and ds.sensor_size == (34, 34, 2) and list(ds.labels) == [0, 1, 2, 3]
    assert len(ds[0][0]) > 1000 and ds.classes[9] == "Ankle boot"
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        D.FashionDVS(root=tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        D.MNISTDVS(root=tmp_path, train=True)


# --------------------------------------------------------------------------- folder loaders
def fake_events(n, w, h, seed):
    rng = np.random.default_rng(seed)
    return make_events(rng.integers(0, w, n), rng.integers(0, h, n), np.sort(rng.integers(0, 50_000, n)),
                       rng.integers(0, 2, n))


def test_nmnist_folder(tmp_path):
    for split, k in (("Train", 0), ("Train", 7), ("Test", 3)):
        (tmp_path / split / str(k)).mkdir(parents=True)
        io.write_nmnist(tmp_path / split / str(k) / "00001.bin", fake_events(50 + k, 34, 34, k))
    ds = D.NMNIST(tmp_path, train=True)
    assert len(ds) == 2 and list(ds.labels) == [0, 7]
    ev, label = ds[1]
    np.testing.assert_array_equal(ev, fake_events(57, 34, 34, 7))
    assert label == 7 and len(D.NMNIST(tmp_path, train=False)) == 1
    with pytest.raises(FileNotFoundError, match="Train/0/00002.bin"):
        D.NMNIST(tmp_path / "none")


def test_cifar10dvs_folder(tmp_path):
    for c in ("airplane", "truck"):
        (tmp_path / c).mkdir()
        for j in range(10):
            io.write_aedat2(tmp_path / c / f"cifar10_{c}_{j}.aedat", fake_events(30, 128, 128, j), convention="cifar10dvs")
    ds = D.CIFAR10DVS(tmp_path)
    assert len(ds) == 20 and list(np.bincount(ds.labels)) == [10] + [0] * 8 + [10]
    np.testing.assert_array_equal(ds[0][0], fake_events(30, 128, 128, 0))
    assert len(D.CIFAR10DVS(tmp_path, train=True)) == 18 and len(D.CIFAR10DVS(tmp_path, train=False)) == 2
    with pytest.raises(FileNotFoundError, match="figshare"):
        D.CIFAR10DVS(tmp_path / "none")


def test_ncars_folder(tmp_path):
    for split in ("n-cars_train", "test"):
        for c in ("background", "cars"):
            (tmp_path / split / c).mkdir(parents=True)
            io.write_dat(tmp_path / split / c / "obj_000001_td.dat", fake_events(40, 120, 100, len(c)))
    ds = D.NCars(tmp_path, train=True)
    assert len(ds) == 2 and list(ds.labels) == [0, 1] and ds.classes == ["background", "cars"]
    np.testing.assert_array_equal(ds[1][0], fake_events(40, 120, 100, 4))
    assert len(D.NCars(tmp_path, train=False)) == 2
    with pytest.raises(FileNotFoundError, match="prophesee"):
        D.NCars(tmp_path / "none")


def test_dvs_gesture_folder(tmp_path):
    ev = fake_events(3000, 128, 128, 0)
    for user in (1, 23, 24):
        io.write_aedat31(tmp_path / f"user{user:02d}_fluorescent.aedat", ev)
        (tmp_path / f"user{user:02d}_fluorescent_labels.csv").write_text(
            "class,startTime_usec,endTime_usec\n1,1000,20000\n11,20000,45000\n")
    train, test = D.DVSGesture(tmp_path, train=True), D.DVSGesture(tmp_path, train=False)
    assert len(train) == 4 and len(test) == 2 and list(train.labels) == [0, 10, 0, 10]
    sample, label = test[1]
    np.testing.assert_array_equal(sample, ev[(ev["t"] >= 20000) & (ev["t"] < 45000)])
    assert label == 10 and len(train.classes) == 11
    with pytest.raises(FileNotFoundError, match="user01_fluorescent_labels.csv"):
        D.DVSGesture(tmp_path / "none")


# --------------------------------------------------------------------------- loader
def test_loader_shapes_and_epoch(digits):
    _, _, test, _ = digits
    loader = DataLoader(test, batch_size=64, n_frames=5, rng=np.random.default_rng(0))
    assert len(loader) == 6
    seen, sizes = [], []
    for frames, labels in loader:
        assert frames.dtype == np.float32 and labels.dtype == np.int64
        assert frames.shape == (5, len(labels), 2, 34, 34)
        sizes.append(len(labels))
        seen.append(labels)
    assert sizes == [64] * 5 + [39]
    np.testing.assert_array_equal(np.sort(np.concatenate(seen)), np.sort(test.labels))
    assert len(DataLoader(test, 64, 5, drop_last=True)) == 5


def test_loader_visits_every_sample_once_and_frames_match(digits):
    _, _, test, _ = digits
    loader = DataLoader(test, batch_size=50, n_frames=4, rng=np.random.default_rng(1))
    totals = np.concatenate([f.sum(axis=(0, 2, 3, 4)) for f, _ in loader])
    np.testing.assert_array_equal(np.sort(totals), np.sort(np.diff(test.offsets)))   # each sample's events, once
    frames, labels = next(iter(DataLoader(test, 3, 4, shuffle=False)))
    np.testing.assert_array_equal(frames[:, 1], to_frames(test[1][0], test.sensor_size, 4))
    np.testing.assert_array_equal(labels, test.labels[:3])


def test_loader_shuffle_reproducible_and_cache_consistent(digits):
    _, _, test, _ = digits
    run = lambda seed: [lab for _, lab in DataLoader(test, 100, 2, rng=np.random.default_rng(seed))]
    a, b, c = run(5), run(5), run(6)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    loader = DataLoader(test, 100, 3, rng=np.random.default_rng(0), shuffle=False)
    first = [f for f, _ in loader]
    second = [f for f, _ in loader]                               # served from the frame cache
    for x, y in zip(first, second):
        np.testing.assert_array_equal(x, y)
    flipped = next(iter(DataLoader(test, 4, 3, shuffle=False, transform=lambda e, s, r: flip_x(e, s))))[0]
    np.testing.assert_array_equal(flipped, first[0][:, :4, :, :, ::-1])
