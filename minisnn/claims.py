"""The claims table: each paper's empirical claims, measured over seeds, with verdicts computed from the CIs.

Each method module (``minisnn.methods.*``) contributes its claims as data::

    EXPERIMENTS = {"asa-digits": run}     # run(seed, quick, log) -> {arm: {metric: value}}, one seeded run
    CLAIMS = [Claim(paper, where, quote, experiment, metric, baseline, method, direction, margin), ...]

This module only runs every experiment once per seed (the *training* seed: initialisation, shuffling,
validation split; the data stay fixed), pairs method and baseline by seed, and summarises. For n seeds::

    D_s = direction · (method_s − baseline_s)          the paired difference of seed s
    mean(D) ± t_{0.975, n−1} · sd(D) / √n              its 95 % confidence interval (Student's t)
    "reproduced"      if the whole CI lies above −margin
    "not reproduced"  if the whole CI lies below −margin
    "inconclusive"    otherwise

``margin`` is 0 for "better" claims and a stated non-inferiority margin for "no worse" / "kept" claims.
``python -m minisnn reproduce`` writes the table (``results.md``) and a figure (``results.png``)."""
import dataclasses
import importlib
import json
import platform
import time

import numpy as np
from scipy import stats

from .core import NUM_THREADS

PAPERS = {"eventrpg": "EventRPG (ICLR 2024)", "asa": "ASA-SNN (ICCV 2023)", "staa": "STAA-SNN (CVPR 2025)",
          "hsd": "HSD (ACM MM 2024)", "razor": "Razor SNN (2023)"}   # modules of minisnn.methods, in table order


@dataclasses.dataclass(frozen=True)
class Claim:
    """One empirical claim of a paper: ``method`` beats (``direction=+1``: is higher than; −1: lower than)
    ``baseline`` on ``metric`` of ``experiment``'s result — or, with ``margin > 0``, is no worse by more than it."""
    paper: str
    where: str
    quote: str
    experiment: str
    metric: str
    baseline: str
    method: str
    direction: int = 1
    margin: float = 0.0

    def __post_init__(self):
        if self.direction not in (1, -1) or not self.margin >= 0:
            raise ValueError(f"Claim {self.experiment}/{self.metric}: direction must be +1 or -1 and margin >= 0, got "
                             f"direction={self.direction}, margin={self.margin}")


