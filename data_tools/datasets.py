"""Datasets: ``len(ds)``, ``ds[i] -> (events, label)``, ``ds.sensor_size``, ``ds.classes``, ``ds.labels``.

Offline first.  ``DigitsDVS`` (the default for demos, tests and tutorials) converts the 1,797 8x8
digits shipped inside scikit-learn with the saccade simulator; ``FashionDVS`` / ``MNISTDVS`` do the
same for IDX files; ``MotionDVS`` is a synthetic task that needs the order of events in time.
Converted datasets are cached as one uncompressed, pickle-free ``.npz`` (all events concatenated +
sample offsets) under ``cache_dir()``.  The folder loaders read real recordings you already have;
nothing is ever downloaded.
"""
import gzip
import os
import re
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np

from . import io
from .events import EVENT_DTYPE, slice_time
from .simulate import dvs_batch, saccade_batch


def cache_dir(root=None):
    """``root`` if given, else ``$MINISNN_CACHE``, else ``$XDG_CACHE_HOME/minisnn``, else ``~/.cache/minisnn``."""
    if root is not None:
        return Path(root)
    if os.environ.get("MINISNN_CACHE"):
        return Path(os.environ["MINISNN_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "minisnn"


def pack(event_list):
    """List of event arrays -> (concatenated events, offsets) with sample i = events[off[i]:off[i+1]]."""
    offsets = np.concatenate([[0], np.cumsum([len(e) for e in event_list])]).astype(np.int64)
    return np.concatenate(event_list + [np.zeros(0, EVENT_DTYPE)]), offsets


def _save_packed(path, events, offsets, labels, sensor_size):
    """Write the cache atomically (temp file + rename), without pickle."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, events=events, offsets=offsets, labels=labels, sensor_size=np.array(sensor_size))
    os.replace(tmp, path)


def _load_packed(path):
    """``(events, offsets, labels, sensor_size)``; None if the file is missing; ValueError if corrupt."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            ev, off, lab, size = (z[k] for k in ("events", "offsets", "labels", "sensor_size"))
    except Exception as e:   # zip/npy parsing (bad CRC, truncation, missing keys) fails in many ways
        raise ValueError(f"{path}: unreadable cache ({type(e).__name__}: {e})") from None
    ok = (ev.dtype == EVENT_DTYPE and off.ndim == lab.ndim == 1 and len(off) == len(lab) + 1
          and off[0] == 0 and off[-1] == len(ev) and np.all(np.diff(off) >= 0) and size.shape == (3,))
    if not ok:
        raise ValueError(f"{path}: inconsistent cache arrays")
    return ev, off, lab.astype(np.int64), tuple(int(v) for v in size)


def _cached(path, build):
    """Load the packed cache at ``path``; (re)build it with ``build()`` when missing or corrupt."""
    try:
        data = _load_packed(path)
    except ValueError as e:
        warnings.warn(f"{e}; rebuilding it")
        data = None
    if data is None:
        data = build()
        _save_packed(path, *data)
    return data


class _Packed:
    """A dataset held in memory as concatenated events + offsets."""

    def _set(self, events, offsets, labels, index=None):
        if index is not None:                                   # keep only the samples in ``index``
            index = np.sort(index)
            lens, keep = np.diff(offsets), np.zeros(len(offsets) - 1, bool)
            keep[index] = True
            events = events[np.repeat(keep, lens)]
            offsets, labels = np.concatenate([[0], np.cumsum(lens[index])]), labels[index]
        self.events, self.offsets, self.labels = events, offsets, np.asarray(labels, np.int64)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        i = range(len(self))[i]                                 # IndexError when out of range
        return self.events[self.offsets[i]:self.offsets[i + 1]].copy(), int(self.labels[i])


class Subset:
    """The samples ``indices`` of ``dataset`` (same ``sensor_size``, ``classes``; ``labels`` restricted)."""

    def __init__(self, dataset, indices):
        self.dataset, self.indices = dataset, np.asarray(indices, np.int64)
        if self.indices.ndim != 1 or (self.indices.size and (self.indices.min() < 0 or self.indices.max() >= len(dataset))):
            raise ValueError(f"indices must be a 1-D array of positions in [0, {len(dataset)})")
        self.sensor_size, self.classes = dataset.sensor_size, dataset.classes
        self.labels = np.asarray(dataset.labels)[self.indices]

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        return self.dataset[int(self.indices[i])]


def stratified_split(labels, test_fraction, seed):
    """Per class, a seeded shuffle puts round(test_fraction · n_class) samples in test -> (train, test)."""
    rng = np.random.default_rng(seed)
    test = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:round(test_fraction * np.sum(labels == c))]
                           for c in np.unique(labels)])
    is_test = np.isin(np.arange(len(labels)), test)
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def validation_split(dataset, fraction=0.2, seed=0):
    """(train, val) Subsets of a training set: a seeded, stratified ``fraction`` held out for model selection."""
    if not 0 < fraction < 1:
        raise ValueError(f"validation_split: fraction must lie in (0, 1), got {fraction}")
    train, val = stratified_split(np.asarray(dataset.labels), fraction, seed)
    if len(val) == 0 or len(train) == 0:
        raise ValueError(f"validation_split: {len(dataset)} samples are too few for fraction {fraction}")
    return Subset(dataset, train), Subset(dataset, val)


