"""Tokenization for supervised fine-tuning with loss on the response only."""

from __future__ import annotations

from aggc.data.formats import format_prompt

IGNORE_INDEX = -100


def prompt_text(instruction: str, tokenizer, chat_template: bool) -> str:
    """The authors' Alpaca prompt; with `chat_template`, that prompt as the user turn of the
    model's chat template (what lm-eval's `apply_chat_template` builds at evaluation)."""
    prompt = format_prompt(instruction)
    if not chat_template:
        return prompt
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False)


def tokenize_example(instruction: str, output: str, tokenizer, max_length: int, chat_template: bool = False) -> dict:
    """Prompt and response are tokenized separately and concatenated, so the
    prompt ids are exactly what generation will see at evaluation time and the
    label mask boundary cannot shift through a merge across the seam."""
    prompt = prompt_text(instruction, tokenizer, chat_template)
    prompt_ids = tokenizer(prompt, add_special_tokens=not chat_template)["input_ids"]
    response_ids = tokenizer(" " + output, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    input_ids = (prompt_ids + response_ids)[:max_length]
    labels = ([IGNORE_INDEX] * len(prompt_ids) + response_ids)[:max_length]
    return {"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels}


def tokenize_for_sft(records: list[dict], tokenizer, max_length: int, chat_template: bool = False) -> "datasets.Dataset":
    """Dataset of input_ids/attention_mask/labels, ready for DataCollatorForSeq2Seq."""
    import datasets  # here, not at the top: the training command checks its data before this import (aggc.cli)

    rows = [tokenize_example(r["instruction"], r["output"], tokenizer, max_length, chat_template) for r in records]
    columns = ("input_ids", "attention_mask", "labels")
    return datasets.Dataset.from_dict({c: [row[c] for row in rows] for c in columns})
