"""Where a committed result comes from: `results/<dir>/PROVENANCE.json`.

Beside the result files, one entry per file: its sha256, the commit of the code that wrote
it (and whether tracked files differed from that commit: `git_dirty`, with the paths),
the exact command, the package versions and the settings a result's last bits depend on
(`aggc.train.rundir.determinism_settings`: threads, thread environment, CPU, tokenizers).
A sidecar rather than a header, so the result files themselves are what the code writes
and nothing else: CI reruns `make demo` and compares them byte for byte, while the sidecar
(new commit, new date) is expected to change.

    python -m aggc.provenance check             # every results/ file has an entry, and its hash matches
    python -m aggc.provenance compare OLD NEW   # two PROVENANCE.json: which settings differ (CI's message)

`tests/test_provenance.py` runs the check; a hand edit of a result file fails it.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

from .paths import RESULTS_DIR, ROOT

PROVENANCE = "PROVENANCE.json"
# Not results: the paper's numbers (transcribed, with their own README) and the folders' READMEs.
UNSTAMPED_DIRS = ("paper",)
UNSTAMPED_FILES = ("README.md", PROVENANCE)


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def origin(command: list[str] | str | None = None, out_dir: Path | None = None) -> dict:
    """The code, command and stack of this process. `git_dirty`: tracked files other than the
    results being written (those under `out_dir`) differ from the commit."""
    from .train.rundir import determinism_settings, package_versions

    dirty = _git("status", "--porcelain", "--untracked-files=no")
    dirty_paths = sorted(line[3:] for line in dirty.splitlines()) if dirty else []
    try:
        written = Path(out_dir).resolve().relative_to(ROOT).as_posix() + "/" if out_dir is not None else None
    except ValueError:  # results written outside the repository
        written = None
    code_paths = [p for p in dirty_paths if not (written and p.startswith(written))]
    return {
        "git_commit": (_git("rev-parse", "HEAD") or "").strip() or None,
        "git_dirty": bool(code_paths) if dirty is not None else None,
        "git_dirty_paths": code_paths,
        "command": command if command is not None else " ".join([Path(sys.executable).name, *sys.argv]),
        "python": sys.version.split()[0],
        "packages": package_versions(),
        "determinism": determinism_settings(),
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def read(out_dir: Path) -> dict:
    path = Path(out_dir) / PROVENANCE
    return json.loads(path.read_text()) if path.exists() else {"files": {}}


def stamp(out_dir: Path, files, command: list[str] | str | None = None, **extra) -> Path:
    """Record `files` (in `out_dir`) as written now by this process; other entries stay."""
    out_dir = Path(out_dir)
    provenance = read(out_dir)
    here = origin(command, out_dir)
    for file in files:
        file = Path(file)
        provenance["files"][file.name] = {"sha256": sha256(out_dir / file.name), **here, **extra}
    provenance["files"] = dict(sorted(provenance["files"].items()))
    path = out_dir / PROVENANCE
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(provenance, indent=1) + "\n")
    tmp.replace(path)
    return path


def result_files(results_dir: Path = RESULTS_DIR) -> list[Path]:
    """Every committed result file: under results/, not the paper's data, not a README."""
    return sorted(p for p in Path(results_dir).rglob("*") if p.is_file() and not p.name.startswith(".")
                  and p.name not in UNSTAMPED_FILES and p.relative_to(results_dir).parts[0] not in UNSTAMPED_DIRS)


def problems(results_dir: Path = RESULTS_DIR) -> list[str]:
    """Result files without an entry, entries without a file, and hashes that do not match."""
    out = []
    for path in result_files(results_dir):
        entry = read(path.parent)["files"].get(path.name)
        if entry is None:
            out.append(f"{path.relative_to(results_dir)}: no entry in {path.parent.name}/{PROVENANCE}")
        elif entry["sha256"] != sha256(path):
            out.append(f"{path.relative_to(results_dir)}: differs from what {PROVENANCE} records as written by "
                       f"`{entry['command']}` at {entry['git_commit']} (edited by hand, or rewritten without a new entry)")
    for prov in Path(results_dir).rglob(PROVENANCE):
        out += [f"{prov.parent.relative_to(results_dir)}/{name}: in {PROVENANCE}, no such file"
                for name in read(prov.parent)["files"] if not (prov.parent / name).exists()]
    return out


def compare(old: dict, new: dict) -> list[str]:
    """The settings (determinism, packages, python) in which two entries differ."""
    out = []
    for key in ("determinism", "packages"):
        a, b = old.get(key) or {}, new.get(key) or {}
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                out.append(f"{key}.{k}: committed {a.get(k)!r}, this run {b.get(k)!r}")
    if old.get("python") != new.get("python"):
        out.append(f"python: committed {old.get('python')!r}, this run {new.get('python')!r}")
    return out


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["check"]:
        found = problems()
        print("\n".join(found) if found else f"every result file under {RESULTS_DIR.name}/ matches its {PROVENANCE}")
        return 1 if found else 0
    if argv[:1] == ["compare"] and len(argv) == 3:
        old, new = (json.loads(Path(p).read_text())["files"] for p in argv[1:])
        differ = False
        for name in sorted(set(old) & set(new)):
            diffs = compare(old[name], new[name])
            if diffs:
                differ = True
                print(f"{name}: this run's settings differ from the committed result's, which explains different last bits:")
                print("  " + "\n  ".join(diffs))
        if not differ:
            print("the settings recorded for the committed results and for this run are the same "
                  "(threads, thread environment, CPU, packages): the difference comes from the code")
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
