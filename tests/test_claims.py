"""The claims harness: CI arithmetic, verdict rules, pairing by seed, the table and figure, the quick run."""
import numpy as np
import pytest

from minisnn import claims as C

CLAIM = C.Claim("Paper", "Table 9", "method beats baseline", "exp", "accuracy", "base", "meth", direction=1)


def test_mean_ci_hand_computed():
    m, h = C.mean_ci([1.0, 2.0, 3.0, 4.0])
    # mean 2.5, sd = sqrt(5/3) = 1.290994, t_{0.975, 3} = 3.182446, half-width = t·sd/√4
    assert m == pytest.approx(2.5) and h == pytest.approx(3.182446 * 1.290994 / 2, rel=1e-6)
    m, h = C.mean_ci([0.5, 0.7])     # n = 2: t_{0.975, 1} = 12.7062, sd = 0.141421
    assert m == pytest.approx(0.6) and h == pytest.approx(12.7062 * 0.141421 / np.sqrt(2), rel=1e-5)
    for bad in ([1.0], [1.0, np.nan], [[1.0, 2.0]]):
        with pytest.raises(ValueError):
            C.mean_ci(bad)


def test_verdict_rules():
    assert C.verdict(0.1, 0.3) == "reproduced"
    assert C.verdict(-0.3, -0.1) == "not reproduced"
    assert C.verdict(-0.1, 0.3) == "inconclusive"
    assert C.verdict(0.0, 0.3) == "inconclusive"            # a CI touching 0 is not "on the claimed side"
    assert C.verdict(-0.5, 0.2, margin=1.0) == "reproduced"  # non-inferiority: above −margin
    assert C.verdict(-1.5, -1.2, margin=1.0) == "not reproduced"
    assert C.verdict(-1.5, 0.2, margin=1.0) == "inconclusive"


def test_claim_validation():
    with pytest.raises(ValueError, match="direction"):
        C.Claim("P", "T", "q", "e", "m", "b", "a", direction=0)
    with pytest.raises(ValueError, match="margin"):
        C.Claim("P", "T", "q", "e", "m", "b", "a", margin=-1)


def test_summarise_pairs_by_seed_and_signs_the_difference():
    # seeds arrive out of order; pairing must be by seed, not by position
    results = {2: {"base": {"accuracy": 0.5}, "meth": {"accuracy": 0.9}},
               0: {"base": {"accuracy": 0.7}, "meth": {"accuracy": 0.8}},
               1: {"base": {"accuracy": 0.6}, "meth": {"accuracy": 0.6}}}
    row = C.summarise(CLAIM, results)
    assert row["per_seed"] == pytest.approx([0.1, 0.0, 0.4]) and row["n"] == 3
    m, h = C.mean_ci([0.1, 0.0, 0.4])
    assert row["diff"] == pytest.approx((m, h)) and row["baseline"][0] == pytest.approx(0.6)
    assert row["verdict"] == C.verdict(m - h, m + h)
    lower = C.Claim("P", "T", "q", "exp", "accuracy", "base", "meth", direction=-1)
    assert C.summarise(lower, results)["per_seed"] == pytest.approx([-0.1, 0.0, -0.4])
    with pytest.raises(ValueError, match="no result"):
        C.summarise(C.Claim("P", "T", "q", "exp", "accuracy", "base", "other"), results)


def test_reproduce_on_fake_papers(monkeypatch, tmp_path):
    calls = []

    def exp(seed, quick, log):   # method better by 0.1 ± noise; spikes lower by 5
        calls.append((seed, quick))
        r = np.random.default_rng(seed)
        return {"base": {"accuracy": 0.6 + 0.01 * r.random(), "spikes": 20.0},
                "meth": {"accuracy": 0.7 + 0.01 * r.random(), "spikes": 15.0 + r.random()}}
    claims = [CLAIM, C.Claim("Paper", "Fig. 1", "spikes change", "exp", "spikes", "base", "meth", direction=-1),
              C.Claim("Paper", "Fig. 1", "spikes change", "exp", "spikes", "base", "meth", direction=1)]
    monkeypatch.setattr(C, "collect", lambda only: ({"exp": exp}, claims))
    out = tmp_path / "r.md"
    rows = C.reproduce(seeds=3, quick=True, out=out, figure_path=tmp_path / "r.png", log=None)
    assert calls == [(0, True), (1, True), (2, True)]          # one run per seed, shared by all claims
    assert [r["verdict"] for r in rows] == ["reproduced", "reproduced", "not reproduced"]
    text = out.read_text()
    assert text.count("**reproduced**") == 2 and "**not reproduced**" in text and text.count("| exp |") == 3
    assert text.count("“spikes change”") == 1 and "rows 2, 3: Paper, Fig. 1: “spikes change”" in text   # once
    assert "3 seeds (quick settings: not evidence)" in text
    assert (tmp_path / "r.png").stat().st_size > 1000 and (tmp_path / "r.json").exists()
    with pytest.raises(ValueError, match="seeds"):
        C.reproduce(seeds=1, out=None, figure_path=None, log=None)


def test_figure_scales_a_zero_baseline_and_labels_the_experiment(monkeypatch, tmp_path):
    """A baseline mean of 0 (a random map's A.I.) must not blow the axis up (D is in % of the larger mean)."""
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure
    seen = []
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: seen.append(fig))
    zero = {s: {"base": {"accuracy": 0.0}, "meth": {"accuracy": 0.01 * (s + 1)}} for s in range(3)}
    C.figure([C.summarise(CLAIM, zero)], tmp_path / "f.png")
    ax = seen[0].axes[0]
    assert ax.get_xscale() == "symlog" and max(map(abs, ax.get_xlim())) < 1e4    # D = 100 % ± CI, not ~1e14 %
    assert ax.get_yticklabels()[0].get_text().startswith("1. exp: accuracy, meth vs base")


def test_unknown_paper_is_an_error():
    with pytest.raises(ValueError, match="only"):
        C.collect("no-such-paper")


def test_quick_run_of_every_claim(tmp_path):
    """Every paper's claims run end to end on tiny budgets; each verdict follows from its numbers."""
    pytest.importorskip("sklearn")
    rows = C.reproduce(seeds=2, quick=True, out=tmp_path / "r.md", figure_path=None, log=None)
    for r in rows:
        m, h = r["diff"]
        assert r["verdict"] == C.verdict(m - h, m + h, r["claim"].margin) and r["n"] == 2
        assert np.isfinite([*r["baseline"], *r["method"], m, h]).all()
