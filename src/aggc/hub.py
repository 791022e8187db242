"""Hub checkpoints (`model.kind=hub`): whether one can load here, and how to provide it.

Checked at compose time by the training command (`aggc.cli`), without torch: offline
(HF_HUB_OFFLINE=1, as every command here runs), a checkpoint missing from the local cache
fails in a second with its id and what to do, not after 25-60 s in the hub's `OSError`.
"""

from __future__ import annotations

from pathlib import Path

from .config import ConfigError


def how_to_provide(hub_id: str) -> str:
    return (f"download it where the hub is reachable (`hf auth login`, then `hf download {hub_id}`; a gated model needs "
            "its access granted on the hub) into this cache, or point HF_HOME / HF_HUB_CACHE at a cache that holds it; "
            "or train a local model (model=tiny_llama, model=smollm2_135m: model.kind=tiny / gguf)")


def check_hub_model(hub_id: str, revision: str | None = None) -> None:
    """A local checkpoint directory (what from_pretrained loads when the path is a directory:
    another run's `final/`, make demo-real-grpo's start point) must hold config.json. Otherwise
    the id must be a repo id; offline, its config.json must be in the local Hugging Face cache.
    Online, a repo id is not checked here (from_pretrained downloads it; `hub_error` words its
    failure)."""
    from huggingface_hub import constants, try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    local = Path(hub_id)
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ConfigError(f"model.hub_id={hub_id}: a directory without config.json, so not a checkpoint "
                              "(a finished run's is its final/ folder)")
        return
    try:
        cached = try_to_load_from_cache(hub_id, "config.json", revision=revision)
    except HFValidationError as err:
        raise ConfigError(f"model.hub_id={hub_id}: no such local directory, and not a hub repo id "
                          f"({str(err).splitlines()[0]})") from None
    if not constants.HF_HUB_OFFLINE or isinstance(cached, str):
        return
    raise ConfigError(f"model.hub_id={hub_id}: not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) and "
                      f"HF_HUB_OFFLINE=1: {how_to_provide(hub_id)}")


def hub_error(hub_id: str, err: OSError) -> ConfigError:
    """The hub's own failure (not found, gated, no network) as one message with the id."""
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return ConfigError(f"model.hub_id={hub_id}: cannot be loaded ({first}): {how_to_provide(hub_id)}")
