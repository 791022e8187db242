"""Each source format converts to {instruction, output[, answer]} as the SFT code expects."""

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggc.data import ALPACA_PROMPT, extract_answer, format_prompt, load_sft_records
from aggc.data.formats import DataError

FIXTURES = Path(__file__).parents[1] / "fixtures"


def _jsonl(name: str, fmt: str, limit=None) -> list[dict]:
    return load_sft_records({"kind": "jsonl", "path": str(FIXTURES / name), "format": fmt, "limit": limit}, "train")


def test_prompt_is_the_authors_template_verbatim():
    assert ALPACA_PROMPT == (
        "Below is an instruction that describes a task. Write a response that appropriately completes "
        "the request.\n\n### Instruction:\n{instruction}\n\n### Response:"
    )
    assert format_prompt("Add 2 and 3.").endswith("### Instruction:\nAdd 2 and 3.\n\n### Response:")


def test_gsm8k_solution_loses_calculator_notes_and_ends_with_the_answer_line():
    first = _jsonl("gsm8k_train_sample.jsonl", "gsm8k")[0]
    assert first == {
        "instruction": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips "
        "in May. How many clips did Natalia sell altogether in April and May?",
        "output": "Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether in April "
        "and May.\nThe answer is: 72",
        "answer": "72",
    }


def test_gsm8k_answer_drops_thousands_separators():
    record = _jsonl("gsm8k_train_sample.jsonl", "gsm8k")[2]
    assert record["answer"] == "1080"
    assert record["output"].endswith("\nThe answer is: 1080")
    assert "<<" not in record["output"]


def test_gsm8k_test_records_convert_like_train_records():
    records = _jsonl("gsm8k_test_sample.jsonl", "gsm8k")
    assert [r["answer"] for r in records] == ["18", "3"]
    assert all(extract_answer(r["output"]) == r["answer"] for r in records)


def test_metamathqa_takes_query_and_response_and_reads_the_answer():
    record = _jsonl("metamathqa_sample.jsonl", "metamathqa")[1]
    assert record["instruction"].startswith("Weng earns $12")
    assert record["output"].endswith("The answer is: 10")
    assert record["answer"] == "10"


def test_pissa_keeps_answer_only_when_the_output_has_one():
    math, general = _jsonl("pissa_sample.jsonl", "pissa")
    assert math["answer"] == "72"
    assert general == {
        "instruction": "Summarize in one sentence: Weng earns $12 an hour for babysitting. Yesterday, she just "
        "did 50 minutes of babysitting. How much did she earn?",
        "output": "Weng babysat for 50 minutes at $12 an hour.",
    }


def test_codefeedback_takes_query_and_answer():
    (record,) = _jsonl("codefeedback_sample.jsonl", "codefeedback")
    assert set(record) == {"instruction", "output"}
    assert record["instruction"].startswith("Write a Python function")
    assert "def total_clips(april):" in record["output"]


def test_wizardlm_takes_the_first_human_gpt_pair():
    (record,) = _jsonl("wizardlm_sample.jsonl", "wizardlm")
    assert record["instruction"].startswith("Weng earns $12")
    assert record["output"].startswith("She earns $12 / 60")


def test_limit_keeps_the_first_records():
    assert [r["answer"] for r in _jsonl("gsm8k_train_sample.jsonl", "gsm8k", limit=2)] == ["72", "10"]


def test_json_list_files_load_like_jsonl(tmp_path):
    rows = [json.loads(line) for line in (FIXTURES / "gsm8k_test_sample.jsonl").read_text().splitlines()]
    path = tmp_path / "gsm8k.json"
    path.write_text(json.dumps(rows))
    spec = {"kind": "jsonl", "path": str(path), "format": "gsm8k", "limit": None}
    assert load_sft_records(spec, "test") == _jsonl("gsm8k_test_sample.jsonl", "gsm8k")


def test_arith_spec_sizes_follow_the_split():
    spec = {"kind": "arith", "train_size": 7, "eval_size": 3, "seed": 0}
    train, test = load_sft_records(spec, "train"), load_sft_records(spec, "test")
    assert (len(train), len(test)) == (7, 3)
    assert all(extract_answer(r["output"]) == r["answer"] for r in train + test)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so 3 + 4 = 7.\nThe answer is: 7", "7"),
        ("The answer is: 1 The answer is: -12.", "-12"),
        ("The answer is: 1,080", "1080"),
        ("The answer is: 2.5", "2.5"),
        ("no marker 7", None),
        ("The answer is: seven", None),
    ],
)
def test_extract_answer_reads_the_number_after_the_last_marker(text, expected):
    assert extract_answer(text) == expected


def test_unknown_kind_and_format_name_the_config_key():
    with pytest.raises(ValueError, match="data.kind"):
        load_sft_records({"kind": "csv"}, "train")
    with pytest.raises(ValueError, match="data.format"):
        _jsonl("gsm8k_train_sample.jsonl", "alpaca")


