"""Entry point of the training stage (Hydra): one run, or a sweep with `-m`."""

import atexit
import os
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from ..paths import CONF_DIR
from . import run


def distributed_from_slurm() -> None:
    """A Slurm job step of several tasks (the Slurm launcher's `tasks_per_node`, a table row's
    `resources.gpus`; or `srun` in slurm/array.sbatch) is one torch.distributed job, a
    process per task: submitit's helper exports MASTER_ADDR/PORT, RANK, WORLD_SIZE and
    LOCAL_RANK from Slurm's variables, and the Trainer (accelerate) initialises the process
    group from them (env://), as under torchrun. Each task keeps every GPU of its node and
    takes `cuda:LOCAL_RANK`. Nothing to do under torchrun (RANK set) or with one task."""
    env = os.environ
    if "SLURM_STEP_ID" in env and int(env.get("SLURM_NTASKS", "1")) > 1 and "RANK" not in env:
        from submitit.helpers import TorchDistributedEnvironment

        env.setdefault("SUBMITIT_EXECUTOR", "slurm")  # set in submitit's own jobs; under srun in array.sbatch, not
        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def leave_process_group() -> None:
    """Destroy the process group the Trainer (accelerate) opened, while the interpreter is
    still whole: left to interpreter shutdown, gloo's worker threads are torn down with
    Python half gone and a rank can die of SIGABRT ('terminate called without an active
    exception') after a finished run, failing the torchrun job. Registered with atexit, not
    called after each run, because a sweep (`-m`) trains its runs in one process group; and
    only once a run has ended, since a rank that raised mid-step may leave a collective pending
    that the teardown would wait on (30 minutes) instead of letting torchrun stop the job."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    distributed_from_slurm()
    atexit.unregister(leave_process_group)  # once, however many runs a sweep makes here
    run(cfg, Path(HydraConfig.get().runtime.output_dir))
    atexit.register(leave_process_group)  # after a run that ended: a rank that raised may hold gloo work its teardown waits on


if __name__ == "__main__":
    main()
