"""Entry point of the evaluation stage: `python -m aggc.evaluate run=<run dir> eval=<benchmark>`."""

import hydra
from omegaconf import DictConfig

from ..paths import CONF_DIR
from . import evaluate


@hydra.main(config_path=str(CONF_DIR), config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    path = evaluate(cfg)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
