"""Throughput of the data pipeline: ``python -m data_tools.bench`` prints the medians of ``run()``."""
import os
import tempfile
import time

import numpy as np

from . import io
from .datasets import convert_digits
from .events import make_events
from .frames import to_frames


def _median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def run(repeats=5, n_events=1_000_000):
    """Medians over ``repeats`` runs: DigitsDVS conversion (1,797 samples, s), events -> frames and
    N-MNIST ``.bin`` reading (M events/s, on ``n_events`` synthetic events)."""
    rng = np.random.default_rng(0)
    ev = make_events(rng.integers(0, 34, n_events), rng.integers(0, 34, n_events),
                     np.sort(rng.integers(0, 10**6, n_events)), rng.integers(0, 2, n_events))
    convert_digits(0)                                       # warm-up: imports scikit-learn
    out = {"digits_convert_s": _median_time(lambda: convert_digits(0), repeats),
           "frames_Mev_s": n_events / _median_time(lambda: to_frames(ev, (34, 34, 2), 10), repeats) / 1e6}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.bin")
        io.write_nmnist(path, ev)
        out["nmnist_read_Mev_s"] = n_events / _median_time(lambda: io.read_nmnist(path), repeats) / 1e6
    return out


if __name__ == "__main__":
    for key, value in run().items():
        print(f"{key:20s} {value:8.2f}")
