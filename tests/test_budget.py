"""The line budgets of DESIGN.md: minisnn/ <= 4,000, cext/ <= 600, data_tools/ <= 1,500 (non-blank,
non-comment lines), and no function longer than ~60 lines."""
import ast
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def count(folder, patterns):
    n = 0
    for pat in patterns:
        for f in (ROOT / folder).rglob(pat):
            for line in f.read_text().splitlines():
                s = line.strip()
                if s and not s.startswith(("#", "//")):
                    n += 1
    return n


@pytest.mark.parametrize("folder,patterns,budget", [("minisnn", ["*.py"], 4000),
                                                    ("cext", ["*.c", "*.h", "*.inc"], 600),
                                                    ("data_tools", ["*.py"], 1500)])
def test_line_budget(folder, patterns, budget):
    n = count(folder, patterns)
    assert 0 < n <= budget, f"{folder}/ has {n} lines, budget {budget}"


def test_no_function_over_60_lines():
    long = []
    for folder in ("minisnn", "data_tools"):
        for f in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(f.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    n = node.end_lineno - node.lineno + 1
                    if n > 65:
                        long.append(f"{f.relative_to(ROOT)}:{node.name} ({n} lines)")
    assert not long, long


def test_readme_quick_start_matches_ci():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"^#+ *Quick start.*?```[a-z]*\n(.*?)```", readme, re.S | re.M | re.I).group(1)
    lines = [ln for ln in block.splitlines() if ln.strip()]
    assert len(lines) == 2, lines
    assert lines[1] in (ROOT / ".ci" / "run").read_text()


def test_readme_python_example_runs():
    readme = (ROOT / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["loss"].requires_grad and scope["net"][0].weight.grad is not None
