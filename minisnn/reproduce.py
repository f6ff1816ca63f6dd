"""``python -m minisnn reproduce``: every method beside its baseline at small scale, as one results table.

Each paper's own comparison function (``minisnn.methods.*``) is run with its defaults (``quick=True``:
a few batches, for the test suite) on DigitsDVS and MotionDVS (and FashionDVS when its files exist);
the rows are written as a Markdown table, with the paper's headline number beside ours.
"""
import time

import numpy as np

from .methods import asa, eventrpg, hsd, razor, staa

HEADLINES = {
    "EventRPG": ("N-Caltech101 85.62 %, CIFAR10-DVS 85.55 % (SLRP-guided augmentation, VGG/ResNet, 10 steps)",
                 "Augmentation pays off when a model over-fits a small dataset; on our simulated digits a "
                 "2-layer ConvSNN barely over-fits in a few epochs, so expect little or no gain here."),
    "ASA-SNN": ("DVS128 Gait-day, three-layer SNN: spikes −78.9 %, accuracy +5.0 %",
                "The claim is fewer spikes at equal or better accuracy; compare NASFR and energy columns."),
    "STAA-SNN": ("CIFAR10-DVS 82.10 %; +0.33 to +2.80 % with fewer time steps",
                 "The claim is better accuracy at small T; attention costs extra MACs on a CPU."),
    "HSD": ("CIFAR10-DVS 81.10 % at T = 5, 75.81 % at T = 1 (TET: 74.82 %)",
            "The claim is a better SNN at very low T than direct training at the same T."),
    "Razor SNN": ("DVS128 Gesture +0.22 % over TA-SNN, CIFAR10-DVS +1.01 %, while pruning frames",
                  "The claim is equal accuracy with frames pruned; see the pruned-fraction column."),
}
COLUMNS = ("paper", "dataset", "model", "accuracy", "NASFR", "energy (µJ)", "pruned", "s / run")


def _row(paper, dataset, model, acc, rate=None, energy_pj=None, pruned=None, seconds=None):
    fmt = lambda v, f: "—" if v is None else format(v, f)
    return (paper, dataset, model, fmt(acc, ".1%"), fmt(rate, ".3f"), fmt(None if energy_pj is None else energy_pj / 1e6, ".2f"),
            fmt(pruned, ".0%"), fmt(seconds, ".0f"))


def _eventrpg(dataset, quick, seed, log):
    t0 = time.perf_counter()
    r = eventrpg.run_comparison(dataset, quick=quick, seed=seed, log=log)
    sec = (time.perf_counter() - t0) / 2
    return [_row("EventRPG", dataset, name, r[name], r[f"{name}_history"][-1].get("val_spike_rate"), seconds=sec)
            for name in ("baseline", "eventrpg")]


def _asa(dataset, quick, seed, log):
    t0 = time.perf_counter()
    r = asa.run_comparison(dataset, quick=quick, seed=seed, log=log)[dataset]
    sec = (time.perf_counter() - t0) / 2
    return [_row("ASA-SNN", dataset, f"TASNN {name}", r[name]["accuracy"], r[name]["nasfr"], r[name]["energy_pj"],
                 seconds=sec) for name in ("vanilla", "asa1")]


def _staa(dataset, quick, seed, log):
    r = staa.run_comparison(dataset, Ts=(2, 4), quick=quick, seed=seed, log=log)
    return [_row("STAA-SNN", dataset, f"ConvSNN {name} T={T}", v["accuracy"], v["spike_rate"], seconds=v["seconds"])
            for name, per_T in r.items() for T, v in per_T.items()]


def _hsd(dataset, quick, seed, log):
    r = hsd.run_pipeline(dataset, T2s=(1, 2) if quick else (1, 2, 3, 5), quick=quick, seed=seed, log=log)
    rows = [_row("HSD", dataset, f"QCFS ANN (T1={r['T1']} frames)", r["ann_accuracy"])]
    for T2, v in r["T2"].items():
        rows += [_row("HSD", dataset, f"converted T2={T2}", v["converted"]), _row("HSD", dataset, f"HSD T2={T2}", v["hsd"]),
                 _row("HSD", dataset, f"direct SNN T2={T2}", v["direct"])]
    return rows


def _razor(dataset, quick, seed, log):
    r = razor.run_comparison(dataset, quick=quick, seed=seed, log=log)
    rows = []
    for key, name in (("plain", "TASNN LIAF"), ("razor", "Razor, soft masks"), ("razor_pruned", f"Razor, {r['rule']}")):
        v = r[key]
        pruned = float(np.mean(v["pruned_fraction"])) if len(v.get("pruned_fraction", [])) else None
        rows.append(_row("Razor SNN", dataset, name, v["accuracy"], pruned=pruned))
    return rows


RUNS = [("EventRPG", _eventrpg, ("digits",)), ("ASA-SNN", _asa, ("digits",)), ("STAA-SNN", _staa, ("digits", "motion")),
        ("HSD", _hsd, ("digits",)), ("Razor SNN", _razor, ("motion", "digits"))]


def fashion_available():
    """True when the Fashion-MNIST IDX files are where FashionDVS looks by default."""
    from data_tools.datasets import FashionDVS
    try:
        FashionDVS(train=False, limit=1)
        return True
    except FileNotFoundError:
        return False


def reproduce(quick=False, seed=0, out=None, log=print):
    """Run every comparison; return the Markdown table (also written to ``out`` when given).

    ``quick``: every method's smoke setting, on its first dataset only (for the test suite).
    """
    rows = []
    for paper, fn, datasets in RUNS:
        if paper in ("ASA-SNN", "EventRPG") and not quick and fashion_available():
            datasets = datasets + ("fashion",)
        for dataset in datasets[:1] if quick else datasets:
            log(f"=== {paper} on {dataset} ===")
            rows += fn(dataset, quick, seed, log)
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", "| paper | the paper's headline | what carries over at this scale |", "|---|---|---|"]
    lines += [f"| {p} | {h} | {note} |" for p, (h, note) in HEADLINES.items()]
    table = "\n".join(lines) + "\n"
    if out:
        with open(out, "w") as f:
            f.write(table)
    log(table)
    return table
