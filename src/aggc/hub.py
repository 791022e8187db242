"""Hub checkpoints (`model.kind=hub`): whether one can load here, and how to provide it.

Checked at compose time by the training command (`aggc.cli`), without torch: offline
(HF_HUB_OFFLINE=1, as every command here runs), a checkpoint missing from the local cache
fails in a second with its id and what to do, not after 25-60 s in the hub's `OSError`.
"""

from __future__ import annotations

import os
from pathlib import Path

from .config import ConfigError


def how_to_provide(hub_id: str, revision: str | None = None) -> str:
    pin = f" --revision {revision}" if revision else ""
    return (f"download it where the hub is reachable (`hf auth login`, then `hf download {hub_id}{pin}`; a gated model "
            "needs its access granted on the hub) into this cache, or point HF_HOME / HF_HUB_CACHE at a cache that holds it; "
            "or train a local model (model=tiny_llama, model=smollm2_135m: model.kind=tiny / gguf)")


# What save_pretrained writes as a model's weights (transformers.utils names them; read here as
# plain names so the compose-time check does not import transformers).
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def check_hub_model(hub_id: str, revision: str | None = None) -> None:
    """A local checkpoint directory (what from_pretrained loads when the path is a directory:
    another run's `final/`, make demo-real-grpo's start point) must hold config.json and the
    weights. Otherwise the id must be a repo id; offline, its config.json must be in the local
    Hugging Face cache. Online, a repo id is not checked here (from_pretrained downloads it;
    `hub_error` words its failure)."""
    from huggingface_hub import constants, try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    if not isinstance(hub_id, str) or not hub_id.strip():
        raise ConfigError(f"model.hub_id={hub_id!r}: a hub repo id (org/name) or a local checkpoint directory")
    if revision is not None and not isinstance(revision, str):  # Hydra reads an all-digit commit hash as a number
        raise ConfigError(f"model.revision={revision!r}: a branch, tag or commit hash as a string (quote it: "
                          f"model.revision='\"{revision}\"')")
    local = Path(hub_id)
    if os.path.isdir(local):  # os.path: False for any path it cannot stat (a name too long), as from_pretrained reads it
        if not (local / "config.json").is_file():
            raise ConfigError(f"model.hub_id={hub_id}: a directory without config.json, so not a checkpoint "
                              "(a finished run's is its final/ folder)")
        if not any((local / name).is_file() and (local / name).stat().st_size > 0 for name in WEIGHT_FILES):
            raise ConfigError(f"model.hub_id={hub_id}: config.json but no weights, or empty ones ({', '.join(WEIGHT_FILES)}), so not "
                              "a whole checkpoint (a run killed while saving, or a PEFT adapter folder: a finished "
                              "run's final/ holds the merged model)")
        return
    try:
        cached = try_to_load_from_cache(hub_id, "config.json", revision=revision)
    except HFValidationError as err:
        raise ConfigError(f"model.hub_id={hub_id}: no such local directory, and not a hub repo id "
                          f"({str(err).splitlines()[0]})") from None
    if not constants.HF_HUB_OFFLINE or isinstance(cached, str):
        return
    pinned = f" at model.revision={revision}" if revision else ""
    raise ConfigError(f"model.hub_id={hub_id}: no such local directory, and not in the local Hugging Face cache"
                      f"{pinned} ({constants.HF_HUB_CACHE}) with HF_HUB_OFFLINE=1: {how_to_provide(hub_id, revision)}")


def hub_error(hub_id: str, err: OSError) -> ConfigError:
    """The hub's own failure (not found, gated, no network) as one message with the id; for a
    local checkpoint directory, what it lacks (nothing to download)."""
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if os.path.isdir(hub_id):
        return ConfigError(f"model.hub_id={hub_id}: the local checkpoint directory cannot be loaded ({first}): it must "
                           "hold what save_pretrained writes, the weights and the tokenizer beside config.json (a "
                           "finished run's final/ folder)")
    return ConfigError(f"model.hub_id={hub_id}: cannot be loaded ({first}): {how_to_provide(hub_id)}")
