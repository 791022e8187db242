"""Every shipped config composes and validates; bad values fail at config time, naming the key."""

import subprocess
import sys
import time

import pytest
from hydra import compose, initialize_config_dir

from aggc.config import ConfigError, validate
from aggc.paths import CONF_DIR, ROOT

GROUPS = ("model", "data", "strategy", "clip", "train", "experiment")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def composed(*overrides: str):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_every_group_has_options():
    for group in GROUPS:
        assert options(group), group


@pytest.mark.parametrize("group, option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_shipped_config_composes_and_validates(group, option):
    overrides = [f"{group}={option}"]
    if group == "clip" and option in ("aggc", "aggc_paper", "adagc", "none"):
        overrides.append("strategy=lora")  # adapter-only presets need adapters
    if group == "train" and option == "paper_glue":
        overrides += ["model=deberta_v3_base", "data=glue_cola"]  # Table 6: looked up by GLUE task and strategy
    cfg = composed(*overrides)
    validate(cfg)
    assert cfg[group if group != "experiment" else "model"] is not None


def test_strategy_selects_its_clip_preset_and_cli_overrides_it():
    assert composed("strategy=aggc").clip.name == "aggc"
    assert composed("strategy=lora").clip.name == "global"
    assert composed("strategy=lora", "clip=none").clip.mode == "none"
    assert composed("strategy=aggc", "clip.beta=0.5").clip.beta == 0.5


@pytest.mark.parametrize(
    "override, key",
    [
        ("clip.beta=1.0", "clip.beta"),
        ("clip.beta=-0.1", "clip.beta"),
        ("clip.min_norm=-1", "clip.min_norm"),
        ("clip.max_down_scale=-0.5", "clip.max_down_scale"),
        ("clip.semantics=papr", "clip.semantics"),
        ("clip.schedule.kind=cosine", "clip.schedule.kind"),
        ("clip.schedule.start=0.8", "clip.schedule.start + clip.schedule.width"),
        ("clip.schedule.width=0", "clip.schedule.width"),
        ("clip.nonfinite=ignore", "clip.nonfinite"),
        ("clip.groups=all", "clip.groups"),
        ("+clip.betta=0.9", "clip.betta"),
        ("clip.alpha_high.late=-1", "clip.alpha_high.late"),
        ("train.learning_rate=0", "train.learning_rate"),
        ("train.per_device_train_batch_size=0", "train.per_device_train_batch_size"),
        ("data.kind=ftp", "data.kind"),
    ],
)
def test_bad_values_fail_naming_the_key(override, key):
    with pytest.raises(ConfigError) as err:
        validate(composed(override))
    assert key in str(err.value)


def test_paper_semantics_cannot_use_late_zero():
    """0 means 'same as init' only in the authors' code; eq. 5 would use 0 itself."""
    validate(composed("clip.alpha_high.late=0"))  # reference: fine
    with pytest.raises(ConfigError, match="clip.alpha_high.late"):
        validate(composed("clip=aggc_paper", "clip.alpha_high.late=0"))


def test_adapter_groups_on_full_finetune_is_refused():
    with pytest.raises(ConfigError, match="clip.groups=trainable"):
        validate(composed("strategy=full_ft", "clip=aggc"))
    validate(composed("strategy=full_ft", "clip=aggc", "clip.groups=trainable"))


def test_training_cli_fails_fast_before_building_a_model(tmp_path):
    start = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "aggc.train", "clip.beta=1.5", f"runs_root={tmp_path}"],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert proc.returncode != 0
    assert "clip.beta=1.5" in proc.stderr
    assert not any(tmp_path.rglob("metrics.jsonl")) and not any(tmp_path.rglob("checkpoints"))
    assert time.time() - start < 60


def test_fsdp_on_cpu_refuses_instead_of_training_ddp():
    from aggc.config import check_hardware

    cfg = composed("train.fsdp=full_shard")
    validate(cfg)
    with pytest.raises(ConfigError, match="silently train plain DDP"):
        check_hardware(cfg, cuda_available=False)
    check_hardware(cfg, cuda_available=True)
    plain = composed()
    with pytest.raises(ConfigError, match="accelerate launch asked for FSDP"):  # experiments/accelerate/fsdp2.yaml
        check_hardware(plain, cuda_available=False, environ={"ACCELERATE_USE_FSDP": "true"})
    check_hardware(plain, cuda_available=False, environ={})


def test_shipped_accelerate_configs_load():
    """Every config under experiments/accelerate parses as accelerate's own config."""
    from accelerate.commands.config.config_args import load_config_from_file

    kinds = {p.stem: load_config_from_file(str(p)) for p in (ROOT / "experiments" / "accelerate").glob("*.yaml")}
    assert kinds["ddp"].distributed_type == "MULTI_GPU"
    assert kinds["fsdp2"].distributed_type == "FSDP" and kinds["fsdp2"].fsdp_config["fsdp_version"] == 2


def test_deepspeed_is_refused_for_clip_modes_that_need_live_gradients():
    with pytest.raises(ConfigError, match="Use FSDP2"):
        validate(composed("train.deepspeed=ds.json"))
    validate(composed("strategy=lora", "clip=none", "train.deepspeed=ds.json"))
