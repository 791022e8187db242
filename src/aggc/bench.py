"""What clipping costs, measured side by side: `python -m aggc.bench [--quick] [--device cuda]`.

Every figure is a ratio of timings taken in the same process, interleaved, the starting
function rotating every round (A, B, C, then B, C, A, ...), as the median of the
repetitions after warm-up. Writes
`results/bench/<name>.json` and `results/bench/<name>.md`.

1. clip kernel on a LoRA-r128 gradient set shaped like Llama-2-7B's seven linear
   modules (224 adapter pairs), every dimension divided by `--scale` to fit memory;
2. device->host synchronisations per clip step (AGGC's and the authors' per-tensor pattern's);
3. optimizer steps of a tiny Llama + LoRA with clip none / global / AGGC, and the clip alone;
4. the clipper's own memory per group, and peak memory (RSS; on GPU also torch's peak
   allocated) of training with and without AGGC;
5. with `--demo`: wall time of `make demo`'s stages (train, evaluate, tables; setup and
   the cached tiny base model excluded), so end-to-end regressions show.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from .clipping import ClipConfig, GradientClipper
from .paths import RESULTS_DIR

LLAMA2_7B = {"hidden": 4096, "intermediate": 11008, "layers": 32, "rank": 128}
# (module, in_features, out_features) of Llama's seven linear module types
MODULES = (
    ("q_proj", "hidden", "hidden"), ("k_proj", "hidden", "hidden"), ("v_proj", "hidden", "hidden"), ("o_proj", "hidden", "hidden"),
    ("gate_proj", "hidden", "intermediate"), ("up_proj", "hidden", "intermediate"), ("down_proj", "intermediate", "hidden"),
)
MODES = {
    "aggc_reference": {"mode": "aggc", "semantics": "reference"},
    "aggc_paper": {"mode": "aggc", "semantics": "paper", "max_up_scale": 0, "max_down_scale": 0, "raise_small": True},
    "adagc": {"mode": "adagc"},
}


def lora_gradients(scale: int, device: str, layers: int | None = None) -> list[tuple[str, torch.nn.Parameter]]:
    """LoRA A/B tensors (with random gradients) for every layer and module type of Llama-2-7B,
    each dimension divided by `scale`: the tensor count and the shape ratios are kept."""
    dims = {k: v // scale for k, v in LLAMA2_7B.items() if k != "layers"}
    g = torch.Generator(device="cpu").manual_seed(0)
    params = []
    for layer in range(layers or LLAMA2_7B["layers"]):
        for module, fan_in, fan_out in MODULES:
            block = "mlp" if module in ("gate_proj", "up_proj", "down_proj") else "self_attn"
            for part, shape in (("A", (dims["rank"], dims[fan_in])), ("B", (dims[fan_out], dims["rank"]))):
                p = torch.nn.Parameter(torch.empty(shape, device=device))
                p.grad = torch.randn(shape, generator=g).to(device)
                params.append((f"model.layers.{layer}.{block}.{module}.lora_{part}.default.weight", p))
    return params


def naive_per_tensor_clip(params: list[tuple[str, torch.nn.Parameter]], ema: dict[str, float], beta: float = 0.95) -> None:
    """The authors' pattern: one `.item()` per tensor, Python arithmetic per group, one
    multiply per tensor. AGGC reference semantics (caps 0.9/1.1), for timing only."""
    sums: dict[str, float] = {}
    for name, p in params:
        group = name.split(".")[-4]
        sums[group] = sums.get(group, 0.0) + p.grad.norm().item() ** 2
    factors = {}
    for group, sq in sums.items():
        n = (sq + 1e-16) ** 0.5
        upper = 0.6 * ema.get(group, 0.0)
        factors[group] = max(upper / (n + 1e-12), 0.9) if upper > 0 and n > upper + 1e-12 else 1.0
        ema[group] = beta * ema.get(group, 0.0) + (1 - beta) * n * factors[group]
    for name, p in params:
        p.grad.mul_(factors[name.split(".")[-4]])


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def interleaved(fns: dict[str, callable], repeats: int, warmup: int, device: str) -> dict[str, float]:
    """Median seconds per call of each function, calls interleaved across functions; the
    starting function rotates every round, so each takes every position in the round."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for round_ in range(warmup + repeats):
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            fn = fns[name]
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def bench_clip_kernel(scale: int, repeats: int, warmup: int, device: str, layers: int | None) -> dict:
    params = lora_gradients(scale, device, layers)
    grads = [p.grad for _, p in params]
    clippers = {name: GradientClipper(params, ClipConfig.from_dict({**cfg, "groups": "lora"}), total_steps=10**6) for name, cfg in MODES.items()}
    ema: dict[str, float] = {}
    fns = {
        "none": lambda: None,
        "foreach_mul_floor": lambda: torch._foreach_mul_(grads, 1.0),
        "global": lambda: torch.nn.utils.clip_grad_norm_([p for _, p in params], 1.0, foreach=True),
        **{name: clipper.clip for name, clipper in clippers.items()},
        "naive_per_tensor": lambda: naive_per_tensor_clip(params, ema),
    }
    t = interleaved(fns, repeats, warmup, device)
    numel = sum(g.numel() for g in grads)
    return {
        "tensors": len(grads),
        "elements": numel,
        "scale": scale,
        "seconds": t,
        "ratios": {
            "aggc_reference / global": t["aggc_reference"] / t["global"],
            "aggc_paper / global": t["aggc_paper"] / t["global"],
            "adagc / global": t["adagc"] / t["global"],
            "naive_per_tensor / aggc_reference": t["naive_per_tensor"] / t["aggc_reference"],
            "aggc_reference / foreach_mul_floor": t["aggc_reference"] / t["foreach_mul_floor"],
        },
    }


