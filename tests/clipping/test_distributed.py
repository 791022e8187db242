"""1 process vs 2 real gloo processes on the same global batch: the clipper sees the same
group norms, applies the same factors, and the updated weights are equal, under DDP
(replicated gradients) and FSDP2 (`fully_shard`: DTensor gradient shards)."""


import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.tensor import DTensor

from aggc.clipping import ClipConfig, GradientClipper

pytestmark = pytest.mark.distributed

STEPS = 4
CONFIG = {"mode": "aggc", "groups": "trainable", "semantics": "reference", "beta": 0.5,
          "max_down_scale": 0, "max_up_scale": 0, "raise_small": True,
          "alpha_low": {"init": 0.9}, "alpha_high": {"init": 1.1}}


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.q_proj = torch.nn.Linear(8, 8)
        self.v_proj = torch.nn.Linear(8, 8)
        self.down_proj = torch.nn.Linear(8, 4)

    def forward(self, x):
        return self.down_proj(torch.tanh(self.q_proj(x)) * self.v_proj(x))


def batches():
    g = torch.Generator().manual_seed(0)
    # later steps spike so the clipper really clips
    return [(torch.randn(8, 8, generator=g) * (1 + 4 * (t == 2)), torch.randn(8, 4, generator=g)) for t in range(STEPS)]


def train(model, x_slice, world: int):
    torch.manual_seed(0)
    clipper = GradientClipper(model.named_parameters(), ClipConfig.from_dict(CONFIG), total_steps=STEPS)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05)
    reports, sharded = [], []
    for x, y in batches():
        xs, ys = x_slice(x), x_slice(y)
        # mean over the global batch: each rank's share is scaled so DDP's average equals it
        loss = torch.nn.functional.mse_loss(model(xs), ys)
        loss.backward()
        sharded.append(all(isinstance(p.grad, DTensor) for p in model.parameters()))
        reports.append(clipper.step().groups)
        optimizer.step()
        optimizer.zero_grad()
    return reports, all(sharded)


def worker(rank: int, world: int, init_file: str, mode: str, out: str):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = Block()
    shard = lambda t: t.chunk(world)[rank]
    if mode == "ddp":
        model = torch.nn.parallel.DistributedDataParallel(model)
    else:
        from torch.distributed.fsdp import fully_shard
        from torch.distributed.device_mesh import init_device_mesh
        mesh = init_device_mesh("cpu", (world,))
        for sub in (model.q_proj, model.v_proj, model.down_proj):
            fully_shard(sub, mesh=mesh)
        fully_shard(model, mesh=mesh)
    reports, sharded = train(model, shard, world)
    state = {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().clone() for k, v in model.state_dict().items()}
    if rank == 0:
        torch.save({"reports": reports, "sharded": sharded, "state": {k.removeprefix("module."): v for k, v in state.items()}}, out)
    dist.destroy_process_group()


def single_process():
    torch.manual_seed(0)
    model = Block()
    reports, _ = train(model, lambda t: t, 1)
    return reports, {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("mode", ["ddp", "fsdp2"])
def test_two_processes_equal_one(tmp_path, mode):
    out = str(tmp_path / "rank0.pt")
    mp.start_processes(worker, args=(2, str(tmp_path / "init"), mode, out), nprocs=2, join=True, start_method="spawn")
    got = torch.load(out)
    reports, state = single_process()
    assert len(got["reports"]) == STEPS
    assert got["sharded"] == (mode == "fsdp2"), "FSDP2 must hand the clipper DTensor shards, DDP plain tensors"
    clipped = 0
    for want, have in zip(reports, got["reports"]):
        for group in want:
            for key in ("norm", "factor", "ema"):
                assert have[group][key] == pytest.approx(want[group][key], rel=1e-5), (mode, group, key)
            clipped += want[group]["factor"] != 1.0
    assert clipped > 0, "the scenario must exercise clipping"
    for k, v in state.items():
        torch.testing.assert_close(got["state"][k], v, rtol=1e-5, atol=1e-6)