def test_missing_file_error_names_the_path(tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(DataError, match=f"data.path={missing}: no such file"):
        load_sft_records({"kind": "jsonl", "path": str(missing), "format": "gsm8k"}, "train")


GOOD_GSM8K = '{"question": "1+1?", "answer": "1+1=2\\n#### 2"}'


@pytest.mark.parametrize("lines, fmt, where, field", [
    # a malformed line after a blank one: the file's own line number (3), not the record's (2)
    ([GOOD_GSM8K, "", '{"question": "q", "answer": }'], "gsm8k", ":3:", "not valid JSON"),
    ([GOOD_GSM8K, '{"question": "q"}'], "gsm8k", ":2:", "field 'answer' missing"),
    ([GOOD_GSM8K, GOOD_GSM8K, '{"query": "q", "answer": "#### 4"}'], "gsm8k", ":3:", "field 'question' missing"),
    ([GOOD_GSM8K, '{"question": "q", "answer": "two"}'], "gsm8k", ":2:", "field 'answer' must end with GSM8K's final answer line"),
    ([GOOD_GSM8K, '{"question": "q", "answer": "#### two"}'], "gsm8k", ":2:", "field 'answer' must end"),
    (['{"query": "q"}'], "metamathqa", ":1:", "field 'response' missing"),
    (['["not", "an", "object"]'], "pissa", ":1:", "expected a JSON object"),
    (['{"conversations": [{"from": "gpt", "value": "hi"}]}'], "wizardlm", ":1:", "no human turn"),
    ([], "gsm8k", ": no records", "empty data file"),
    (["", "  "], "gsm8k", ": no records", "empty data file"),
    # a number or a list where the format reads text: refused here, not trained as a non-string or crashed on later
    ([GOOD_GSM8K, '{"question": 5, "answer": "#### 5"}'], "gsm8k", ":2:", "field 'question' must be a JSON string, got int"),
    (['{"question": "q", "answer": 2}'], "gsm8k", ":1:", "field 'answer' must be a JSON string, got int"),
    (['{"query": "q", "response": ["a"]}'], "metamathqa", ":1:", "field 'response' must be a JSON string, got list"),
    (['{"conversations": "human: hi"}'], "wizardlm", ":1:", "field 'conversations' must be a JSON array, got str"),
])
def test_data_errors_name_file_line_and_field(tmp_path, lines, fmt, where, field):
    """A record that cannot train fails when the data is read (before any model is built),
    with the file, its line and the field: never a bare KeyError or a silent wrong answer."""
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(lines) + ("\n" if lines else ""))
    with pytest.raises(DataError) as err:
        load_sft_records({"kind": "jsonl", "path": str(path), "format": fmt}, "train")
    assert str(err.value).startswith(f"{path}{where}") and field in str(err.value), str(err.value)


def test_json_file_error_names_its_line(tmp_path):
    path = tmp_path / "train.json"
    path.write_text('[\n  {"question": "q", "answer": "#### 1"},\n  {"question": "q" "answer": "#### 2"}\n]\n')
    with pytest.raises(DataError, match=f"^{path}:3: not valid JSON"):
        load_sft_records({"kind": "jsonl", "path": str(path), "format": "gsm8k"}, "train")


def test_byte_order_mark_and_crlf_read_like_a_plain_file(tmp_path):
    """A UTF-8 file with a byte-order mark and Windows line ends holds the same records."""
    plain, windows = tmp_path / "plain.jsonl", tmp_path / "windows.jsonl"
    plain.write_bytes(f"{GOOD_GSM8K}\n\n{GOOD_GSM8K}\n".encode())
    windows.write_bytes(b"\xef\xbb\xbf" + f"{GOOD_GSM8K}\r\n\r\n{GOOD_GSM8K}\r\n".encode())
    read = [load_sft_records({"kind": "jsonl", "path": str(p), "format": "gsm8k"}, "train") for p in (plain, windows)]
    assert read[0] == read[1] and len(read[0]) == 2


def test_a_file_that_is_not_utf8_names_its_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(f"{GOOD_GSM8K}\n".encode() + '{"question": "caf\u00e9?", "answer": "#### 1"}\n'.encode("latin-1"))
    with pytest.raises(DataError, match=f"^{path}:2: not UTF-8"):
        load_sft_records({"kind": "jsonl", "path": str(path), "format": "gsm8k"}, "train")


# --- MATH: the gold answer of a record without one is read as verl's preprocessing reads it ----

def _verl_gold(solution: str):
    """verl's examples/data_preprocess/math_dataset.py: remove_boxed(last_boxed_only_string(.)),
    here lm-eval's hendrycks_math functions (the same code; eval=math reads its golds so too).
    None where they fail (no box, an \\fbox, an unclosed brace): verl's preprocessing stops there."""
    from lm_eval.tasks.hendrycks_math.utils import last_boxed_only_string, remove_boxed

    try:
        return remove_boxed(last_boxed_only_string(solution))
    except (AssertionError, TypeError, IndexError):
        return None


@pytest.mark.parametrize("solution, gold", [
    ("So $x = \\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
    ("Thus the answer is $\\boxed 5$.", "5"),                   # "\boxed " without braces: verl reads 5
    ("Thus $\\boxed{3}$, and $\\boxed 5$.", "5"),               # verl's "\boxed " branch wins
    ("The answer is 7.", None),                                  # no box: no gold (not "7.")
    ("Hence $\\fbox{3}$.", None),                                # verl's remove_boxed rejects an \fbox
    ("Hence $\\boxed{}$.", None),                                # an empty box: nothing to reward
])
def test_math_gold_is_read_from_the_solution_as_verl_reads_it(solution, gold):
    from aggc.data.formats import from_math

    assert from_math({"problem": "p", "solution": solution}).get("answer") == gold


@settings(max_examples=300, deadline=None, database=None)
@given(st.lists(st.sampled_from(["\\boxed{", "\\boxed ", "\\boxed", "\\fbox{", "{", "}", "$", "1", "\\frac12", " ",
                                 "The answer is: ", ".\n", "x"]), max_size=12).map("".join))
def test_math_training_gold_equals_the_evaluations(solution):
    """A training record's gold (data=math_train, GRPO's reference) is the answer eval=math
    and verl read from the same solution, or none where they find none."""
    from aggc.data.formats import from_math

    assert from_math({"problem": "p", "solution": solution}).get("answer") == (_verl_gold(solution) or None)