def digits_images(scale=2.5, margin=4):
    """scikit-learn's 1,797 8x8 digits (0..16) -> 28x28 in [0, 1] laid out like MNIST: bicubic upsampling by
    ``scale`` (2.5: 20x20, clipped to [0, 1]), centred with a ``margin`` (4 px).  Returns (images, labels)."""
    from scipy.ndimage import zoom
    try:
        from sklearn.datasets import load_digits                 # imported here only: keeps import cheap
    except ImportError:
        raise ModuleNotFoundError('DigitsDVS needs scikit-learn, which ships the digits: pip install -e ".[data]"',
                                  name="sklearn") from None
    d = load_digits()
    up = np.clip(zoom(d.images / 16.0, (1, scale, scale), order=3), 0.0, 1.0)
    return np.pad(up, ((0, 0), (margin, margin), (margin, margin))), d.target.astype(np.int64)


def convert_digits(seed=0):
    """All 1,797 digits through the saccade simulator -> (events, offsets, labels, sensor_size)."""
    images, labels = digits_images()
    events, size = saccade_batch(images, np.random.default_rng(seed))
    return (*pack(events), labels, size)


class DigitsDVS(_Packed):
    """Neuromorphic scikit-learn digits: N-MNIST-style saccades on a 34x34 sensor, ~4.5 k events each.

    A fixed stratified split (``test_fraction``, seeded) gives train (1,438) / test (359) samples.
    """
    classes = [str(d) for d in range(10)]

    def __init__(self, root=None, train=True, seed=0, test_fraction=0.2):
        path = cache_dir(root) / f"digits_dvs_seed{seed}_v1.npz"
        events, offsets, labels, self.sensor_size = _cached(path, lambda: convert_digits(seed))
        self._set(events, offsets, labels, stratified_split(labels, test_fraction, seed)[0 if train else 1])


def clutter_images(seed=0, canvas=28, n_distractors=3, patch=7):
    """Each digit upsampled to 16 x 16 at a uniform place of a ``canvas``² frame, beside ``n_distractors`` crops
    (``patch``², uniform) of random other digits placed where they do not touch it (50 tries each).
    Returns (images [N, canvas, canvas] in [0, 1], labels, boxes [N, 4] = each digit's (x0, y0, x1, y1))."""
    digits, labels = digits_images(2.0, 0)
    rng, s = np.random.default_rng(seed), digits.shape[1]
    boxes = rng.integers(0, canvas - s + 1, (len(digits), 2))     # the first draw: ClutteredDigitsDVS repeats it
    out = np.zeros((len(digits), canvas, canvas))
    for i, (x0, y0) in enumerate(boxes):
        for _ in range(n_distractors):
            for _ in range(50):
                px, py = rng.integers(0, canvas - patch + 1, 2)
                if px + patch <= x0 or px >= x0 + s or py + patch <= y0 or py >= y0 + s:
                    break
            cx, cy = rng.integers(0, s - patch + 1, 2)
            crop = digits[rng.integers(len(digits)), cy:cy + patch, cx:cx + patch]
            out[i, py:py + patch, px:px + patch] = np.maximum(out[i, py:py + patch, px:px + patch], crop)
        out[i, y0:y0 + s, x0:x0 + s] = digits[i]
    return out, labels, np.concatenate([boxes, boxes + s - 1], 1)


def convert_clutter(seed=0):
    """:func:`clutter_images` through the saccade simulator -> (events, offsets, labels, sensor_size)."""
    images, labels, _ = clutter_images(seed)
    events, size = saccade_batch(images, np.random.default_rng(seed))
    return (*pack(events), labels, size)


