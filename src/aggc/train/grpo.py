"""RLVR with GRPO (TRL's GRPOTrainer): the paper's section 4.4 and Table 5.

The reward is verifiable and is the evaluation's own reading: 1 when the completion, cut
at the evaluation task's stop strings, has a final answer equal to the reference, else 0.
Prompt and rule come from `train.grpo.protocol`: `verl` (Table 5; the authors trained with
verl, the paper does not show its prompts): verl's example prompt as the user turn of the
chat template and verl's reward ("#### N" for GSM8K-style data, the last \\boxed{} for MATH;
`aggc.evaluate.scorers.verl_*`); `alpaca`: the SFT protocol (the Alpaca prompt, the user
turn of the chat template with `model.chat_template`; "The answer is: ", the authors' SFT
rule). Completions come from HF generate, or from vLLM on GPU when
`train.grpo.use_vllm`. Run directory, resume and clipping are the session's, as for SFT;
`metrics.jsonl` gains reward, KL and policy-gradient loss per step.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import statistics
from collections.abc import Callable
from pathlib import Path

import datasets
import numpy
import torch
import yaml
from omegaconf import DictConfig, OmegaConf
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList, TrainerCallback, set_seed
from trl import GRPOConfig, GRPOTrainer
from trl.models import unwrap_model_for_generation
from trl.trainer.utils import pad

from ..config import ConfigError, check_grpo_recipe, check_hardware, effective_batch, validate, world_size
from ..data.formats import format_prompt, load_sft_records, verl_prompt
from ..evaluate.scorers import gsm8k_reference_correct, math_reference_correct, verl_gsm8k_reward, verl_math_reward
from ..models import load_model_and_tokenizer
from ..paths import ROOT
from . import rundir
from .session import HarnessTrainer, finish_run, open_run, save_final, trainer_arguments
from .strategy import apply_strategy

log = logging.getLogger(__name__)

# protocol -> data format -> (the evaluation task whose prompt and stop strings apply, the answer rule)
ANSWER_RULES: dict[str, dict[str, tuple[str, Callable[[str, str], float]]]] = {
    "alpaca": {
        "arith": ("gsm8k.yaml", gsm8k_reference_correct),
        "gsm8k": ("gsm8k.yaml", gsm8k_reference_correct),
        "math": ("math.yaml", math_reference_correct),
    },
    "verl": {
        "arith": ("gsm8k_verl.yaml", verl_gsm8k_reward),
        "gsm8k": ("gsm8k_verl.yaml", verl_gsm8k_reward),
        "math": ("math_verl.yaml", verl_math_reward),
    },
}


def data_format(data: DictConfig) -> str:
    return data.get("format", data.kind)  # generated arith problems have no `format` key


def answer_rule(data: DictConfig, protocol: str) -> tuple[str, Callable[[str, str], float]]:
    if protocol not in ANSWER_RULES:
        raise ConfigError(f"train.grpo.protocol={protocol!r}: one of {', '.join(ANSWER_RULES)}")
    fmt = data_format(data)
    if fmt not in ANSWER_RULES[protocol]:
        raise ConfigError(
            f"data={data.name} (format {fmt!r}): GRPO needs a verifiable final answer; "
            f"one of the formats {', '.join(ANSWER_RULES[protocol])}"
        )
    return ANSWER_RULES[protocol][fmt]


def stop_strings(task: str) -> list[str]:
    """`generation_kwargs.until` of the lm-eval task `evaluation/<task>`: where the evaluation
    cuts a response before scoring it."""
    loader = type("TaskLoader", (yaml.SafeLoader,), {})
    loader.add_multi_constructor("!", lambda *_: None)  # lm-eval's `!function` hooks are not needed here
    return yaml.load((ROOT / "evaluation" / task).read_text(), loader)["generation_kwargs"]["until"]


def correctness_reward(rule: Callable[[str, str], bool], stops: list[str]):
    """TRL reward function: 1.0 per completion whose answer the rule accepts, else 0.0."""

    def correct(completions, answer, **_) -> list[float]:
        return [float(rule(cut(completion_text(c), stops), gold)) for c, gold in zip(completions, answer)]

    return correct


def completion_text(completion) -> str:
    """A completion is text, or (chat prompts) a list of messages, the last one the model's."""
    return completion if isinstance(completion, str) else completion[-1]["content"]


def cut(text: str, stops: list[str]) -> str:
    """The text before the first stop string, as lm-eval cuts a generation."""
    for stop in stops:
        text = text.split(stop)[0]
    return text