def count_host_syncs(device: str) -> dict:
    """Device->host transfers in `clip()` (must be 0), in `step()` (1, for the log), and in
    the authors' per-tensor pattern (one per tensor: each stalls the GPU's queue, which is
    why that pattern's cost shows on GPU and hardly on CPU)."""
    params = lora_gradients(64, device, layers=2)
    clipper = GradientClipper(params, ClipConfig.from_dict({"mode": "aggc"}), total_steps=100)
    counts = {"tensors": len(params)}
    for label, fn in (("clip", clipper.clip), ("step", clipper.step), ("naive_per_tensor", lambda: naive_per_tensor_clip(params, {}))):
        if device.startswith("cuda"):
            counts[label] = _cuda_syncs(fn, device)
        else:
            counts[label] = _instrumented_syncs(fn)
    return counts


def _instrumented_syncs(fn) -> int:
    calls = []
    originals = {m: getattr(torch.Tensor, m) for m in ("item", "tolist", "__float__", "__bool__", "cpu", "numpy")}

    def spy(method):
        def wrapper(self, *a, **k):
            calls.append(method)
            return originals[method](self, *a, **k)
        return wrapper

    try:
        for m in originals:
            setattr(torch.Tensor, m, spy(m))
        fn()
    finally:
        for m, original in originals.items():
            setattr(torch.Tensor, m, original)
    return len(calls)


