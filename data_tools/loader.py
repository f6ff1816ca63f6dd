"""Batches of frames for training: ``for frames, labels in DataLoader(ds, 32, n_frames=8, rng=rng)``.

``frames`` is float32 ``[T, N, P, H, W]`` (time-first, as the library's layers expect), ``labels`` int64 ``[N]``.
"""
import numpy as np

from .frames import to_frames


class DataLoader:
    """Iterate a dataset (``ds[i] -> (events, label)``, ``ds.sensor_size``) in batches of frames.

    ``shuffle``: a fresh permutation from ``rng`` every epoch (``rng=None`` -> ``default_rng(0)``).
    ``transform(events, sensor_size, rng) -> events`` augments each sample before framing.  Without a
    transform the frames never change, so with ``cache_frames`` each sample is framed once (on its first
    visit) and stored as uint16 counts (float32 if a count exceeds 65535).
    """

    def __init__(self, dataset, batch_size, n_frames, rng=None, shuffle=True, transform=None,
                 split_by="number", drop_last=False, cache_frames=True):
        if batch_size < 1 or n_frames < 1:
            raise ValueError(f"batch_size and n_frames must be >= 1, got {batch_size}, {n_frames}")
        self.dataset, self.batch_size, self.n_frames = dataset, int(batch_size), int(n_frames)
        self.rng = np.random.default_rng(0) if rng is None else rng
        self.shuffle, self.transform, self.split_by, self.drop_last = shuffle, transform, split_by, drop_last
        self._cache = {} if cache_frames and transform is None else None

    def __len__(self):
        n, b = len(self.dataset), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def _frames(self, i):
        if self._cache is not None and i in self._cache:
            return self._cache[i]
        events, _ = self.dataset[i]
        size = self.dataset.sensor_size
        if self.transform is not None:
            events = self.transform(events, size, self.rng)
        frames = to_frames(events, size, self.n_frames, self.split_by)
        if self._cache is not None:
            self._cache[i] = frames.astype(np.uint16) if frames.max(initial=0) <= 65535 else frames
        return frames

    def __iter__(self):
        n = len(self.dataset)
        order = self.rng.permutation(n) if self.shuffle else np.arange(n)
        labels = np.asarray(self.dataset.labels, np.int64)
        for k in range(len(self)):
            idx = order[k * self.batch_size:(k + 1) * self.batch_size]
            frames = np.stack([self._frames(i) for i in idx], axis=1).astype(np.float32, copy=False)
            yield frames, labels[idx]