def prompt_dataset(records: list[dict], chat_template: bool, data_name: str, protocol: str = "alpaca",
                   fmt: str = "gsm8k") -> datasets.Dataset:
    """Columns `prompt` (a chat message list under the chat template, which TRL renders as the
    evaluation does) and `answer`, the reference. Records without an answer are dropped. The
    prompt is the protocol's: the Alpaca prompt, or verl's example prompt for `fmt`'s kind
    (MATH: the answer in \\boxed{}; GSM8K and arith: after "####")."""
    usable = [r for r in records if r.get("answer")]
    if not usable:
        raise ConfigError(f"data={data_name}: no record has a reference answer, so there is nothing to reward")
    if len(usable) < len(records):
        log.warning("data=%s: %d of %d records have no reference answer; GRPO skips them",
                    data_name, len(records) - len(usable), len(records))
    if protocol == "verl":
        prompts = [verl_prompt(r["instruction"], "math" if fmt == "math" else "gsm8k") for r in usable]
    else:
        prompts = [format_prompt(r["instruction"]) for r in usable]
    if chat_template:
        prompts = [[{"role": "user", "content": p}] for p in prompts]
    return datasets.Dataset.from_dict({"prompt": prompts, "answer": [r["answer"] for r in usable]})


def check_grpo(cfg: DictConfig, cuda_available: bool) -> None:
    """The GRPO recipe (`train.grpo`, as at compose time) and this launch and machine, before
    anything is loaded."""
    check_grpo_recipe(cfg)
    g = cfg.train.grpo
    t = cfg.train
    completions = effective_batch(t, world_size())["global_batch_size"]
    if completions % g.num_generations:
        raise ConfigError(
            f"the global batch (train.global_batch_size, or train.per_device_train_batch_size x "
            f"train.gradient_accumulation_steps x processes) = {completions} completions "
            f"per step: must be a multiple of train.grpo.num_generations={g.num_generations} (whole prompt groups)"
        )
    if g.use_vllm and not cuda_available:
        raise ConfigError("train.grpo.use_vllm=true: vLLM generates on GPUs only; on CPU set train.grpo.use_vllm=false "
                          "(HF generate)")
    if g.use_vllm and importlib.util.find_spec("vllm") is None:
        raise ConfigError("train.grpo.use_vllm=true: vllm is not installed (pip install -e '.[vllm]'), "
                          "or set train.grpo.use_vllm=false")


class LayoutFreeSampling(LogitsProcessor):
    """Samples each completion from softmax(logits / temperature) by the Gumbel-max trick,
    with noise drawn from that completion's own generator. Used with greedy decoding, so that
    a completion depends on its seed and the model only: not on which process generated it,
    its batch neighbours, or the global RNG (TRL seeds each rank apart and samples the batch
    from one stream, so 1 and 2 processes drew different completions)."""

    def __init__(self, seeds: list[int], temperature: float, device: torch.device):
        if not temperature > 0:
            raise ValueError(f"sampling temperature must be > 0 (got {temperature}); greedy decoding needs no sampler")
        self.temperature = temperature
        self.generators = [torch.Generator(device=device).manual_seed(seed) for seed in seeds]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        uniform = torch.stack([torch.rand(scores.shape[-1], generator=g, device=scores.device) for g in self.generators])
        gumbel = -torch.log(-torch.log(uniform.clamp(min=torch.finfo(uniform.dtype).tiny)))
        return scores.float() / self.temperature + gumbel


# GenerationConfig fields that make HF's sampling other than one draw from softmax(logits / T)
# per row (its warpers, beams, several sequences per prompt), with the values that leave it so.
# HF generate fills the fields TRL's config leaves unset from the model's generation_config.json.
NOT_LAYOUT_FREE = {"top_k": (None, 0), "top_p": (None, 1.0), "min_p": (None,), "typical_p": (None, 1.0),
                   "epsilon_cutoff": (None, 0.0), "eta_cutoff": (None, 0.0), "top_h": (None,), "num_beams": (None, 1),
                   "num_return_sequences": (None, 1)}


def check_layout_free_sampling(trainer_config: GenerationConfig, model_config: GenerationConfig) -> None:
    """TRL's sampling settings, completed from the model's generation config as HF generate
    completes them, must be ones `LayoutFreeSampling` reproduces: it applies the logits
    processors (repetition penalty, ...) and the temperature, not the warpers. A model whose
    generation_config.json sets e.g. min_p would be sampled with it by TRL and without it
    here: refused before training, naming the fields."""
    resolved = copy.deepcopy(trainer_config)
    resolved.update(**model_config.to_dict(), defaults_only=True)
    dropped = {k: getattr(resolved, k, None) for k, unset in NOT_LAYOUT_FREE.items() if getattr(resolved, k, None) not in unset}
    if dropped:
        raise ConfigError(
            "GRPO with HF generate samples each completion from softmax(logits / train.grpo.temperature) with its own "
            f"seed (grpo.LayoutFreeSampling), which does not apply {', '.join(f'{k}={v!r}' for k, v in dropped.items())} "
            "that HF generate would take from the model's generation_config.json (or TRL's generation_kwargs): "
            "remove them there, so that the run samples what its config says"
        )


