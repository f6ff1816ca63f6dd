"""minisnn's command line: train the demo model, time the hot paths, or measure the papers' claims.

  python -m minisnn demo                 train ConvSNN on DigitsDVS and report its test accuracy
  python -m minisnn bench                medians of the training step, inference and the kernels
  python -m minisnn reproduce            every paper's claims over seeds: results.md and results.png
  python -m minisnn asa --seeds 5        one paper's claims (eventrpg, asa, staa, hsd, razor)

Add --help after a command for its options.
"""
import argparse
import contextlib
import os
import sys
import time

import numpy as np

from .claims import PAPERS, reproduce


def demo(args):
    """Train ConvSNN on DigitsDVS, keep the epoch with the best validation accuracy, print its test accuracy."""
    from data_tools.datasets import DigitsDVS, cache_dir, validation_split
    from data_tools.loader import DataLoader
    from . import models, train
    t0 = time.perf_counter()
    print(f"DigitsDVS is built once (~10 s) and cached in {cache_dir()} (~105 MB; set MINISNN_CACHE to move it)")
    train_set, val_set = validation_split(DigitsDVS(train=True), 0.2, args.seed)
    tr = DataLoader(train_set, args.batch_size, args.T, rng=np.random.default_rng(args.seed), shuffle=True)
    va, te = (DataLoader(ds, 128, args.T, shuffle=False) for ds in (val_set, DigitsDVS(train=False)))
    (W, H, P), K = tr.dataset.sensor_size, len(tr.dataset.classes)
    print(f"DigitsDVS: {len(tr.dataset)} train / {len(va.dataset)} validation / {len(te.dataset)} test samples, "
          f"sensor {W}x{H}, T = {args.T} (data ready in {time.perf_counter() - t0:.1f}s)")
    model = models.ConvSNN(n_classes=K, in_channels=P, input_size=H, rng=np.random.default_rng(args.seed))
    train.fit(model, tr, va, epochs=args.epochs, lr=args.lr, checkpoint=args.out)
    res = train.evaluate(model, te)
    print(f"test accuracy {res['accuracy']:.2%} (the kept epoch's weights, tested once), firing rate "
          f"{res['spike_rate']:.3f}, total {time.perf_counter() - t0:.0f}s; checkpoint: {os.path.abspath(args.out)}")
    return res


def claims(args):
    """Run the claims of every paper (``reproduce``) or of one (``<paper>``) and print the table."""
    if getattr(args, "fashion_root", None):
        from data_tools.datasets import FashionDVS
        FashionDVS.default_root = args.fashion_root
    if getattr(args, "table", None):                     # eventrpg --table table1 | augment: every arm in full
        from .methods.eventrpg import table
        return table(args.table, args.seeds, args.quick, print if args.verbose else None)
    only = None if args.cmd == "reproduce" else args.cmd
    stem = args.out.rsplit(".", 1)[0]
    reproduce(args.seeds, args.quick, only, args.out, stem + ".png", log=print if args.verbose else _quiet)
    print(f"written: {args.out}, {stem}.png, {stem}.json")


def _quiet(line):
    """Progress without the epoch lines: only the '=== experiment, seed ===' headers and the final table."""
    if line.startswith("===") or line.startswith("Claims table"):
        print(line, flush=True)


def _parser():
    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = argparse.ArgumentParser(prog="python -m minisnn", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True, metavar="command")
    d = sub.add_parser("demo", formatter_class=fmt, help="train ConvSNN on DigitsDVS (30-120 s on 2 cores)",
                       description="Train ConvSNN on DigitsDVS, select the epoch on a validation split, test once.")
    d.add_argument("--epochs", type=int, default=6, help="training epochs")
    d.add_argument("--T", type=int, default=10, help="time steps (frames per sample)")
    d.add_argument("--batch-size", type=int, default=32, help="training batch size")
    d.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate (cosine-annealed)")
    d.add_argument("--seed", type=int, default=0, help="initialisation, shuffling and validation-split seed")
    d.add_argument("--out", default="convsnn_digits.npz", help="checkpoint path (the kept epoch's weights)")
    d.set_defaults(fn=demo)
    b = sub.add_parser("bench", formatter_class=fmt, help="time the training step, inference and the kernels")
    b.add_argument("--repeats", type=int, default=7, help="timed repetitions per measurement (median reported)")
    b.add_argument("--peers", action="store_true", help="also spikingjelly, snntorch, PyTorch (those installed), as ratios")
    b.set_defaults(fn=lambda a: __import__("minisnn.bench", fromlist=["run"]).run(a.repeats, a.peers))
    runs = [("reproduce", "every paper's claims over seeds: writes the claims table and its figure", "results.md")]
    runs += [(k, f"the claims of {v} over seeds", f"results_{k}.md") for k, v in PAPERS.items()]
    for name, text, out in runs:
        m = sub.add_parser(name, formatter_class=fmt, help=text, description=text[0].upper() + text[1:] +
                           ": mean ± 95 % CI of method and baseline, their paired difference, the verdict.")
        m.add_argument("--seeds", type=int, default=5, help="training seeds per experiment (>= 2)")
        m.add_argument("--quick", action="store_true", help="tiny data and 1 epoch: checks the pipeline, not claims")
        m.add_argument("--out", default=out, help="the Markdown table; its figure (.png) and results (.json) beside it")
        m.add_argument("--fashion-root", default=None, help="folder of the Fashion-MNIST IDX files, if you have them")
        m.add_argument("--verbose", action="store_true", help="print every epoch's progress line")
        if name == "eventrpg":
            m.add_argument("--table", choices=("table1", "augment"), help="print Table 1 or Tables 3-5 in full")
        m.set_defaults(fn=claims)
    return p


def main(argv=None):
    p = _parser()
    args = p.parse_args(argv)
    for name, low in (("epochs", 1), ("T", 1), ("batch_size", 1), ("repeats", 1), ("seeds", 2)):
        if getattr(args, name, low) < low:
            p.error(f"--{name.replace('_', '-')} must be >= {low}, got {getattr(args, name)}")
    _keep_freed_memory()
    try:
        args.fn(args)
    except (ValueError, FileNotFoundError, ModuleNotFoundError) as exc:   # the user's input or setup
        if os.environ.get("MINISNN_TRACEBACK"):
            raise
        hint = ' (install the extras: pip install -e ".[data]")' if isinstance(exc, ModuleNotFoundError) and \
            "pip install" not in str(exc) else ""
        print(f"python -m minisnn {args.cmd}: error: {exc}{hint}", file=sys.stderr)
        return 2
    return 0


def _keep_freed_memory():
    """glibc only: serve every array from the heap (M_MMAP_MAX = 0) and keep freed pages (M_TRIM_THRESHOLD), so each
    step's large temporaries reuse mapped memory instead of page-faulting fresh pages (~0.3 ms per MB on a VM).
    A process-wide setting, so only the command line does it; ``MINISNN_MALLOC_TUNING=0`` turns it off."""
    if os.environ.get("MINISNN_MALLOC_TUNING", "1") == "0":
        return
    with contextlib.suppress(OSError, AttributeError):   # not glibc: nothing to tune
        import ctypes
        libc = ctypes.CDLL(None)
        libc.mallopt(-4, 0)          # M_MMAP_MAX: no mmap'ed chunks, even above 32 MB
        libc.mallopt(-1, 1 << 30)    # M_TRIM_THRESHOLD


if __name__ == "__main__":
    sys.exit(main())
