"""``python -m minisnn bench``: medians of repeated runs of the hot paths, against the issue's targets.

Reference (spikingjelly 2.0 on PyTorch CPU, same 2-core machine, same ConvSNN): ~105 ms per training step
(T=10, N=32, Adam), ~62 ms per inference, 745 MB peak RSS, ~76 ms for LIF forward+backward on
[16, 32, 16, 32, 32] float32.
"""
import resource
import time

import numpy as np

from . import core, losses, models, optim
from .autograd import Tensor, no_grad
from .neurons import Sigmoid, multistep_fused


def _median_ms(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def convsnn_step(T=10, N=32, repeats=7):
    """(train step ms, inference ms) of ConvSNN on sparse [T, N, 2, 34, 34] input with Adam."""
    rng = np.random.default_rng(0)
    x = (rng.random((T, N, 2, 34, 34)) < 0.05).astype(np.float32)
    y = rng.integers(0, 10, N)
    model = models.ConvSNN()
    opt = optim.Adam(model.parameters(), lr=1e-3)

    def step():
        loss = losses.cross_entropy(model(Tensor(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    train_ms = _median_ms(step, repeats)
    model.eval()

    def infer():
        with no_grad():
            model(Tensor(x))
    return train_ms, _median_ms(infer, repeats)


def lif_fwd_bwd(shape=(16, 32, 16, 32, 32), repeats=7):
    """Fused LIF forward + BPTT backward (Sigmoid surrogate) in ms."""
    x = Tensor(np.random.default_rng(0).normal(0.5, 1.0, shape).astype(np.float32), requires_grad=True)
    g = np.ones(shape, np.float32)

    def run():
        x.grad = None  # as a training step's zero_grad: time the op, not accumulating into an old .grad
        multistep_fused(x, 0.5, 0.5, surrogate=Sigmoid(4.0)).backward(g)
    return _median_ms(run, repeats)


def machine(repeats=15):
    """How fast this machine is right now: (GFLOP/s of a 512×512 float32 matmul on minisnn's BLAS threads, one
    by default; GB/s read plus written by a 64 MB copy). On a shared VM both move with the host's load (here
    55–115 GFLOP/s and 7.5–10 GB/s within minutes): compare benchmark runs only at similar values of these."""
    a, x = np.ones((512, 512), np.float32), np.ones(1 << 24, np.float32)
    y = np.empty_like(x)
    gemm_ms = _median_ms(lambda: a @ a, repeats)
    copy_ms = _median_ms(lambda: np.copyto(y, x), repeats)
    return 2 * 512 ** 3 / gemm_ms / 1e6, 2 * x.nbytes / copy_ms / 1e6


def run(repeats=7, log=print):
    """Run every benchmark; print a table and return the numbers."""
    out = {"backend": core.backend()}
    out["machine_gemm_gflops"], out["machine_copy_gb_s"] = machine()
    out["train_step_ms"], out["inference_ms"] = convsnn_step(repeats=repeats)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # after the ConvSNN runs
    out["lif_fwd_bwd_ms"] = lif_fwd_bwd(repeats=repeats)
    try:
        from data_tools import bench as data_bench
        out.update(data_bench.run(repeats=max(3, repeats // 2)))
    except ImportError as exc:  # scikit-learn (the data extra) missing
        log(f"data pipeline skipped: {exc}")
    targets = {"train_step_ms": 100, "inference_ms": 50, "peak_rss_mb": 300, "lif_fwd_bwd_ms": 20,
               "digits_convert_s": 20}
    for key, value in out.items():
        goal = f"(target <= {targets[key]})" if key in targets else ""
        log(f"{key:20s} {value if isinstance(value, str) else f'{value:10.2f}'} {goal}")
    return out
