"""minisnn's bench ConvSNN against its PyTorch peers: ``python -m minisnn bench --peers`` (or run this file).

The same ConvSNN training step (T = 10, N = 32, cross-entropy on the time-mean logits, Adam) and inference, in
spikingjelly (LIFNode τ = 2, multi-step), snntorch (Leaky β = 0.5, the whole net in a loop over T) and plain PyTorch
(conv/BN on [T·N, ...], its own LIF loop), whichever are installed. Each measurement runs in a fresh process, the
processes interleaved round by round (this VM's speed drifts); the result is the median over rounds of minisnn / peer.
Torch is imported only in the peer processes: ``import minisnn`` never imports it.
"""
import importlib.util
import json
import os
import resource
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from minisnn import core  # noqa: E402
from minisnn.bench import _median_ms, convsnn_step  # noqa: E402

PEERS = ("spikingjelly", "snntorch", "torch")


def torch_step(peer, T, N, repeats):
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


def run_one(name, T, N, repeats):
    """One bench process: (train step ms, inference ms, peak RSS MB) of minisnn or a peer, printed as JSON."""
    ms = convsnn_step(T, N, repeats) if name == "minisnn" else torch_step(name, T, N, repeats)
    print(json.dumps(list(ms) + [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024]))


def peers(T=10, N=32, repeats=7, rounds=5, log=print):
    """minisnn / peer for every installed peer (train step, inference, peak RSS): medians over the rounds of the
    per-round ratios. Each measurement runs in a fresh process with malloc tuned as the command line tunes it."""
    names = ["minisnn"] + [p for p in PEERS if importlib.util.find_spec(p)]
    log(f"peers installed: {names[1:]}, skipped: {[p for p in PEERS if p not in names]}")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT] + sys.path))
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")   # spinning OpenMP workers made PyTorch 4-6x slower on a busy VM
    runs = {n: [] for n in names}
    for _ in range(rounds):
        for n in names:
            res = subprocess.run([sys.executable, __file__, n, str(T), str(N), str(repeats)], env=env,
                                 capture_output=True, text=True)
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


if __name__ == "__main__":
    if len(sys.argv) == 5:   # one measurement process: NAME T N REPEATS
        import minisnn.__main__
        minisnn.__main__._keep_freed_memory()
        run_one(sys.argv[1], *map(int, sys.argv[2:]))
    else:
        for key, value in peers().items():
            print(f"{key:28s} {value:10.2f}")
