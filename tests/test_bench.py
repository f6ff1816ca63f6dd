"""``python -m minisnn bench``: plausible numbers, relevance timed against a training step, and the peer runner
``tests/bench_peers.py`` (minisnn in its own process; the PyTorch peers where installed, e.g. a venv with torch)."""
import importlib.util
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from minisnn import bench

spec = importlib.util.spec_from_file_location("peers", pathlib.Path(__file__).parent.parent / "tests" / "bench_peers.py")
peers = importlib.util.module_from_spec(spec)
spec.loader.exec_module(peers)


def test_bench_numbers_are_plausible():
    train_ms, infer_ms = bench.convsnn_step(T=2, N=8, repeats=3)
    assert 0 < infer_ms < train_ms   # a training step is a forward pass and more
    assert 0 < bench.lif_fwd_bwd(shape=(4, 2, 8, 8), repeats=3) < 1e3
    gflops, gb_s = bench.machine(repeats=3)
    assert 0.5 < gflops < 1e5 and 0.1 < gb_s < 1e4   # a unit slip (ms for s, bytes for GB) is 1000x off


def test_relevance_is_timed_against_a_step_on_a_spiking_net(monkeypatch):
    spikes = []
    saliency = bench.relevance.saliency

    def spy(model, x, target, mode):
        out = saliency(model, x, target, mode)
        spikes.append([m.spike_rate for m in model if hasattr(m, "v_threshold")])
        return out
    monkeypatch.setattr(bench.relevance, "saliency", spy)
    sltrp, slrp = bench.relevance_vs_step(T=3, N=4, repeats=2)
    assert 0 < slrp < sltrp < 50   # SLTRP does more than SLRP (membranes, per-step rules, the recursion)
    assert len(spikes) == 6 and min(min(s) for s in spikes) > 0   # the BN calibration makes eval mode spike


def test_importing_minisnn_does_not_import_torch():
    code = "import sys, minisnn, minisnn.bench, minisnn.relevance; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_peers_run_in_their_own_processes_and_skip_what_is_missing(monkeypatch):
    monkeypatch.setattr(peers, "PEERS", ("no_such_peer_library",))
    lines = []
    assert peers.peers(T=2, N=2, repeats=1, rounds=1, log=lines.append) == {}   # minisnn ran once, in a child
    assert "skipped: ['no_such_peer_library']" in lines[0]


def test_bench_finds_the_peer_runner_of_the_checkout(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in peers.PEERS else real(name, *a))
    lines = []
    assert bench.peers(log=lines.append, T=2, N=2, repeats=1, rounds=1) == {} and "peers installed: []" in lines[0]


@pytest.mark.parametrize("peer", peers.PEERS)
def test_each_installed_peer_runs_the_bench_net(peer):
    if not importlib.util.find_spec(peer) or not importlib.util.find_spec("torch"):
        pytest.skip(f"{peer} is not installed")
    train_ms, infer_ms = peers.torch_step(peer, T=2, N=2, repeats=1)
    assert np.isfinite(train_ms) and 0 < infer_ms < train_ms * 5
