"""`aggc.bench --quick` runs and writes its JSON and Markdown (it asserts nothing about speed:
speed is judged from the committed full-mode JSON, never by a timed test)."""

import json

from aggc.bench import lora_gradients, main, markdown, peak_memory_mb


def test_quick_bench_writes_results(tmp_path):
    result = main(["--quick", "--out-dir", str(tmp_path)])
    saved = json.loads((tmp_path / "quick.json").read_text())
    assert saved["clip_kernel"]["ratios"].keys() == result["clip_kernel"]["ratios"].keys()
    # AGGC never waits on the device in clip(); the authors' per-tensor pattern waits once per tensor
    syncs = saved["host_syncs"]
    assert (syncs["clip"], syncs["step"]) == (0, 1)
    assert syncs["naive_per_tensor"] == syncs["tensors"] == 2 * 7 * 2
    assert "aggc / none" in (tmp_path / "quick.md").read_text()
    # the clipper's state does not grow with the tensor count: O(groups)
    memory = saved["clipper_memory"]
    assert memory["1_layers"]["state_bytes"] == memory["8_layers"]["state_bytes"]
    # the full mode's peak memory lines, GPU's included (rendered here from a made-up entry)
    result["peak_memory_mb"] = {"aggc": {"rss": 545.0, "gpu": 1234.0}}
    assert "peak GPU memory allocated of tiny training, aggc: 1234 MB" in markdown(result)


def test_peak_memory_is_read_from_a_fresh_training_process():
    peak = peak_memory_mb("aggc", 1, "cpu")
    assert set(peak) == {"rss"} and peak["rss"] > 100  # torch and a model alone take more than 100 MB


def test_gradient_set_keeps_llama2_7b_tensor_count_and_ratios():
    params = lora_gradients(scale=64, device="cpu")
    assert len(params) == 2 * 7 * 32  # 224 adapter pairs
    shapes = {n.split(".")[-4] + n.split(".")[-3]: tuple(p.shape) for n, p in params[:14]}
    assert shapes["up_projlora_B"] == (11008 // 64, 128 // 64)
    assert shapes["q_projlora_A"] == (128 // 64, 4096 // 64)
