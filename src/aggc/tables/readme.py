"""README's result tables, copied from the result files, never edited by hand.

README.md marks each quoted table as a region:

    <!-- include: results/demo/table1.md -->
    ...  (written by this command)
    <!-- end include -->

`python -m aggc.tables.readme` rewrites every region from its file: the table without its
title line, preceded by a line naming the file, the command and the commit that wrote it
(from the folder's PROVENANCE.json). `--check` changes nothing and fails when a region
differs (tests/tables/test_readme.py runs it).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from ..paths import ROOT
from ..provenance import PROVENANCE, read

README = ROOT / "README.md"
REGION = re.compile(r"(<!-- include: (?P<file>\S+) -->\n)(?P<body>.*?)(<!-- end include -->)", re.S)


def body(file: str, root: Path = ROOT) -> str:
    """A region's text: where the table comes from, then the table without its title."""
    path = root / file
    lines = path.read_text().splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    while lines and not lines[0].strip():
        lines = lines[1:]
    entry = read(path.parent)["files"].get(path.name)
    if entry is None:
        raise SystemExit(f"{file}: no entry in {path.parent.relative_to(root)}/{PROVENANCE}: a README table must come from a recorded result")
    commit = (entry.get("git_commit") or "unknown")[:10] + (" (with uncommitted changes)" if entry.get("git_dirty") else "")
    source = (f"*From [`{file}`]({file}), written by `{entry['command']}` at commit `{commit}` "
              f"({path.parent.relative_to(root)}/{PROVENANCE}"
              + ("; " + entry["note"] if entry.get("note") else "") + ").*")
    return source + "\n\n" + "\n".join(lines) + "\n"


def render(text: str, root: Path = ROOT) -> str:
    return REGION.sub(lambda m: m.group(1) + body(m.group("file"), root) + m.group(4), text)


def regions(text: str) -> list[str]:
    return [m.group("file") for m in REGION.finditer(text)]


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    text = README.read_text()
    new = render(text)
    if "--check" in argv:
        if new != text:
            print("README.md's result tables differ from their files: run `python -m aggc.tables.readme`")
            return 1
        print(f"README.md: {len(regions(text))} result tables equal their files")
        return 0
    README.write_text(new)
    print(f"README.md: {len(regions(text))} result tables rewritten from {', '.join(regions(text))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
