"""Entry point of the tabulate stage: `python -m aggc.tables table=table1`. The table reads
the runs of its own cells and their fresh results: pass the `train_args`, `eval_args` (and
`tiny=true`) its grid ran with."""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from ..grid import table_cells, tiny_version
from ..paths import CONF_DIR
from . import write


@hydra.main(config_path=str(CONF_DIR), config_name="tables", version_base="1.3")
def main(cfg: DictConfig) -> None:
    spec = OmegaConf.to_container(cfg.table, resolve=True)
    if cfg.tiny:
        spec = tiny_version(spec)
    paths = write(spec, Path(cfg.runs_root), Path(cfg.paper_dir), Path(cfg.out_dir), *table_cells(cfg, spec))
    from ..provenance import stamp  # where each file comes from (README, Determinism and provenance)

    provenance = stamp(Path(cfg.out_dir), paths.values(), " ".join(["python", "-m", "aggc.tables", *sys.argv[1:]]))
    print(Path(paths["md"]).read_text())
    print("written:", ", ".join(str(p) for p in [*paths.values(), provenance]))


if __name__ == "__main__":
    main()