def completion_seed(seed: int, step: int, row: int, evaluation: bool = False) -> int:
    """The sampling seed of the `row`-th completion of the global generation batch at `step`
    (of an evaluation's generation when `evaluation`): numpy's SeedSequence hash of the tuple,
    so distinct tuples get unrelated seeds (a linear mix of the numbers collides: (0, 1, 0)
    and (0, 0, 65537) drew the same completion)."""
    state = numpy.random.SeedSequence([seed, step, row, int(evaluation)]).generate_state(1, numpy.uint64)
    return int(state[0]) >> 1  # torch seeds are below 2**63


class RLVRTrainer(HarnessTrainer, GRPOTrainer):
    """GRPOTrainer whose completions do not depend on the process layout, and that also logs
    `pg_loss`.

    Sampling (HF generate): completion `i` of the global generation batch at step `t` is drawn
    with a generator seeded by (seed, t, i) (`LayoutFreeSampling`), so 1 process, 2 processes or
    gradient accumulation train on the same completions and compute the same gradient (tested
    with the clipper's group norms). Rank r holds rows r*n .. r*n+n-1 of the generation batch
    (accelerate shards the sampler's batches in rank order). vLLM samples with its own seeds.

    `pg_loss` is the step's objective less the KL term, i.e. the clipped policy-gradient loss
    (token mean, as verl's `actor/pg_loss`). Exact when a step's micro-batches hold equal
    numbers of completion tokens; otherwise the KL taken off is TRL's mean of the micro-batches'
    token means, not the step's token mean (the error is kl_coef times their difference)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.samples_with_hf_generate:
            check_layout_free_sampling(self.generation_config, self.model.generation_config)

    @property
    def samples_with_hf_generate(self) -> bool:
        """Whether TRL generates with HF generate, the path LayoutFreeSampling replaces."""
        return not (self.use_vllm or self.use_transformers_continuous_batching)

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        if not self.samples_with_hf_generate or images is not None or multimodal_fields:
            return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations, has_tool_images)
        device = self.accelerator.device
        prompts = [torch.tensor(ids) for ids in prompt_ids]
        input_ids = pad(prompts, self._tokenizer.pad_token_id, "left", self.pad_to_multiple_of).to(device)
        attention_mask = pad([torch.ones_like(t) for t in prompts], 0, "left", self.pad_to_multiple_of).to(device)
        first_row = self.accelerator.process_index * len(prompt_ids)
        sampling = LayoutFreeSampling(
            [completion_seed(self.args.seed, self.state.global_step, first_row + i, evaluation=not self.model.training)
             for i in range(len(prompt_ids))],
            self.temperature, device)
        greedy = copy.deepcopy(self.generation_config)  # the sampling is LayoutFreeSampling's (top-p/top-k unused)
        greedy.do_sample, greedy.temperature, greedy.top_p, greedy.top_k = False, None, None, None
        with (
            unwrap_model_for_generation(self.model_wrapped, self.accelerator,
                                        gather_deepspeed3_params=self.args.ds3_gather_for_generation,
                                        generation_kwargs=self.generation_kwargs,
                                        gradient_checkpointing_kwargs=self.args.gradient_checkpointing_kwargs) as model,
            torch.no_grad(),
            self._dist.summon_full_params(self.model_wrapped, recurse=False),
        ):
            generated = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=greedy,
                                       logits_processor=LogitsProcessorList([sampling]))
        # each completion up to and including its first end-of-sequence token, as TRL keeps it
        eos = torch.tensor(self.eos_token_ids)
        completions = []
        for row in generated[:, input_ids.size(1):].cpu():
            ends = torch.isin(row, eos).nonzero()
            completions.append(row[: int(ends[0]) + 1 if len(ends) else len(row)].tolist())
        return completions, None

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        kl = self._metrics["train"].get("kl")  # per micro-batch, since the last log
        if "loss" in logs:
            logs["pg_loss"] = logs["loss"] - self.beta * statistics.fmean(kl) if kl else logs["loss"]
        super().log(logs, start_time)


class ZeroVarianceWarning(TrainerCallback):
    """GRPO's silent failure: a prompt whose completions all get the same reward has zero
    advantages and adds no policy gradient; when every group is so, the PG loss is 0 and only
    the KL term trains. TRL logs the fraction of such groups as `frac_reward_zero_std`."""

    def __init__(self, threshold: float):
        self.threshold = threshold

    def on_log(self, args, state, control, logs=None, **kwargs):
        fraction = (logs or {}).get("frac_reward_zero_std")
        if fraction is not None and fraction >= self.threshold:
            log.warning(
                "step %d: fraction of zero-variance groups %.2f (reward mean %.3f): every completion of those prompts "
                "got the same reward, so their advantage is 0 and they add no policy gradient (GRPO's 'loss is 0' "
                "trap). Check the reward's answer format, the task's difficulty or max_completion_length",
                state.global_step, fraction, logs.get("reward", float("nan")),
            )


def grpo_arguments(cfg: DictConfig, output_dir: Path) -> GRPOConfig:
    """TRL's GRPOConfig: the Trainer arguments every trainer shares, and the GRPO recipe."""
    g = cfg.train.grpo
    return GRPOConfig(
        **trainer_arguments(cfg, output_dir),
        num_generations=g.num_generations,
        max_completion_length=g.max_completion_length,
        temperature=g.temperature,
        beta=g.kl_coef,
        # verl's GRPO as the authors ran it: losses averaged over all tokens of the step
        # ("token-mean"; TRL's dapo), KL by the k3 ("low_var_kl") estimator without TRL's
        # importance-ratio correction, advantages normalised by the group's std (TRL's default);
        # the PPO ratio against the trained model's own log-probabilities, not vLLM's.
        loss_type="dapo",
        use_bias_correction_kl=False,
        vllm_importance_sampling_correction=False,
        use_vllm=g.use_vllm,
        vllm_mode=g.vllm_mode,
        vllm_gpu_memory_utilization=g.vllm_gpu_memory_utilization,
        model_init_kwargs=reference_model_kwargs(cfg.model),
    )


