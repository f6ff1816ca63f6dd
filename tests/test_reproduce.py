"""The reproduction command runs end to end in its reduced mode and produces a table with every row."""
import pytest

pytest.importorskip("sklearn")


def test_reproduce_quick_table(tmp_path):
    from minisnn.reproduce import COLUMNS, HEADLINES, reproduce
    out = tmp_path / "results.md"
    table = reproduce(quick=True, out=out, log=lambda *a: None)
    assert out.read_text() == table
    rows = [line for line in table.splitlines() if line.startswith("| ") and line.count("|") == len(COLUMNS) + 1]
    body = [r for r in rows[1:] if not r.startswith("| paper")]
    models = {tuple(c.strip() for c in r.strip("|").split("|"))[:3] for r in body}
    expected = {("EventRPG", "digits", "baseline"), ("EventRPG", "digits", "eventrpg"),
                ("ASA-SNN", "digits", "TASNN vanilla"), ("ASA-SNN", "digits", "TASNN asa1"),
                ("STAA-SNN", "digits", "ConvSNN lif T=2"), ("STAA-SNN", "digits", "ConvSNN staa T=4"),
                ("HSD", "digits", "HSD T2=1"), ("HSD", "digits", "direct SNN T2=2"),
                ("Razor SNN", "motion", "TASNN LIAF")}
    assert expected <= models, expected - models
    for r in body:  # every accuracy is a percentage in [0, 100]
        acc = r.strip("|").split("|")[3].strip()
        assert acc.endswith("%") and 0 <= float(acc[:-1]) <= 100
    for paper in HEADLINES:
        assert f"| {paper} |" in table
