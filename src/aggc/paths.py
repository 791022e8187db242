"""Where the project's top-level folders are (the package is installed editable).

Importing this module also registers `${aggc.root:}`, the repository root, for configs: the
shipped data's default (`${oc.env:AGGC_DATA_DIR,${aggc.root:}/data}`) must name the
repository's own `data/` whatever directory a command starts in. Every entry point imports
this module before Hydra composes its config.
"""

from pathlib import Path

from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = ROOT / "conf"
RESULTS_DIR = ROOT / "results"

if not OmegaConf.has_resolver("aggc.root"):
    OmegaConf.register_new_resolver("aggc.root", lambda: str(ROOT))
