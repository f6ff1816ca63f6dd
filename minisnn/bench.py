"""``python -m minisnn bench [--peers]``: medians of repeated runs, and ratios of runs made side by side (this shared
VM's speed moves 2x within minutes; the first lines say how fast it is now). Relevance is timed against a training
step in one process, calls alternated; ``--peers`` runs the same ConvSNN step and inference in spikingjelly, snntorch
and plain PyTorch, each in a fresh process interleaved with minisnn's, and prints minisnn / peer (median of rounds).
"""
import importlib.util
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

from . import core, losses, models, nn, optim, relevance
from .autograd import Tensor, no_grad
from .neurons import Sigmoid, multistep_fused

PEERS = ("spikingjelly", "snntorch", "torch")
GOALS = {"sltrp_per_train_step": 1.0, "slrp_per_train_step": 0.4, "train": 0.7, "inference": 0.5}


def _seconds(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


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
    """(SLTRP, SLRP) saliency of the bench batch / one training step: the three alternated, medians of the ratios.
    BN momentum 1 keeps the running statistics at the batch's, so that the net spikes in eval mode as a trained one
    does (an untrained net's eval pass is silent: no relevance would reach the input)."""
    model, x, y, step = _bench_net(T, N)
    for m in model:
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 1.0
    calls = [step] + [lambda mode=mode: relevance.saliency(model, x, y, mode) for mode in relevance.MODES]
    times = np.array([[_seconds(f) for f in calls] for _ in range(repeats + 1)])[1:]   # round 0 warms up, calibrates
    return tuple(float(np.median(times[:, k] / times[:, 0])) for k in (1, 2))


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


def _torch_step(peer, T, N, repeats):
    """The bench's ConvSNN in a PyTorch peer: spikingjelly (LIFNode τ = 2, multi-step), snntorch (Leaky β = 0.5, the
    whole net in a loop over T) or plain torch (conv/BN on [T·N, ...], its own LIF loop); hard reset to 0, sigmoid(4)
    surrogate (snntorch: its default). Returns (train step ms, inference ms). Torch is imported here only."""
    import torch
    torch.set_num_threads(core.NUM_THREADS)

    class Spike(torch.autograd.Function):   # Θ(v) forward, the sigmoid(4) surrogate 4·σ(4v)(1 − σ(4v)) backward
        @staticmethod
        def forward(ctx, v):
            ctx.save_for_backward(v)
            return (v >= 0).to(v.dtype)

        @staticmethod
        def backward(ctx, g):
            sg = torch.sigmoid(4 * ctx.saved_tensors[0])
            return g * 4 * sg * (1 - sg)

    def lif(x):   # u = h/2 + x/2, s = Θ(u − 1), h = u·(1 − s)
        h, out = 0, []
        for xt in x:
            u = 0.5 * h + 0.5 * xt
            out.append(Spike.apply(u - 1))
            h = u * (1 - out[-1])
        return torch.stack(out)
    lifs = [lif, lif]
    if peer == "spikingjelly":
        from spikingjelly.activation_based import neuron
        lifs = [neuron.LIFNode(2.0, step_mode="m") for _ in range(2)]
    elif peer == "snntorch":
        import snntorch
        lifs = [snntorch.Leaky(0.5, reset_mechanism="zero", init_hidden=True) for _ in range(2)]
    tnn = torch.nn   # minisnn's ConvSNN: conv, BN, LIF, pool, conv, BN, LIF, pool, flatten, linear
    net = tnn.Sequential(tnn.Conv2d(2, 16, 3, padding=1), tnn.BatchNorm2d(16), tnn.AvgPool2d(2), tnn.Conv2d(16, 32, 3, padding=1),
                         tnn.BatchNorm2d(32), tnn.AvgPool2d(2), tnn.Flatten(), tnn.Linear(2048, 10))

    def forward(x):   # net[:2] → LIF → net[2:5] → LIF → net[5:]
        if peer == "snntorch":
            [m.reset_mem() for m in lifs]
            return torch.stack([net[5:](lifs[1](net[2:5](lifs[0](net[:2](xt))))) for xt in x])
        [m.reset() for m in lifs if peer == "spikingjelly"]
        for k, part in enumerate((net[:2], net[2:5], net[5:])):   # stateless layers on [T·N, ...]
            x = part(x.flatten(0, 1)).unflatten(0, (T, N))
            x = lifs[k](x) if k < 2 else x
        return x
    g = torch.Generator().manual_seed(0)
    x, y = (torch.rand(T, N, 2, 34, 34, generator=g) < 0.05).float(), torch.randint(0, 10, (N,), generator=g)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)

    def step():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(forward(x).mean(0), y).backward()
        opt.step()
    train_ms = _median_ms(step, repeats)
    net.eval()
    with torch.no_grad():
        return train_ms, _median_ms(lambda: forward(x), repeats)


def _run_one(name, T, N, repeats):
    """One bench process: (train step ms, inference ms, peak RSS MB) of minisnn or a peer, printed as JSON."""
    ms = convsnn_step(T, N, repeats) if name == "minisnn" else _torch_step(name, T, N, repeats)
    print(json.dumps(list(ms) + [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024]))


def peers(T=10, N=32, repeats=7, rounds=5, log=print):
    """minisnn / peer for every installed peer: each measurement in a fresh process (malloc tuned as the command line
    does), processes interleaved round by round; medians over the rounds of the per-round ratios."""
    names = ["minisnn"] + [p for p in PEERS if importlib.util.find_spec(p)]
    log(f"peers installed: {names[1:]}, skipped: {[p for p in PEERS if p not in names]}")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(os.path.dirname(__file__))] + sys.path))
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")   # spinning OpenMP workers made PyTorch 4-6x slower on a busy VM
    code = "import minisnn.__main__ as m; m._keep_freed_memory(); from minisnn import bench; bench._run_one({!r}, {}, {}, {})"
    runs = {n: [] for n in names}
    for _ in range(rounds):
        for n in names:
            res = subprocess.run([sys.executable, "-c", code.format(n, T, N, repeats)], env=env, capture_output=True, text=True)
            if res.returncode:
                raise RuntimeError(f"bench of {n} failed:\n{res.stderr[-2000:]}")
            runs[n].append(json.loads(res.stdout.splitlines()[-1]))
    out, mine = {}, np.array(runs["minisnn"])
    for n in names[1:]:
        med = np.median(np.array(runs[n]), axis=0)
        log(f"{n}: train step {med[0]:.0f} ms, inference {med[1]:.0f} ms, peak RSS {med[2]:.0f} MB (medians; minisnn "
            f"{np.median(mine[:, 0]):.0f}, {np.median(mine[:, 1]):.0f}, {np.median(mine[:, 2]):.0f})")
        ratio = np.median(mine / np.array(runs[n]), axis=0)
        out.update({f"vs_{n}_train": ratio[0], f"vs_{n}_inference": ratio[1], f"vs_{n}_peak_rss": ratio[2]})
    return out


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
