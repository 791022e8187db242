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
if not OmegaConf.has_resolver("aggc.run_id"):  # a run's cell id (aggc.identity), for its directory's name
    OmegaConf.register_new_resolver("aggc.run_id", lambda *, _root_: __import__("aggc.identity").identity.cell_id(_root_))
if not OmegaConf.has_resolver("aggc.completed_run"):  # `${aggc.completed_run:<runs_root>,<model>,<data>,<strategy>,<clip>,<seed>}`
    OmegaConf.register_new_resolver("aggc.completed_run", lambda *choices: __import__("aggc.identity").identity.completed_run(*choices))
