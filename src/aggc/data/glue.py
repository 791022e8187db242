"""GLUE tasks as records `{"text", "text_pair", "label"}`, from the hub or from local TSVs.

A `data` config with a `task` key describes one GLUE task (conf/data/glue_*.yaml):

    kind: hub | tsv         hub: `hub_id` + `subset` (nyu-mll/glue config names);
                            tsv: files under `root`/`folder` (the shipped GLUE samples)
    text_fields             one field (single sentence) or two (sentence pair)
    label_field             the label column; `num_labels: 1` makes it a float (STS-B)
    label_names             class names in label-index order (TSV labels may be names)
    train_split / train_file, eval_splits / eval_files   {our split name: hub split / file}
    limit                   the first N training rows (null: all)

Training and evaluation read the same spec (evaluation takes the run's own), so a run is
evaluated on the dev split of the source it was trained from.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING

from .formats import DataError

if TYPE_CHECKING:
    import datasets  # imported where used: the compose-time check reads the TSVs without it (aggc.cli)

SOURCES = ("hub", "tsv")


def is_regression(spec: dict) -> bool:
    return spec["num_labels"] == 1


def check_source(spec: dict, train: bool = True) -> None:
    """Fail before anything is loaded when a TSV file is missing (the training file only
    when `train`)."""
    if spec["kind"] not in SOURCES:
        raise ValueError(f"data.kind={spec['kind']!r}: a GLUE task is read from one of {', '.join(SOURCES)}")
    if spec["kind"] == "tsv":
        for name in [*([spec["train_file"]] if train else []), *spec["eval_files"].values()]:
            path = Path(spec["root"]) / spec["folder"] / name
            if not path.is_file():
                raise DataError(f"data={spec['name']}: no such file {path}")


def split_names(spec: dict) -> list[str]:
    """The evaluation splits (MNLI: matched, mismatched; the others: validation)."""
    return list(spec["eval_splits"] if spec["kind"] == "hub" else spec["eval_files"])


def load_split(spec: dict, split: str, limit: int | None = None) -> list[dict]:
    """`split` is "train" or one of `split_names(spec)`; the first `limit` rows."""
    if spec["kind"] == "hub":
        import datasets

        name = spec["train_split"] if split == "train" else spec["eval_splits"][split]
        rows = datasets.load_dataset(spec["hub_id"], spec["subset"], split=name)
        if limit is not None:
            rows = rows.select(range(min(limit, len(rows))))
    elif spec["kind"] == "tsv":
        name = spec["train_file"] if split == "train" else spec["eval_files"][split]
        rows = read_tsv(Path(spec["root"]) / spec["folder"] / name, spec.get("columns"), limit)
    else:
        raise ValueError(f"data.kind={spec['kind']!r}: a GLUE task is read from one of {', '.join(SOURCES)}")
    return [to_record(spec, row) for row in rows]


def read_tsv(path: Path, columns: list[str] | None, limit: int | None) -> list[dict]:
    """GLUE's TSVs: tab-separated, no quoting; `columns` names the fields of a file without
    a header line (CoLA)."""
    if not path.is_file():
        raise FileNotFoundError(f"no such file {path}")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = list(columns) if columns else next(reader)
        rows = []
        for values in reader:
            if limit is not None and len(rows) >= limit:
                break
            if len(values) != len(header):
                raise DataError(f"{path}:{reader.line_num}: {len(values)} fields, the header has {len(header)} "
                                f"({', '.join(header)}); GLUE's TSVs are tab-separated")
            rows.append(dict(zip(header, values)))
    return rows


def to_record(spec: dict, row: dict) -> dict:
    fields = spec["text_fields"]
    value = row[spec["label_field"]]
    if is_regression(spec):
        label = float(value)
    elif isinstance(value, str) and value in spec["label_names"]:
        label = spec["label_names"].index(value)
    else:
        label = int(value)
        if not 0 <= label < spec["num_labels"]:
            raise ValueError(f"data={spec['name']}: label {value!r} outside 0..{spec['num_labels'] - 1}")
    return {"text": row[fields[0]], "text_pair": row[fields[1]] if len(fields) > 1 else None, "label": label}


def encode(records: list[dict], tokenizer, max_length: int) -> dict[str, list]:
    """Token ids (truncated to `max_length`, unpadded: the collator pads per batch) and labels."""
    texts = [r["text"] for r in records]
    pairs = [r["text_pair"] for r in records] if records and records[0]["text_pair"] is not None else None
    encoded = tokenizer(texts, pairs, truncation=True, max_length=max_length)
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"],
            "labels": [r["label"] for r in records]}


def encoded_split(spec: dict, split: str, tokenizer, limit: int | None = None) -> datasets.Dataset:
    """A split (`train`, or a dev split scored during training: `train.select_best: epoch`),
    its first `limit` rows, encoded for the Trainer."""
    import datasets

    return datasets.Dataset.from_dict(encode(load_split(spec, split, limit), tokenizer, spec["max_length"]))
