"""Command line: ``python -m minisnn demo | bench | <method> ...``  (``--help`` on each)."""
import argparse
import os
import sys
import time

import numpy as np


def _digits_loaders(T, batch_size, seed=0):
    """DigitsDVS as (train, validation, test) loaders: 20 % of the training set is held out for model selection."""
    from data_tools.datasets import DigitsDVS, validation_split
    from data_tools.loader import DataLoader
    train, val = validation_split(DigitsDVS(train=True), 0.2, seed)
    test = DigitsDVS(train=False)
    return (DataLoader(train, batch_size, T, rng=np.random.default_rng(seed), shuffle=True),
            DataLoader(val, 128, T, shuffle=False), DataLoader(test, 128, T, shuffle=False))


def demo(args):
    """Train ConvSNN on DigitsDVS, keep the epoch with the best validation accuracy, print its test accuracy."""
    from . import models, train
    t0 = time.perf_counter()
    tr, va, te = _digits_loaders(args.T, args.batch_size, args.seed)
    (W, H, P), K = tr.dataset.sensor_size, len(tr.dataset.classes)
    print(f"DigitsDVS: {len(tr.dataset)} train / {len(va.dataset)} validation / {len(te.dataset)} test samples, "
          f"sensor {W}x{H}, T = {args.T} (data ready in {time.perf_counter() - t0:.1f}s)")
    model = models.ConvSNN(n_classes=K, in_channels=P, input_size=H, rng=np.random.default_rng(args.seed))
    train.fit(model, tr, va, epochs=args.epochs, lr=args.lr, checkpoint=args.out)
    res = train.evaluate(model, te)
    print(f"test accuracy {res['accuracy']:.2%} (the kept epoch's weights, tested once), firing rate "
          f"{res['spike_rate']:.3f}, total {time.perf_counter() - t0:.0f}s; checkpoint: {os.path.abspath(args.out)}")
    return res


METHODS = {"eventrpg": "run_comparison", "asa": "run_comparison", "staa": "run_comparison",
           "hsd": "run_pipeline", "razor": "run_comparison"}


def method(args):
    """Run one paper's comparison (the method beside its baseline) and print its report."""
    import importlib
    import json
    fn = getattr(importlib.import_module(f"minisnn.methods.{args.cmd}"), METHODS[args.cmd])
    kw = {k: v for k, v in (("dataset", args.dataset), ("epochs", args.epochs), ("seed", args.seed)) if v is not None}
    report = fn(quick=args.quick, **kw)
    print(json.dumps(_jsonable(report), indent=1))
    return report


def _jsonable(obj):
    """The scalars, strings and small lists of a nested report (histories and arrays dropped)."""
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items() if k != "history" and _jsonable(v) is not None}
    if isinstance(obj, (list, tuple)):
        items = [_jsonable(v) for v in obj]
        return items if len(items) <= 16 and all(i is not None for i in items) else None
    if isinstance(obj, (str, bool, int, float)) or obj is None:
        return obj
    if isinstance(obj, np.generic) or (isinstance(obj, np.ndarray) and obj.size <= 16):
        return obj.tolist()
    return None


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m minisnn", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="train ConvSNN on DigitsDVS (about 2 minutes on 2 cores)")
    d.add_argument("--epochs", type=int, default=6)
    d.add_argument("--T", type=int, default=10)
    d.add_argument("--batch-size", type=int, default=32)
    d.add_argument("--lr", type=float, default=3e-3)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--out", default="convsnn_digits.npz")
    d.set_defaults(fn=demo)
    b = sub.add_parser("bench", help="time the core kernels, a ConvSNN training step and the data pipeline")
    b.add_argument("--repeats", type=int, default=7)
    b.set_defaults(fn=lambda a: __import__("minisnn.bench", fromlist=["run"]).run(a.repeats))
    r = sub.add_parser("reproduce", help="every method beside its baseline; writes the results table")
    r.add_argument("--quick", action="store_true", help="smoke settings, one dataset per method")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--out", default="results.md")
    r.set_defaults(fn=lambda a: __import__("minisnn.reproduce", fromlist=["reproduce"]).reproduce(a.quick, a.seed, a.out))
    for name in METHODS:
        m = sub.add_parser(name, help=f"train the {name} method beside its baseline and report both")
        m.add_argument("--dataset", default=None, help="digits | motion | fashion (default: the method's own)")
        m.add_argument("--epochs", type=int, default=None)
        m.add_argument("--seed", type=int, default=None)
        m.add_argument("--quick", action="store_true", help="a few batches only (smoke run)")
        m.set_defaults(fn=method)
    args = p.parse_args(argv)
    _keep_freed_memory()
    args.fn(args)
    return 0


def _keep_freed_memory():
    """glibc only: serve every array from the heap (M_MMAP_MAX = 0) and keep freed pages (M_TRIM_THRESHOLD), so each
    step's large temporaries reuse mapped memory instead of page-faulting fresh pages (~0.3 ms per MB on a VM).
    A process-wide setting, so only the command line does it; ``MINISNN_MALLOC_TUNING=0`` turns it off."""
    if os.environ.get("MINISNN_MALLOC_TUNING", "1") == "0":
        return
    try:
        import ctypes
        libc = ctypes.CDLL(None)
        libc.mallopt(-4, 0)          # M_MMAP_MAX: no mmap'ed chunks, even above 32 MB
        libc.mallopt(-1, 1 << 30)    # M_TRIM_THRESHOLD
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


if __name__ == "__main__":
    sys.exit(main())
