"""`aggc.replay` reproduces the authors' clipper from norms alone, through its real CLI."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "fixtures" / "golden"


def norms_file(trace: dict, path: Path) -> Path:
    path.write_text("".join(json.dumps({"step": t, "norms": {g: v["norm"] for g, v in s.items()}}) + "\n" for t, s in enumerate(trace["steps"])))
    return path


def test_replay_cli_matches_golden_trace(tmp_path):
    """The official SFT preset (clip=aggc) on the recorded norms gives the recorded
    scale and EMA for every group and step (relative error <= 1e-5)."""
    trace = json.loads((GOLDEN / "trace_lora_official.json").read_text())
    out = tmp_path / "replayed.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "aggc.replay", f"norms={norms_file(trace, tmp_path / 'n.jsonl')}", "total_steps=200", f"out={out}", "clip=aggc"],
        capture_output=True, text=True, check=True, cwd=tmp_path,
    )
    assert "clipped down" in proc.stdout and "v_proj" in proc.stdout
    replayed = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(replayed) == 200
    for want, got in zip(trace["steps"], replayed):
        for g, w in want.items():
            assert got["groups"][g]["scale"] == pytest.approx(w["scale"], rel=1e-5)
            assert got["groups"][g]["ema"] == pytest.approx(w["ema"], rel=1e-5)


def test_replay_cli_static_bounds_with_overrides(tmp_path):
    """CLI overrides of the public clip keys reach the replay (the fixed-interval trace)."""
    trace = json.loads((GOLDEN / "trace_static_bounds.json").read_text())
    out = tmp_path / "r.jsonl"
    subprocess.run(
        [sys.executable, "-m", "aggc.replay", f"norms={norms_file(trace, tmp_path / 'n.jsonl')}", "total_steps=200", f"out={out}",
         "clip=aggc", "clip.adaptive=false", "clip.min_norm=0.05", "clip.max_norm=1.0", "clip.raise_small=true",
         "clip.beta=0.98", "clip.max_up_scale=0", "clip.max_down_scale=0"],
        capture_output=True, text=True, check=True, cwd=tmp_path,
    )
    replayed = [json.loads(line) for line in out.read_text().splitlines()]
    for want, got in zip(trace["steps"], replayed):
        for g, w in want.items():
            assert got["groups"][g]["scale"] == pytest.approx(w["scale"], rel=1e-5)
            assert got["groups"][g]["ema"] == pytest.approx(w["ema"], rel=1e-5)


def test_replay_rejects_bad_key_before_reading(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "aggc.replay", "norms=missing.jsonl", "out=o.jsonl", "clip.beta=1.5"],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert proc.returncode != 0 and "clip.beta" in proc.stderr


def test_replay_refuses_adagc_at_compose_time(tmp_path):
    """AdaGC's factors are per tensor, so logged group norms cannot replay them: refused as
    every compose-time error is (exit 2, the message and a fix), not by Hydra's job-failure
    report after the job started."""
    (tmp_path / "norms.jsonl").write_text('{"step": 1, "norms": {"q_proj": 1.0}}\n')
    proc = subprocess.run([sys.executable, "-m", "aggc.replay", "norms=norms.jsonl", "out=o.jsonl", "clip=adagc"],
                          capture_output=True, text=True, cwd=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 2 and "per-group norms cannot replay it" in lines[0], proc.stderr
    assert not (tmp_path / "o.jsonl").exists()


def test_replay_refuses_to_write_over_its_norms_file(tmp_path):
    """out=<the run's metrics.jsonl> replaced the run's own metrics with the replay."""
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"step": 1, "norms": {"q_proj": 1.0}}\n')
    before = metrics.read_text()
    proc = subprocess.run([sys.executable, "-m", "aggc.replay", "norms=metrics.jsonl", f"out={metrics}", "clip=aggc"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and "the norms file itself" in proc.stderr, proc.stderr
    assert metrics.read_text() == before
