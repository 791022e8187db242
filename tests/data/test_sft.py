"""SFT tokenization: loss only on the response, and outputs the Seq2Seq collator accepts."""

import pytest
import torch
from transformers import DataCollatorForSeq2Seq

from aggc.data import arith, format_prompt, tokenize_for_sft
from aggc.data.formats import from_arith
from aggc.data.sft import IGNORE_INDEX
from aggc.models import train_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    records = arith.generate(300, seed=0, split="pretrain")
    return train_tokenizer([format_prompt(r["question"]) + " " + r["output"] for r in records], vocab_size=400)


@pytest.fixture(scope="module")
def records():
    return [from_arith(r) for r in arith.generate(8, seed=0, split="train")]


def test_labels_are_masked_exactly_on_the_prompt_tokens(tokenizer, records):
    dataset = tokenize_for_sft(records, tokenizer, max_length=512)
    for record, row in zip(records, dataset):
        prompt_ids = tokenizer(format_prompt(record["instruction"]))["input_ids"]
        n = len(prompt_ids)
        assert row["input_ids"][:n] == prompt_ids
        assert row["labels"][:n] == [IGNORE_INDEX] * n
        assert row["labels"][n:] == row["input_ids"][n:]
        assert IGNORE_INDEX not in row["labels"][n:]


def test_response_is_space_output_eos(tokenizer, records):
    row = tokenize_for_sft(records[:1], tokenizer, max_length=512)[0]
    response = [t for t in row["labels"] if t != IGNORE_INDEX]
    assert response[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(response[:-1]) == " " + records[0]["output"]
    assert row["input_ids"][0] == tokenizer.bos_token_id


def test_truncation_cuts_input_and_labels_alike(tokenizer, records):
    full = tokenize_for_sft(records, tokenizer, max_length=512)
    cut = tokenize_for_sft(records, tokenizer, max_length=40)
    for long, short in zip(full, cut):
        assert len(short["input_ids"]) == len(short["labels"]) == len(short["attention_mask"]) == 40
        assert short["input_ids"] == long["input_ids"][:40]
        assert short["labels"] == long["labels"][:40]


def test_seq2seq_collator_pads_labels_with_ignore_index(tokenizer, records):
    dataset = tokenize_for_sft(records[:4], tokenizer, max_length=512)
    batch = DataCollatorForSeq2Seq(tokenizer, padding=True)([dataset[i] for i in range(4)])
    lengths = [len(dataset[i]["input_ids"]) for i in range(4)]
    assert batch["input_ids"].shape == batch["labels"].shape == (4, max(lengths))
    for i, n in enumerate(lengths):
        assert batch["attention_mask"][i].sum() == n
        assert torch.all(batch["labels"][i, n:] == IGNORE_INDEX)
        assert torch.all(batch["input_ids"][i, n:] == tokenizer.pad_token_id)
