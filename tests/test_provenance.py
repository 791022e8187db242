"""Committed results say where they come from, and README quotes them verbatim.

Every file under results/ (but the paper's data and the READMEs) has an entry in its
folder's PROVENANCE.json whose sha256 matches (so a hand edit, or a rewrite without a new
entry, fails); README's result tables are regions copied from those files by
`python -m aggc.tables.readme`, and no results table lies outside such a region."""

import json
import re

from aggc import provenance
from aggc.paths import RESULTS_DIR
from aggc.tables import readme


def test_every_result_file_has_a_matching_provenance_entry():
    problems = provenance.problems()
    assert not problems, "\n".join(problems) + "\nRegenerate the results with their command (it writes PROVENANCE.json)."


def test_every_entry_names_its_code_command_and_stack():
    for prov in RESULTS_DIR.rglob(provenance.PROVENANCE):
        for name, entry in json.loads(prov.read_text())["files"].items():
            where = f"{prov.parent.name}/{name}"
            assert re.fullmatch(r"[0-9a-f]{40}", entry["git_commit"] or ""), where
            assert entry["command"] and entry["packages"]["torch"] and entry["packages"]["transformers"], where
            # measured entries carry the settings their last bits depend on; reconstructed ones say so
            assert entry.get("determinism") or (entry.get("reconstructed") and entry.get("note")), where


def test_readme_tables_equal_their_result_files():
    text = readme.README.read_text()
    assert readme.render(text) == text, "README.md's result tables differ from their files: run `python -m aggc.tables.readme`"
    assert {"results/demo/table1.md", "results/demo-real/table1.md", "results/demo-real/table5.md"} <= set(readme.regions(text))


def test_no_results_table_in_readme_outside_an_included_region():
    """A row with a mean over seeds ("(n=3)") is a result: it must come from a file."""
    outside = readme.REGION.sub("", readme.README.read_text())
    rows = [line for line in outside.splitlines() if line.startswith("|") and re.search(r"\(n=\d+\)", line)]
    assert not rows, f"README table rows not copied from a result file: {rows[:3]}"


def test_stamp_records_hash_commit_command_and_settings_and_a_hand_edit_fails(tmp_path):
    out = tmp_path / "results" / "demo"
    out.mkdir(parents=True)
    (out / "t.md").write_text("x\n")
    provenance.stamp(out, ["t.md"], "python -m something")
    entry = provenance.read(out)["files"]["t.md"]
    assert entry["sha256"] == provenance.sha256(out / "t.md") and entry["command"] == "python -m something"
    assert entry["determinism"]["torch_threads"] >= 1 and "OMP_NUM_THREADS" in entry["determinism"]["env"]
    assert re.fullmatch(r"[0-9a-f]{40}", entry["git_commit"]) and isinstance(entry["git_dirty"], bool)
    assert provenance.problems(tmp_path / "results") == []
    (out / "t.md").write_text("edited by hand\n")
    (out / "new.csv").write_text("no entry\n")
    found = provenance.problems(tmp_path / "results")
    assert len(found) == 2 and "demo/t.md: differs" in found[1] and "demo/new.csv: no entry" in found[0]


def test_compare_names_the_settings_that_differ():
    a = {"determinism": {"torch_threads": 2, "env": {"OMP_NUM_THREADS": None}}, "packages": {"torch": "2.13.0"}, "python": "3.12"}
    b = {"determinism": {"torch_threads": 4, "env": {"OMP_NUM_THREADS": None}}, "packages": {"torch": "2.13.0"}, "python": "3.12"}
    assert provenance.compare(a, b) == ["determinism.torch_threads: committed 2, this run 4"]
    assert provenance.compare(a, a) == []
