"""The run's wandb record: what metrics.jsonl holds, as panels, in one wandb run per run directory.

Every optimizer step logs the loss and learning rate (`train/*`) and, per clip group, the
pre-clip norm, post-clip norm, factor, interval bounds and EMA (`clip/<group>/<field>`), at
wandb step = the step's index in metrics.jsonl. The run's resolved config is the wandb config.

One wandb run per run directory: its id is stored in `wandb.json` beside the run's files and
reused with `resume="allow"` when the run resumes. wandb writes an offline run's history to
disk when the run finishes, so a process killed mid-run leaves none of its steps there (its
folder holds only a header): `wandb.json` also records the last step of a run that finished
(`step`), and a process that starts again first logs metrics.jsonl's records after that step
(the steps before its checkpoint), then its own. wandb keeps a step once: a step logged again
(online, after a crash that did flush) is dropped by wandb, not duplicated. Offline (the default,
`wandb.mode=offline`) each process writes its own `wandb/offline-run-*-<id>` folder; `wandb
sync` uploads them in order as one run. The Trainer's own wandb integration is off
(`report_to=[]`): it would start a second run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from .rundir import atomic_write_text

WANDB_STATE = "wandb.json"
# metrics.jsonl's per-group fields -> the panel name under clip/<group>/
CLIP_FIELDS = {"norms": "norm", "post_norms": "post_norm", "factors": "factor", "lower": "lower", "upper": "upper", "ema": "ema"}
TRAIN_FIELDS = ("loss", "lr", "grad_norm", "reward", "reward_std", "frac_reward_zero_std", "kl", "pg_loss", "entropy")


def wandb_row(record: dict) -> dict:
    """A metrics.jsonl record as wandb keys; non-finite and absent values are left out."""
    row = {f"train/{k}": record[k] for k in TRAIN_FIELDS if _finite(record.get(k))}
    for field, name in CLIP_FIELDS.items():
        for group, value in (record.get(field) or {}).items():
            if _finite(value):
                row[f"clip/{group}/{name}"] = value
    row["train/skipped"] = int(bool(record.get("skipped")))
    row["train/nonfinite_groups"] = len(record.get("nonfinite_groups") or [])
    return row


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class WandbLog:
    """The run directory's wandb run (rank 0 only). `logged`: the run's metrics.jsonl records
    so far (a resumed run's steps before its checkpoint)."""

    def __init__(self, cfg: DictConfig, run_dir: Path, logged: list[dict] = ()):
        import wandb
        from wandb.sdk.lib.runid import generate_id

        self.state_path = Path(run_dir) / WANDB_STATE
        state = json.loads(self.state_path.read_text()) if self.state_path.exists() else {"id": generate_id(), "step": -1}
        self.id, self.last_step = state["id"], state["step"]
        self._save()  # the id is fixed before the first step: a crash at once resumes the same wandb run
        self.run = wandb.init(
            id=self.id, resume="allow", mode=cfg.wandb.mode, dir=str(run_dir), project=cfg.wandb.project,
            entity=cfg.wandb.entity or None, name=f"{Path(run_dir).parent.name}/{Path(run_dir).name}",
            config=OmegaConf.to_container(cfg, resolve=True), settings=wandb.Settings(silent=True, console="off"),
        )
        self.last_step = max(self.last_step, self.run.step - 1)  # online: the steps the server already holds
        for record in logged:
            self.write(record)

    def write(self, record: dict) -> None:
        """One step's record; a step this wandb run already holds is skipped."""
        step = int(record["step"])
        if step <= self.last_step:
            return
        self.run.log(wandb_row(record), step=step)
        self.last_step = step

    def _save(self) -> None:
        atomic_write_text(self.state_path, json.dumps({"id": self.id, "step": self.last_step}) + "\n")

    def close(self) -> None:
        """Finish the wandb run (its history reaches disk now), then record its last step."""
        self.run.finish()
        self._save()
