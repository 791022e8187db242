"""Table 1 keeps the paper's MATH (the full test, eval=math) and the shipped MATH-500
(eval=math500) apart: two columns, the paper's value only beside MATH."""

from .test_tables import synthetic_runs, tables_cli


def test_math_and_math500_are_different_columns(tmp_path):
    scores = {0: {"math": 20.0, "math500": 30.0}, 1: {"math": 22.0, "math500": 34.0}}
    synthetic_runs(tmp_path, "table1", lambda c: scores.get(c.seed, {})
                   if (c.model, c.data, c.strategy, c.clip) == ("mistral_7b", "metamathqa", "aggc", "aggc") else {})
    md = tables_cli(tmp_path, "table1", "table.models=[mistral_7b]", "table.name=mini")
    header, *_ = [li for li in md.splitlines() if li.startswith("| Model")]
    columns = [c.strip() for c in header.strip("|").split("|")]
    math, math500 = columns.index("MATH (ours)"), columns.index("MATH-500 (not in the paper) (ours)")
    assert math500 != math and "MATH-500 (not in the paper) (paper)" in columns
    aggc = [c.strip() for c in next(li for li in md.splitlines() if "| AGGC |" in li).strip("|").split("|")]
    assert aggc[math].startswith("21.00") and aggc[math + 1] == "21.42"        # beside the paper's MATH
    assert aggc[math500].startswith("32.00") and aggc[math500 + 1:math500 + 3] == ["—", "—"]  # no paper value, no Δ