def mean_ci(values, level=0.95):
    """(mean, half-width of the ``level`` CI) of independent values by Student's t; n >= 2."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or len(v) < 2 or not np.all(np.isfinite(v)):
        raise ValueError(f"mean_ci needs >= 2 finite values, got {v.tolist()}")
    return float(v.mean()), float(stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))


def verdict(lo, hi, margin=0.0):
    """The verdict of a CI [lo, hi] of D = direction·(method − baseline) against the margin."""
    return "reproduced" if lo > -margin else "not reproduced" if hi < -margin else "inconclusive"


def summarise(claim, results):
    """One table row: baseline, method and paired-difference statistics of ``claim`` over the seeds of
    ``results`` = {seed: {arm: {metric: value}}} (the experiment's results)."""
    seeds = sorted(results)
    try:
        base = [results[s][claim.baseline][claim.metric] for s in seeds]
        meth = [results[s][claim.method][claim.metric] for s in seeds]
    except KeyError as e:
        raise ValueError(f"claim {claim.experiment}/{claim.metric}: no result for {e} (arms: "
                         f"{sorted(results[seeds[0]])})") from None
    d = claim.direction * (np.asarray(meth, np.float64) - np.asarray(base, np.float64))
    (bm, bh), (mm, mh), (dm, dh) = mean_ci(base), mean_ci(meth), mean_ci(d)
    return {"claim": claim, "n": len(seeds), "baseline": (bm, bh), "method": (mm, mh), "diff": (dm, dh),
            "per_seed": d.tolist(), "verdict": verdict(dm - dh, dm + dh, claim.margin)}


def collect(only=None):
    """(experiments, claims) of the method modules (``only``: one module name of PAPERS, or a paper's name)."""
    experiments, claims = {}, []
    for name in PAPERS:
        mod = importlib.import_module(f"minisnn.methods.{name}")
        mine = list(getattr(mod, "CLAIMS", []))
        if only and only.lower() not in {name} | {c.paper.lower() for c in mine}:
            continue
        experiments.update(getattr(mod, "EXPERIMENTS", {}))
        claims += mine
    if only and not claims:
        raise ValueError(f"only: no claims for {only!r}; papers: {', '.join(PAPERS)}")
    return experiments, claims


def run(experiments, claims, seeds, quick=False, log=print):
    """Run every experiment a claim uses once per seed -> ({experiment: {seed: result}}, {experiment: seconds})."""
    results, seconds = {}, {}
    for name in dict.fromkeys(c.experiment for c in claims):
        if name not in experiments:
            raise ValueError(f"a claim uses experiment {name!r}, which no module defines")
        results[name], t0 = {}, time.perf_counter()
        for seed in seeds:
            if log:
                log(f"=== {name}, seed {seed} ===")
            out = experiments[name](seed, quick, log)
            results[name][seed] = {a: {m: float(v) for m, v in ms.items()} for a, ms in out.items()}
        seconds[name] = (time.perf_counter() - t0) / len(seeds)
    return results, seconds


def _unit(claim):
    return (100, " %") if claim.metric.endswith("accuracy") else (1, "")   # accuracies are fractions, shown in %


def _fmt(claim, m, h):
    scale, unit = _unit(claim)
    return f"{scale * m:.4g} ± {scale * h:.2g}{unit}"


def table(rows, seconds=None, header=""):
    """The Markdown claims table (one row per claim), then the papers' words, each quote once with its rows."""
    lines = [header, "| # | paper | where | experiment | metric | baseline | method | baseline: mean ± 95 % CI | "
             "method: mean ± 95 % CI | D = direction·(method − baseline) | seeds | verdict |", "|" + "---|" * 12]
    for i, r in enumerate(rows, 1):
        c = r["claim"]
        side = ("higher" if c.direction > 0 else "lower") + (f", margin {_unit(c)[0] * c.margin:g}{_unit(c)[1]}"
                                                              if c.margin else "")
        lines.append(f"| {i} | {c.paper} | {c.where} | {c.experiment} | {c.metric} ({side}) | {c.baseline} | "
                     f"{c.method} | {_fmt(c, *r['baseline'])} | {_fmt(c, *r['method'])} | {_fmt(c, *r['diff'])} | "
                     f"{r['n']} | **{r['verdict']}** |")
    quotes = {}   # each quote once, with the rows that test it
    for i, r in enumerate(rows, 1):
        quotes.setdefault((r["claim"].paper, r["claim"].where, r["claim"].quote), []).append(str(i))
    lines += ["", "The claims in the papers' words:", ""]
    lines += [f"- row{'s' * (len(i) > 1)} {', '.join(i)}: {p}, {w}: “{q}”" for (p, w, q), i in quotes.items()]
    if seconds:
        lines += ["", "Seconds per seed: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items())]
    return "\n".join(lines) + "\n"


def figure(rows, path):
    """Per claim, D in % of the larger of the two means, with its 95 % CI, the zero line and the margin."""
    from matplotlib.figure import Figure   # not pyplot: no global figure state, no GUI backend
    fig = Figure(figsize=(8, 0.35 * len(rows) + 1.2))
    ax = fig.subplots()
    for i, r in enumerate(rows):
        scale = 100 / max(abs(r["baseline"][0]), abs(r["method"][0]), 1e-12)   # a baseline of 0 (A.I.) stays finite
        (dm, dh), c = r["diff"], r["claim"]
        color = {"reproduced": "tab:green", "not reproduced": "tab:red"}.get(r["verdict"], "tab:gray")
        ax.errorbar(dm * scale, i, xerr=dh * scale, fmt="o", color=color, capsize=3)
        if c.margin:
            ax.plot([-c.margin * scale] * 2, [i - 0.4, i + 0.4], color="k", lw=1)
    ax.axvline(0, color="k", lw=0.8, ls=":")
    ax.set_yticks(range(len(rows)), [f"{i + 1}. {r['claim'].experiment}: {r['claim'].metric}, {r['claim'].method} "
                                     f"vs {r['claim'].baseline}" for i, r in enumerate(rows)], fontsize=7)
    ax.set(xscale="symlog", ylim=(len(rows) - 0.5, -0.5),   # symlog: linear within ±2 %, so small and large D show
           xlabel="D in % of the larger mean (right of 0: as claimed)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def reproduce(seeds=5, quick=False, only=None, out="results.md", figure_path="results.png", log=print):
    """Run the claims of every paper (or ``only`` one) over ``seeds`` seeds; write the table, the figure and the
    raw per-seed results (``out`` with .json); return the rows. ``quick``: tiny budgets (the test suite's)."""
    if int(seeds) != seeds or seeds < 2:
        raise ValueError(f"seeds must be an integer >= 2 (a CI needs two), got {seeds}")
    t0 = time.perf_counter()
    experiments, claims = collect(only)
    results, seconds = run(experiments, claims, range(int(seeds)), quick, log)
    rows = [summarise(c, results[c.experiment]) for c in claims]
    header = (f"Claims table: {int(seeds)} seeds{' (quick settings: not evidence)' if quick else ''}, "
              f"{(time.perf_counter() - t0) / 60:.1f} min on {platform.machine()} with {NUM_THREADS} cores.\n")
    text = table(rows, seconds, header)
    if out:
        with open(out, "w") as f:
            f.write(text)
        with open(str(out).rsplit(".", 1)[0] + ".json", "w") as f:
            json.dump({k: {str(s): r for s, r in v.items()} for k, v in results.items()}, f, indent=1)
    if figure_path and rows:
        figure(rows, figure_path)
    if log:
        log(text)
    return rows