def _cuda_syncs(fn, device: str) -> int:
    import warnings

    torch.cuda.synchronize(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def tiny_lora_model(device: str, seed: int = 0):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=512, hidden_size=128, intermediate_size=352, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    model = LlamaForCausalLM(config)
    targets = [m for m, _, _ in MODULES]
    return get_peft_model(model, LoraConfig(r=16, lora_alpha=16, target_modules=targets, task_type="CAUSAL_LM")).to(device)


def tiny_step(model, optimizer, clipper: GradientClipper | None, ids: torch.Tensor) -> None:
    """One optimizer step of the tiny model on `ids`: forward, backward, clip (unless no
    clipper), AdamW."""
    model(input_ids=ids, labels=ids).loss.backward()
    if clipper is not None:
        clipper.clip()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def bench_train_step(repeats: int, warmup: int, device: str, batch: int = 16, length: int = 96) -> dict:
    """Optimizer steps/s of the tiny Llama + LoRA (forward, backward, clip, AdamW). One model
    and optimizer for all modes, so only the clipping differs between them."""
    ids = torch.randint(0, 512, (batch, length), generator=torch.Generator().manual_seed(0)).to(device)
    model = tiny_lora_model(device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    clippers = {mode: GradientClipper(model.named_parameters(), ClipConfig.from_dict({"mode": mode, "groups": "lora"}),
                                      total_steps=10**6) for mode in ("global", "aggc")}

    steps = {mode: (lambda clipper=clippers.get(mode): tiny_step(model, optimizer, clipper, ids))
             for mode in ("none", "global", "aggc")}
    t = interleaved(steps, repeats, warmup, device)
    # The clip alone on this model's gradients: its share of a step, finer than the step
    # ratios, whose run-to-run noise on a shared CPU is a few percent.
    model(input_ids=ids, labels=ids).loss.backward()
    clip_seconds = interleaved({m: c.clip for m, c in clippers.items()}, repeats, warmup, device)
    optimizer.zero_grad(set_to_none=True)
    return {"seconds_per_step": t, "clip_seconds": clip_seconds,
            "ratios": {"aggc / none": t["aggc"] / t["none"], "global / none": t["global"] / t["none"],
                       "(none + aggc clip) / none": 1 + clip_seconds["aggc"] / t["none"],
                       "(none + global clip) / none": 1 + clip_seconds["global"] / t["none"]}}


def clipper_memory(device: str) -> dict:
    """Bytes the clipper keeps: its state per group, independent of the tensor count."""
    out = {}
    for layers in (1, 8):
        params = lora_gradients(64, device, layers=layers)
        clipper = GradientClipper(params, ClipConfig.from_dict({"mode": "aggc"}))
        state = clipper.rule.state_dict()
        nbytes = sum(v.numel() * v.element_size() for v in state.values() if isinstance(v, torch.Tensor))
        out[f"{layers}_layers"] = {"tensors": len(params), "groups": len(clipper.group_names), "state_bytes": nbytes}
    return out


def peak_memory_mb(mode: str, steps: int, device: str) -> dict[str, float]:
    """Peak memory of `steps` tiny training steps with `mode`, in a fresh process (so no
    earlier measurement raises the peak): its RSS, and on GPU torch's peak allocated
    memory (what Table 8 reports)."""
    code = f"import json; from aggc.bench import tiny_training_peak; print(json.dumps(tiny_training_peak({mode!r}, {steps}, {device!r})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"peak memory of tiny training with clip {mode} on {device} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def tiny_training_peak(mode: str, steps: int, device: str) -> dict[str, float]:
    model = tiny_lora_model(device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    clipper = GradientClipper(model.named_parameters(), ClipConfig.from_dict({"mode": mode, "groups": "lora"}))
    ids = torch.randint(0, 512, (16, 96), device=device)
    for _ in range(steps):
        tiny_step(model, optimizer, clipper, ids)
    peak = {"rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.startswith("cuda"):
        peak["gpu"] = torch.cuda.max_memory_allocated(device) / 2**20
    return peak


def bench_startup(rounds: int, runs_root: Path) -> dict:
    """How fast a bad config value fails, against `import torch, transformers` (the cost the
    compose-time check avoids): each command's wall time in a fresh process, interleaved and
    rotating, medians. The failing commands must exit 2 with no traceback."""
    failing = {f"train {bad}": [sys.executable, "-m", "aggc.train", bad, f"runs_root={runs_root}"]
               for bad in ("clip.beta=1.5", "seed=-1")}
    failing["train -m clip.beta=0.1,1.5"] = [sys.executable, "-m", "aggc.train", "-m", "clip.beta=0.1,1.5", f"runs_root={runs_root}"]
    commands = {"import torch, transformers": [sys.executable, "-c", "import torch, transformers"], **failing}
    times: dict[str, list[float]] = {name: [] for name in commands}
    names = list(commands)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter()
            proc = subprocess.run(commands[name], capture_output=True, text=True)
            times[name].append(time.perf_counter() - start)
            if name in failing and (proc.returncode != 2 or "Traceback" in proc.stderr):
                raise RuntimeError(f"{name}: expected exit 2 without a traceback, got {proc.returncode}:\n{proc.stderr}")
    seconds = {name: statistics.median(t) for name, t in times.items()}
    base = seconds["import torch, transformers"]
    return {"rounds": rounds, "seconds": seconds, "ratios": {f"{name} / import": seconds[name] / base for name in failing}}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({torch.get_num_threads()} threads)"
    except OSError:
        pass
    return platform.machine()


def demo_stages(work_dir: Path) -> dict:
    """Run `make demo`'s pipeline (aggc.grid, table=demo) in `work_dir`; its stage timings."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    subprocess.run([sys.executable, "-m", "aggc.grid", "table=demo", f"runs_root={work_dir / 'runs'}",
                    f"out_dir={work_dir / 'out'}"], check=True, env=env)
    return json.loads((work_dir / "out" / "table1.timing.json").read_text())


def markdown(result: dict) -> str:
    k = result["clip_kernel"]
    lines = [
        f"# Clipping cost — {result['device_name']}",
        "",
        f"`{result['command']}`; medians of {result['repeats']} interleaved repetitions after {result['warmup']} warm-up.",
        "",
        f"## Clip kernel: {k['tensors']} LoRA tensors, {k['elements']:,} elements (Llama-2-7B r128 shapes / {k['scale']})",
        "",
        "| mode | ms |",
        "|---|---:|",
        *(f"| {m} | {s * 1e3:.3f} |" for m, s in k["seconds"].items()),
        "",
        "| ratio | value |",
        "|---|---:|",
        *(f"| {r} | {v:.2f} |" for r, v in k["ratios"].items()),
        "",
        f"## Host synchronisations per step: clip() {result['host_syncs']['clip']}, step() {result['host_syncs']['step']}"
        f"; the naive per-tensor pattern {result['host_syncs']['naive_per_tensor']} for {result['host_syncs']['tensors']} tensors",
        "",
        "## Training step (tiny Llama + LoRA r16)",
        "",
        "| mode | ms/step |",
        "|---|---:|",
        *(f"| {m} | {s * 1e3:.1f} |" for m, s in result["train_step"]["seconds_per_step"].items()),
        "",
        *(f"- clip alone, {m}: {v * 1e3:.2f} ms" for m, v in result["train_step"]["clip_seconds"].items()),
        *(f"- {r}: {v:.3f}" for r, v in result["train_step"]["ratios"].items()),
        "",
        "## Memory",
        "",
        *(f"- clipper state, {v['tensors']} tensors in {v['groups']} groups: {v['state_bytes']} bytes" for v in result["clipper_memory"].values()),
    ]
    for mode, peak in result.get("peak_memory_mb", {}).items():
        lines += [f"- peak {'RSS' if kind == 'rss' else 'GPU memory allocated'} of tiny training, {mode}: {mb:.0f} MB"
                  for kind, mb in peak.items()]
    if "demo" in result:
        stages = result["demo"]["seconds"]
        lines += ["", f"## End to end: `make demo` ({result['demo']['cells']} training cells), wall time", "",
                  *(f"- {stage}: {s / 60:.1f} min" for stage, s in stages.items()), f"- total: {sum(stages.values()) / 60:.1f} min"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds: small shapes, 1 repetition (CI)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--name", default=None, help="output name (default: the device)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR / "bench")
    parser.add_argument("--demo", action="store_true", help="also time make demo's stages (about 8 minutes on 2 cores)")
    parser.add_argument("--scale", type=int, default=None,
                        help="divide the clip kernel's dimensions by this (default: 16 with --quick, 4 on CPU, 1 on GPU: the real shapes)")
    parser.add_argument("--startup", action="store_true",
                        help="only: how fast a bad config value fails vs import torch, transformers (results/bench/startup.*)")
    args = parser.parse_args(argv)
    if args.startup:
        return startup_main(args, argv)

    repeats, warmup = (1, 1) if args.quick else (7, 2)
    scale, layers = (16, 2) if args.quick else (4 if args.device == "cpu" else 1, None)
    scale = args.scale or scale
    device_name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else cpu_name()
    result = {
        "command": " ".join(["python -m aggc.bench", *(argv if argv is not None else sys.argv[1:])]),
        "device": args.device,
        "device_name": device_name,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "repeats": repeats,
        "warmup": warmup,
        "clip_kernel": bench_clip_kernel(scale, repeats, warmup, args.device, layers),
        "host_syncs": count_host_syncs(args.device),
        "train_step": bench_train_step(repeats * 3, warmup, args.device, batch=4 if args.quick else 16),
        "clipper_memory": clipper_memory(args.device),
    }
    if not args.quick:
        result["peak_memory_mb"] = {m: peak_memory_mb(m, 20, args.device) for m in ("none", "aggc")}
    if args.demo:
        with tempfile.TemporaryDirectory() as work_dir:
            result["demo"] = demo_stages(Path(work_dir))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    name = args.name or ("quick" if args.quick else args.device.split(":")[0])
    (args.out_dir / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out_dir / f"{name}.md").write_text(markdown(result))
    from .provenance import stamp  # commit, command, stack (README, Determinism and provenance)

    stamp(args.out_dir, [f"{name}.json", f"{name}.md"], result["command"])
    print(markdown(result))
    return result


def startup_main(args, argv: list[str] | None) -> dict:
    with tempfile.TemporaryDirectory() as runs_root:
        result = {"command": " ".join(["python -m aggc.bench", *(argv if argv is not None else sys.argv[1:])]),
                  "device_name": cpu_name(), "startup": bench_startup(3 if args.quick else 7, Path(runs_root))}
    lines = [f"# A bad config value fails before torch loads — {result['device_name']}", "",
             f"`{result['command']}`; wall time of a fresh process, medians of {result['startup']['rounds']} interleaved rounds.", "",
             "| command | s |", "|---|---:|", *(f"| {n} | {s:.2f} |" for n, s in result["startup"]["seconds"].items()), "",
             *(f"- {n}: {v:.2f}" for n, v in result["startup"]["ratios"].items())]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "startup.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out_dir / "startup.md").write_text("\n".join(lines) + "\n")
    from .provenance import stamp

    stamp(args.out_dir, ["startup.json", "startup.md"], result["command"])
    print("\n".join(lines))
    return result


if __name__ == "__main__":
    main()
