"""Where the project's top-level folders are (the package is installed editable)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = ROOT / "conf"
RESULTS_DIR = ROOT / "results"
