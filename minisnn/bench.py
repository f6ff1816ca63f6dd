"""``python -m minisnn bench [--peers]``: medians of repeated runs, and ratios of runs made side by side (a shared VM's
speed moves 2x within minutes: :func:`machine`). Relevance is timed against a training step in one process, calls
alternated; ``--peers`` runs the same ConvSNN step and inference in spikingjelly, snntorch and plain PyTorch
(``tests/bench_peers.py``), each in a fresh process interleaved with minisnn's: minisnn / peer."""
import importlib.util
import os
import resource
import time

import numpy as np

from . import core, losses, models, nn, optim, relevance
from .autograd import Tensor, no_grad
from .neurons import Sigmoid, multistep_fused

GOALS = {"sltrp_per_train_step": 1.0, "slrp_per_train_step": 0.4, "train": 0.7, "inference": 0.5}


def _seconds(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def paired_seconds(runs, repeats=7):
    """{name: seconds per round} of the callables ``runs`` ({name: fn}), timed in turn in each of ``repeats`` rounds:
    paired (interleaved, so that the machine's load falls on all alike); compare them by per-round ratios."""
    return dict(zip(runs, np.array([[_seconds(fn) for fn in runs.values()] for _ in range(repeats)]).T))


def _median_ms(fn, repeats):
    fn()  # warm-up
    return 1e3 * float(np.median([_seconds(fn) for _ in range(repeats)]))


def _bench_net(T, N):
    """ConvSNN, a sparse [T, N, 2, 34, 34] batch with labels, and its training step (cross-entropy, Adam)."""
    rng = np.random.default_rng(0)
    x, y = (rng.random((T, N, 2, 34, 34)) < 0.05).astype(np.float32), rng.integers(0, 10, N)
    model = models.ConvSNN()
    opt = optim.Adam(model.parameters(), lr=1e-3)

    def step():
        model.train()
        loss = losses.cross_entropy(model(Tensor(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, x, y, step


def convsnn_step(T=10, N=32, repeats=7):
    """(train step ms, inference ms) of ConvSNN on sparse [T, N, 2, 34, 34] input with Adam."""
    model, x, _, step = _bench_net(T, N)
    train_ms = _median_ms(step, repeats)
    model.eval()

    def infer():
        with no_grad():
            model(Tensor(x))
    return train_ms, _median_ms(infer, repeats)


def relevance_vs_step(T=10, N=32, repeats=7):
    """(SLTRP, SLRP) saliency of the bench batch / one training step, medians of the ratios. BN momentum 1 keeps the
    running statistics at the batch's, so that the untrained net spikes in eval mode (else no relevance is left)."""
    model, x, y, step = _bench_net(T, N)
    for m in model:
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 1.0
    calls = {"step": step, **{m: lambda m=m: relevance.saliency(model, x, y, m) for m in relevance.MODES}}
    t = paired_seconds(calls, repeats + 1)   # round 0 warms up, calibrates
    return tuple(float(np.median(t[m][1:] / t["step"][1:])) for m in relevance.MODES)


def lif_fwd_bwd(shape=(16, 32, 16, 32, 32), repeats=7):
    """Fused LIF forward + BPTT backward (Sigmoid surrogate) in ms."""
    x = Tensor(np.random.default_rng(0).normal(0.5, 1.0, shape).astype(np.float32), requires_grad=True)
    g = np.ones(shape, np.float32)

    def run():
        x.grad = None  # as a training step's zero_grad: time the op, not accumulating into an old .grad
        multistep_fused(x, 0.5, 0.5, surrogate=Sigmoid(4.0)).backward(g)
    return _median_ms(run, repeats)


def machine(repeats=15):
    """How fast this machine is right now: (GFLOP/s of a 512×512 float32 matmul on minisnn's BLAS threads, GB/s read
    plus written by a 64 MB copy). Both move with a shared VM's load: compare runs only at similar values."""
    a, x = np.ones((512, 512), np.float32), np.ones(1 << 24, np.float32)
    y = np.empty_like(x)
    gemm_ms = _median_ms(lambda: a @ a, repeats)
    copy_ms = _median_ms(lambda: np.copyto(y, x), repeats)
    return 2 * 512 ** 3 / gemm_ms / 1e6, 2 * x.nbytes / copy_ms / 1e6


def peers(log=print, **kw):
    """Run ``tests/bench_peers.py`` of a source checkout (PyTorch code, not part of the library): minisnn / peer."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "bench_peers.py")
    if not os.path.exists(path):
        log("peers skipped: tests/bench_peers.py comes with the source checkout")
        return {}
    spec = importlib.util.spec_from_file_location("minisnn_peers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.peers(log=log, **kw)


def run(repeats=7, with_peers=False, log=print):
    """Run every benchmark; print a table and return the numbers."""
    out = {"backend": core.backend()}
    out["machine_gemm_gflops"], out["machine_copy_gb_s"] = machine()
    out["train_step_ms"], out["inference_ms"] = convsnn_step(repeats=repeats)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # after the ConvSNN runs
    out["sltrp_per_train_step"], out["slrp_per_train_step"] = relevance_vs_step(repeats=repeats)
    out["lif_fwd_bwd_ms"] = lif_fwd_bwd(repeats=repeats)
    try:
        from data_tools import bench as data_bench
        out.update(data_bench.run(repeats=max(3, repeats // 2)))
    except ImportError as exc:  # scikit-learn (the data extra) missing
        log(f"data pipeline skipped: {exc}")
    if with_peers:
        out.update(peers(repeats=repeats, log=log))
    for key, value in out.items():
        goal = GOALS.get(key, GOALS.get(key.rsplit("_", 1)[-1]) if key.startswith("vs_") else None)
        log(f"{key:28s} {value if isinstance(value, str) else f'{value:10.2f}'} {f'(goal <= {goal})' if goal else ''}")
    return out