class ClutteredDigitsDVS(_Packed):
    """DigitsDVS among distractors, where localisation matters (N-Caltech101's clutter, EventRPG §5.1.2): a 16 x 16
    digit at a random place of the 34 x 34 sensor beside three 7 x 7 crops of other digits (:func:`clutter_images`,
    then saccades).  ``boxes`` [N, 4]: each digit's (x0, y0, x1, y1) on the sensor, the saccade's 7 px included.
    The split is DigitsDVS's (1,438 / 359)."""
    classes = [str(d) for d in range(10)]

    def __init__(self, root=None, train=True, seed=0, test_fraction=0.2):
        path = cache_dir(root) / f"clutter_dvs_seed{seed}_v1.npz"
        events, offsets, labels, self.sensor_size = _cached(path, lambda: convert_clutter(seed))
        index = np.sort(stratified_split(labels, test_fraction, seed)[0 if train else 1])
        self._set(events, offsets, labels, index)
        xy = np.random.default_rng(seed).integers(0, 28 - 16 + 1, (len(labels), 2))[index]   # clutter_images' 1st draw
        self.boxes = np.minimum(np.concatenate([xy, xy + 15 + 7], 1), 33)                      # 16 px + the saccade


_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def load_idx(path):
    """Read an IDX file (MNIST format; gzip-compressed or not) into a NumPy array.

    Layout: bytes 0, 0, a type code (0x08 = uint8, ...), the number of dimensions d; then d big-endian
    uint32 sizes; then the data, big-endian, row-major.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise ValueError(f"{path}: corrupt gzip data ({e})") from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _IDX_TYPES:
        raise ValueError(f"{path}: not an IDX file (magic bytes {raw[:4].hex()})")
    head = 4 + 4 * raw[3]
    if len(raw) < head:
        raise ValueError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{raw[3]}I", raw[4:head])
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    if len(raw) - head != int(np.prod(dims)) * dtype.itemsize:
        raise ValueError(f"{path}: shape {dims} needs {int(np.prod(dims)) * dtype.itemsize} data bytes, "
                         f"found {len(raw) - head}")
    return np.frombuffer(raw, dtype, offset=head).reshape(dims).astype(dtype.newbyteorder("="))


class _IDXDVS(_Packed):
    """IDX images (28x28, uint8) converted with saccades, cached per (files, split, limit, seed)."""
    default_root, source = None, None

    def __init__(self, root=None, train=True, limit=None, seed=0, cache_root=None):
        root = Path(root or self.default_root)
        split = "train" if train else "t10k"
        paths = [self._find(root, f"{split}-images-idx3-ubyte"), self._find(root, f"{split}-labels-idx1-ubyte")]
        tag = zlib.crc32(str(paths[0].resolve()).encode())           # different files -> different cache
        key = f"{type(self).__name__.lower()}_{split}_{limit or 'all'}_seed{seed}_{tag:08x}.npz"

        def build():
            images, labels = load_idx(paths[0])[:limit], load_idx(paths[1])[:limit]
            if images.ndim != 3 or len(images) != len(labels):
                raise ValueError(f"{paths[0]}: need [N, h, w] images matching {len(labels)} labels")
            events, size = saccade_batch(images / 255.0, np.random.default_rng(seed))
            return (*pack(events), labels.astype(np.int64), size)
        events, offsets, labels, self.sensor_size = _cached(cache_dir(cache_root) / key, build)
        self._set(events, offsets, labels)

    def _find(self, root, stem):
        for name in (stem, stem + ".gz"):
            if (root / name).is_file():
                return root / name
        raise FileNotFoundError(f"{type(self).__name__}: {stem}[.gz] not found in {root}. "
                                f"Get the IDX files from {self.source} and pass root=<folder>.")


class FashionDVS(_IDXDVS):
    """Fashion-MNIST converted to events (Debian: ``apt install dataset-fashion-mnist``)."""
    classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot"]
    default_root = "/usr/share/datasets/fashion-mnist"
    source = ("the Debian package dataset-fashion-mnist (installs into /usr/share/datasets/fashion-mnist) "
              "or https://github.com/zalandoresearch/fashion-mnist")


class MNISTDVS(_IDXDVS):
    """MNIST converted to events with simulated saccades (not the recorded 'MNIST-DVS' dataset)."""
    classes = [str(d) for d in range(10)]
    default_root = "/usr/share/datasets/mnist"
    source = "https://yann.lecun.com/exdb/mnist/ (train-*/t10k-* IDX files)"


def motion_video(label, size=34, n_steps=64, offset=0.0, radius=3.5, theta0=0.0, bg=0.2, fg=0.8):
    """One ``[n_steps, size, size]`` clip of MotionDVS class ``label``.

    Classes 0..7: a disc of ``radius`` crossing the sensor in direction k·45° (0 = right, y points
    down), on a line ``offset`` px from the centre; it starts and ends fully off the sensor, so a
    pixel sees the same rise and fall whichever way the disc goes.  Class k and k + 4 play the same
    clip in opposite time order (the perpendicular axis is taken from the direction mod 180°).
    Classes 8 / 9: a bar of half-width ``radius / 2`` through the centre rotating 180° clockwise /
    counter-clockwise from ``theta0``; both sweep every pixel once.  Intensity: bg + (fg - bg)·coverage,
    coverage = clip(edge + 1/2 - distance, 0, 1) (anti-aliased).
    """
    c = (size - 1) / 2
    yy, xx = np.mgrid[:size, :size] - c
    s = np.linspace(0.0, 1.0, n_steps)[:, None, None]
    if label < 8:
        phi = np.pi / 4 * (label % 4)                           # axis; classes >= 4 run it backwards
        u, n = np.array([np.cos(phi), np.sin(phi)]), np.array([-np.sin(phi), np.cos(phi)])
        reach = np.sqrt(2) * c + radius + 1
        pos = (2 * s - 1) * reach * (1 if label < 4 else -1)    # position along the axis
        dist = np.hypot(xx - pos * u[0] - offset * n[0], yy - pos * u[1] - offset * n[1])
        cover = np.clip(radius + 0.5 - dist, 0.0, 1.0)
    else:
        theta = theta0 + np.pi * s * (1 if label == 8 else -1)  # y down: increasing angle is clockwise
        dist = np.abs(xx * np.sin(theta) - yy * np.cos(theta))  # distance to the line at angle theta
        cover = np.clip(radius / 2 + 0.5 - dist, 0.0, 1.0)
    return bg + (fg - bg) * cover


class MotionDVS(_Packed):
    """Synthetic temporal task, 10 balanced classes: a disc crossing the sensor in one of 8 directions,
    or a bar rotating cw / ccw.  Opposite classes give (nearly) the same time-summed frame, so only
    the order of events tells them apart.  Per sample: offset ~ U(-6, 6) px, radius ~ U(2.5, 4.5),
    theta0 ~ U(0, π); ``duration_us`` long, simulated with ``dvs_events`` (extra kwargs go to it).
    """
    classes = ["right", "down-right", "down", "down-left", "left", "up-left", "up", "up-right",
               "rotate cw", "rotate ccw"]

    def __init__(self, train=True, n_samples=500, seed=0, size=34, n_steps=64, duration_us=320_000, **dvs_kw):
        rng = np.random.default_rng([seed, int(bool(train))])
        labels = rng.permutation(np.arange(n_samples) % 10)
        videos = np.stack([motion_video(k, size, n_steps, rng.uniform(-6, 6), rng.uniform(2.5, 4.5),
                                        rng.uniform(0, np.pi)) for k in labels]).astype(np.float32)
        times = np.rint(np.linspace(0, duration_us, n_steps)).astype(np.int64)
        events = [e for i in range(0, n_samples, 32) for e in dvs_batch(videos[i:i + 32], times, rng, **dvs_kw)]
        self.sensor_size = (size, size, 2)
        self._set(*pack(events), labels)


def load(name, seed=0, n_train=None, n_test=None, **kwargs):
    """(train, test) of an embedded/simulated dataset by name — "digits", "clutter", "motion" or "fashion" — the
    one place the method comparisons get their data. ``n_train`` / ``n_test`` take seeded subsets (for
    "motion" they are the numbers of clips simulated); ``kwargs`` go to the dataset (e.g. ``size`` for motion).
    """
    if name == "motion":
        return (MotionDVS(True, n_train or 500, seed, **kwargs), MotionDVS(False, n_test or 200, seed, **kwargs))
    if name == "fashion":  # 70k images: convert only the first n_train / n_test
        return FashionDVS(train=True, limit=n_train, seed=seed, **kwargs), FashionDVS(False, n_test, seed=seed, **kwargs)
    if name not in ("digits", "clutter"):
        raise ValueError(f"dataset must be 'digits', 'clutter', 'motion' or 'fashion', got {name!r}")
    cls = DigitsDVS if name == "digits" else ClutteredDigitsDVS
    train, test = cls(train=True, seed=seed, **kwargs), cls(train=False, seed=seed, **kwargs)
    rng = np.random.default_rng(seed)
    pick = lambda ds, n: ds if n is None or n >= len(ds) else Subset(ds, np.sort(rng.permutation(len(ds))[:n]))
    return pick(train, n_train), pick(test, n_test)


def _missing(name, where, layout, source):
    return FileNotFoundError(f"{name}: no data found under {where}.\nExpected layout:\n{layout}\n"
                             f"Get it from {source} (minisnn never downloads).")


class _Files:
    """A dataset read lazily from one file per sample: ``files``, ``labels``, ``_read(path)``."""

    def _scan(self, base, pattern, layout, source):
        files = [(f, k) for k, c in enumerate(self.classes) for f in sorted((Path(base) / c).glob(pattern))]
        if not files:
            raise _missing(type(self).__name__, base, layout, source)
        self.files = [f for f, _ in files]
        self.labels = np.array([k for _, k in files], np.int64)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        i = range(len(self))[i]
        return self._read(self.files[i]), int(self.labels[i])


class NMNIST(_Files):
    """N-MNIST (Orchard et al. 2015): ``root/{Train,Test}/<digit>/*.bin``, 34x34 ATIS."""
    classes, sensor_size = [str(d) for d in range(10)], (34, 34, 2)

    def __init__(self, root, train=True):
        self._scan(Path(root) / ("Train" if train else "Test"), "*.bin",
                   "  <root>/Train/0/00002.bin ... <root>/Train/9/*.bin, <root>/Test/<digit>/*.bin",
                   "https://www.garrickorchard.com/datasets/n-mnist (Train.zip, Test.zip)")

    def _read(self, path):
        return io.read_nmnist(path, sensor_size=self.sensor_size)[0]


class CIFAR10DVS(_Files):
    """CIFAR10-DVS (Li et al. 2017), AEDAT 2.0: ``root/<class>/*.aedat``, 128x128.  No official split:
    ``train=None`` gives all samples, True / False the first 90% / last 10% of each class (sorted names)."""
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    sensor_size = (128, 128, 2)

    def __init__(self, root, train=None):
        self._scan(root, "*.aedat", "  <root>/airplane/cifar10_airplane_0.aedat ... <root>/truck/*.aedat",
                   "https://figshare.com/s/d03a91081824536f12a8")
        if train is not None:
            rank = np.concatenate([np.arange(n) / n for n in np.bincount(self.labels, minlength=10) if n])
            keep = np.flatnonzero((rank < 0.9) == bool(train))
            self.files, self.labels = [self.files[i] for i in keep], self.labels[keep]

    def _read(self, path):
        return io.read_aedat2(path, convention="cifar10dvs")[0]


class NCars(_Files):
    """N-Cars (Sironi et al. 2018), Prophesee DAT: ``root/{train,test}/{background,cars}/*.dat``."""
    classes, sensor_size = ["background", "cars"], (120, 100, 2)

    def __init__(self, root, train=True):
        sub = [d for d in (("train", "n-cars_train") if train else ("test", "n-cars_test")) if (Path(root) / d).is_dir()]
        self._scan(Path(root) / (sub[0] if sub else "train" if train else "test"), "*.dat",
                   "  <root>/train/cars/obj_004396_td.dat, <root>/train/background/*.dat, <root>/test/...",
                   "https://www.prophesee.ai/2018/03/13/dataset-n-cars/")

    def _read(self, path):
        return io.read_dat(path, sensor_size=self.sensor_size)[0]


class DVSGesture(_Files):
    """DVS128 Gesture (Amir et al. 2017): ``root/userNN_<lighting>.aedat`` + ``..._labels.csv``, one sample
    per labelled gesture (start <= t < end); users 1-23 train, 24-29 test."""
    classes = ["hand clap", "right hand wave", "left hand wave", "right arm cw", "right arm ccw", "left arm cw",
               "left arm ccw", "arm roll", "air drums", "air guitar", "other gestures"]
    sensor_size = (128, 128, 2)

    def __init__(self, root, train=True):
        self.files, labels, self._last = [], [], (None, None)
        for csv in sorted(Path(root).glob("user*_*_labels.csv")):
            aedat = csv.with_name(csv.name[:-len("_labels.csv")] + ".aedat")
            user = re.match(r"user(\d+)_", csv.name)
            if user and aedat.is_file() and (int(user.group(1)) <= 23) == bool(train):
                for label, start, end in io.read_gesture_labels(csv):
                    self.files.append((aedat, start, end))
                    labels.append(label)
        if not self.files:
            raise _missing("DVSGesture", root, "  <root>/user01_fluorescent.aedat + <root>/user01_fluorescent_labels.csv"
                           " ... user29_*", "https://research.ibm.com/interactive/dvsgesture/ (DvsGesture.tar.gz)")
        self.labels = np.array(labels, np.int64)

    def _read(self, item):
        path, start, end = item
        if self._last[0] != path:                               # gestures of one file come in a row
            self._last = (path, io.read_aedat31(path)[0])
        return slice_time(self._last[1], start, end).copy()
