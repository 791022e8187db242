"""Entry point of the tabulate stage: `python -m aggc.tables table=table1`."""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from ..paths import CONF_DIR
from . import write


@hydra.main(config_path=str(CONF_DIR), config_name="tables", version_base="1.3")
def main(cfg: DictConfig) -> None:
    spec = OmegaConf.to_container(cfg.table, resolve=True)
    paths = write(spec, Path(cfg.runs_root), Path(cfg.paper_dir), Path(cfg.out_dir))
    from ..provenance import stamp  # where each file comes from (README, Determinism and provenance)

    provenance = stamp(Path(cfg.out_dir), paths.values(), " ".join(["python", "-m", "aggc.tables", *sys.argv[1:]]))
    print(Path(paths["md"]).read_text())
    print("written:", ", ".join(str(p) for p in [*paths.values(), provenance]))


if __name__ == "__main__":
    main()