def reference_model_kwargs(model: dict) -> dict | None:
    """TRL loads the KL reference model from the policy's path: a pinned hub revision must
    reach it too. (TRL then warns that the kwargs are ignored for the policy, which is
    already loaded; they still reach the reference model.)"""
    return {"revision": model["revision"]} if model.get("revision") else None


def loadable_by_path(model: dict, cache_dir: Path) -> dict:
    """The model spec, made loadable by `from_pretrained(path)` alone, as TRL loads the
    reference model: a GGUF file inside a package is not (model=smollm2_135m), so it is
    de-quantized once into `cache_dir/gguf/<file>` as a standard checkpoint and the policy
    (and with it the reference) is loaded from there."""
    if model["kind"] != "gguf":
        return model
    target = cache_dir / "gguf" / Path(model["gguf_file"]).stem
    if not (target / "config.json").exists():
        with torch.random.fork_rng(devices=[]):  # the run's randomness must not depend on the cache
            save_final(*load_model_and_tokenizer(model, cache_dir), target)
    return {**model, "kind": "hub", "hub_id": str(target), "revision": None}


def run(cfg: DictConfig, run_dir: Path) -> Path:
    """GRPO-train one cell into `run_dir`; resume from its last whole checkpoint if any."""
    clip = validate(cfg)
    cuda = torch.cuda.is_available()
    check_hardware(cfg, cuda)
    check_grpo(cfg, cuda)
    task, rule = answer_rule(cfg.data, cfg.train.grpo.protocol)
    run_dir = Path(run_dir)
    if rundir.is_completed(run_dir):
        log.info("%s is COMPLETED; nothing to do", run_dir)
        return run_dir
    records = load_sft_records(OmegaConf.to_container(cfg.data, resolve=True), "train")
    dataset = prompt_dataset(records, cfg.model.chat_template, cfg.data.name, cfg.train.grpo.protocol, data_format(cfg.data))

    session = open_run(cfg, run_dir, clip)
    set_seed(cfg.seed)
    spec = loadable_by_path(OmegaConf.to_container(cfg.model, resolve=True), Path(cfg.cache_dir))
    model, tokenizer = load_model_and_tokenizer(spec, Path(cfg.cache_dir))
    model = apply_strategy(model, cfg.strategy)
    trainer = RLVRTrainer(
        model=model,
        reward_funcs=correctness_reward(rule, stop_strings(task)),
        args=grpo_arguments(cfg, session.checkpoints),
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[session.callback, ZeroVarianceWarning(cfg.train.grpo.zero_variance_warning)],
    )
    session.train(trainer)
    finish_run(session, trainer, tokenizer)
    return run_dir
