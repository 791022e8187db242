"""The benchmark data shipped in data/: every default names it (whatever the working
directory; AGGC_DATA_DIR moves all of it), the files are the ones the READMEs describe, and
the lm-eval task files under evaluation/ find them on their own, as plain
`lm_eval --include_path evaluation --tasks aggc_gsm8k ...` run from the repository root does."""

import functools
import hashlib
import json
import re
import subprocess
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from aggc.data.formats import ANSWER_MARKER
from aggc.data.glue import check_source
from aggc.evaluate.scorers import gsm8k_reference_correct
from aggc.grid import tiny_version
from aggc.paths import CONF_DIR, ROOT

DATA = ROOT / "data"
# config group, option, key -> the shipped file it names by default
DEFAULTS = [
    ("eval", "gsm8k", "data", "gsm8k/test.jsonl"),
    ("eval", "math500", "data", "math500/test.jsonl"),
    ("eval", "humaneval", "data", "humaneval/HumanEval.jsonl"),
    ("eval", "mbpp", "data", "mbpp/mbpp.jsonl"),
    ("eval", "mt_bench", "questions", "mt_bench/question.jsonl"),
    ("eval", "mt_bench", "judge_prompts", "mt_bench/judge_prompts.jsonl"),
    ("eval", "mt_bench", "reference_answers", "mt_bench/reference_answer/gpt-4.jsonl"),
    ("data", "gsm8k", "path", "gsm8k/train_first2000.jsonl"),
]
SHA256 = {  # as each folder's README records them
    "gsm8k/test.jsonl": "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14",
    "gsm8k/train_first2000.jsonl": "45926aa7b33a4d57392a712ec0fc718a68cc2e33422658ddda76af4c305f24ce",
    "math500/test.jsonl": "35dc41080a3680858b27fa7e0533d2d547825316fc5dafe5d316f4ccc5a06132",
    "humaneval/HumanEval.jsonl": "1d49078ba3e2b196b9344535bef34a43021f038fad9561d6ee7c53450609a6a2",
    "mbpp/mbpp.jsonl": "0b5e07b5b40fedd01c57b7c9177b79f8b2eebd72c304c928605d91a7237d2f33",
    "mt_bench/question.jsonl": "119565adbab82227089cefdb44c8d7e2cf04dc0a0ec233634c82e7d4e2a944f7",
    "mt_bench/judge_prompts.jsonl": "fd283293406d024f44c174b094ef48031d0687a4682fd3a56b29b138f80281b6",
    "mt_bench/reference_answer/gpt-4.jsonl": "f957a5bc977badb66885ec970e6cd08527845780313f0995764260e5777b9b3f",
}
GLUE_LOCAL = ["glue_qnli_local", "glue_cola_local", "glue_sst2_local", "glue_stsb_local", "glue_rte_local"]
GLUE_SHA256 = {  # as data/glue/README.md records them (QNLI: the one GLUE task shipped)
    "QNLI/dev_first2000.tsv": "6cf12bfdb87d81c3e2fd4dcb1b17ccc43bd2e3888f0cb4c8706028a70f89171f",
    "QNLI/dev_next1000.tsv": "4b5dcf19e3a7b78919d04780aba13f2b2b773e96e994679bfcfb5085979e2fcc",
}
# the grids a clone runs without a cluster: every table's tiny version, and the demos
OFFLINE_GRIDS = [*((t.stem, True) for t in sorted((CONF_DIR / "table").glob("*.yaml")) if "\ntiny:" in t.read_text()),
                 ("demo", False), ("demo_real", False), ("demo_real_grpo", False)]



def configured(group: str, option: str) -> dict:
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        if group == "eval":
            return compose("evaluate", overrides=["run=x", f"eval={option}"]).eval
        return compose("config", overrides=[f"data={option}"]).data


@pytest.mark.parametrize("group, option, key, file", DEFAULTS)
def test_defaults_name_the_shipped_files(group, option, key, file, monkeypatch, tmp_path):
    monkeypatch.delenv("AGGC_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)  # not the repository: the default must not depend on it
    assert Path(configured(group, option)[key]) == DATA / file
    monkeypatch.setenv("AGGC_DATA_DIR", str(tmp_path))
    assert Path(configured(group, option)[key]) == tmp_path / file


def test_glue_local_configs_read_data_glue(monkeypatch):
    """QNLI shipped, the others not (data/glue/README.md says why) but looked for in the
    repository too."""
    monkeypatch.delenv("AGGC_DATA_DIR", raising=False)
    assert {Path(configured("data", name).root) for name in GLUE_LOCAL} == {DATA / "glue"}


def test_shipped_files_are_the_documented_ones():
    assert {file for *_, file in DEFAULTS} == set(SHA256)
    for file, digest in SHA256.items():
        assert hashlib.sha256((DATA / file).read_bytes()).hexdigest() == digest, file
        assert file.split("/")[0] in (DATA / "README.md").read_text()


def test_shipped_glue_files_are_the_documented_ones():
    """Under data/glue only QNLI is in git (the other task folders are ignored)."""
    for file, digest in GLUE_SHA256.items():
        assert hashlib.sha256((DATA / "glue" / file).read_bytes()).hexdigest() == digest, file
        assert digest in (DATA / "glue" / "README.md").read_text()
    tracked = subprocess.run(["git", "ls-files", "data/glue"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert set(tracked.stdout.split()) == {"data/glue/.gitignore", "data/glue/README.md", *(f"data/glue/{f}" for f in GLUE_SHA256)}



def config_names(text: str) -> set[str]:
    """The `eval=X` / `data=X` a README names, `glue_{cola,rte}_local` spelt out."""
    names = set()
    for group, name in re.findall(r"\b(eval|data)=([\w{},]+)", text):
        head, _, rest = name.partition("{")
        choices, _, tail = rest.partition("}")
        names |= {f"{group}={head}{choice}{tail}" for choice in choices.split(",")} if rest else {f"{group}={name}"}
    return names


@functools.cache
def readers() -> dict[str, set[str]]:
    """data/<folder> -> the configs that read a file of it by default (AGGC_DATA_DIR unset)."""
    found = {}
    for group in ("eval", "data"):
        for option in sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml")):
            for path in local_paths(OmegaConf.to_container(configured(group, option), resolve=True)):
                if path.is_relative_to(DATA):
                    found.setdefault(path.relative_to(DATA).parts[0], set()).add(f"{group}={option}")
    return found


@pytest.mark.parametrize("folder", sorted(p.name for p in DATA.iterdir() if p.is_dir()))
def test_readmes_name_the_configs_that_read_each_folder(folder, monkeypatch):
    """A data folder's README and its row in data/README.md name every config that reads it;
    the row names no other. (MATH-500's said `eval=math`, which reads the full MATH from the
    hub, and neither named `eval=math500`; GSM8K's left out Table 5's `eval=gsm8k_verl`.)"""
    monkeypatch.delenv("AGGC_DATA_DIR", raising=False)
    read_by = readers()[folder]
    assert read_by <= config_names((DATA / folder / "README.md").read_text()), folder
    [row] = [line for line in (DATA / "README.md").read_text().splitlines() if line.startswith(f"| `{folder}/` |")]
    assert config_names(row.split(" | ")[2]) == read_by, row

def local_paths(node) -> list[Path]:
    """Every absolute path a resolved config names (data files, folders)."""
    if isinstance(node, dict):
        return [p for v in node.values() for p in local_paths(v)]
    if isinstance(node, list):
        return [p for v in node for p in local_paths(v)]
    return [Path(node)] if isinstance(node, str) and node.startswith("/") else []


@pytest.mark.parametrize("group", ["data", "eval"])
def test_no_default_names_a_folder_outside_the_repository(group, monkeypatch, tmp_path):
    """With AGGC_DATA_DIR unset and the command started elsewhere, every path any data or
    eval config names by default is inside the repository (no ../shared beside a clone),
    after its ".." are resolved (`is_relative_to` alone is lexical), and no value climbs out
    with a relative "../" (a checkout that has ../shared beside it would not notice)."""
    monkeypatch.delenv("AGGC_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    for option in sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml")):
        resolved = OmegaConf.to_container(configured(group, option), resolve=True)
        paths = local_paths(resolved)
        assert all(path.resolve().is_relative_to(ROOT) for path in paths), (option, paths)
        assert not [v for v in strings(resolved) if "../" in v or v == ".."], option


def strings(node) -> list[str]:
    if isinstance(node, dict):
        return [s for v in node.values() for s in strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in strings(v)]
    return [node] if isinstance(node, str) else []


def test_task_files_name_data_inside_the_repository():
    """evaluation/*.yaml name their data relative to the repository root; each resolves to a
    shipped file inside it (the lm-eval task test runs from the root, where a ../shared path
    would exist in this checkout but not in a clone)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    for task in sorted((ROOT / "evaluation").glob("*.yaml")):
        files = load_yaml(task, resolve_func=False)["dataset_kwargs"]["data_files"].values()
        assert all((ROOT / f).resolve().is_relative_to(DATA) and (ROOT / f).is_file() for f in files), (task.name, files)


@pytest.mark.parametrize("table, tiny", OFFLINE_GRIDS)
def test_offline_grids_find_their_data_in_the_repository(table, tiny, monkeypatch, tmp_path):
    """Every training set and benchmark of a grid run without a cluster (`make <table> TINY=1`,
    the demos) resolves, AGGC_DATA_DIR unset, to files of the repository that exist: a clone
    alone runs them."""
    monkeypatch.delenv("AGGC_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        spec = OmegaConf.to_container(compose("tables", overrides=[f"table={table}"]).table)
    spec = tiny_version(spec) if tiny else spec
    for data, benchmarks in spec["grid"]["datasets"].items():
        cfg = OmegaConf.to_container(configured("data", data), resolve=True)
        assert cfg["kind"] != "hub", f"table={table}: data={data} needs the hub"
        if cfg["kind"] == "tsv":
            check_source(cfg)  # raises on a missing file
        files = [*local_paths(cfg), *(p for b in benchmarks for p in local_paths(
            OmegaConf.to_container(configured("eval", b), resolve=True)))]
        assert all(f.is_relative_to(ROOT) and f.exists() for f in files), (data, files)
        if cfg["kind"] == "tsv":
            assert Path(cfg["root"]).is_relative_to(ROOT)


@pytest.fixture
def task_manager(monkeypatch):
    """lm-eval's own task index over evaluation/, from the repository root (the task files
    name the data relative to it, as `datasets` resolves it against the working directory)."""
    from lm_eval.tasks import TaskManager

    monkeypatch.chdir(ROOT)
    return TaskManager(include_path=str(ROOT / "evaluation"), include_defaults=False)


@pytest.mark.parametrize("task, n", [("aggc_gsm8k", 1319), ("aggc_math", 500), ("aggc_humaneval", 164), ("aggc_mbpp", 500),
                                     ("aggc_gsm8k_verl", 1319), ("aggc_math_verl", 500)])
def test_task_files_find_the_shipped_data(task_manager, task, n):
    from lm_eval.tasks import get_task_dict

    [built] = get_task_dict([task], task_manager).values()
    assert len(list(built.test_docs())) == n


def test_gsm8k_strict_reads_the_last_answer_marker(task_manager):
    """`strict` takes the number right after the LAST "The answer is: ", the marker the
    authors' rule reads; it differs from that rule only where the text after the marker
    does not start with the number (the authors' rule then searches on), or needs rounding."""
    import lm_eval
    from lm_eval.api.model import LM

    responses = [
        lambda gold: f"{ANSWER_MARKER}0. Let me check that. {ANSWER_MARKER}{gold}",  # the last marker is right
        lambda gold: f"{ANSWER_MARKER}{gold}. No, wait: {ANSWER_MARKER}0",           # the last marker is wrong
        lambda gold: f"{ANSWER_MARKER}{gold}",
        lambda gold: f"{ANSWER_MARKER}{gold}.\n{ANSWER_MARKER}about {gold}",        # no number right after the last one
    ]

    class ScriptedLM(LM):
        def generate_until(self, requests):
            return [responses[r.doc_id](r.doc["answer"].split("####")[-1].strip()) for r in requests]

        def loglikelihood(self, requests):
            raise NotImplementedError

        def loglikelihood_rolling(self, requests):
            raise NotImplementedError

    out = lm_eval.simple_evaluate(model=ScriptedLM(), tasks=["aggc_gsm8k"], task_manager=task_manager,
                                  limit=len(responses), log_samples=True)
    strict = sorted((s["doc_id"], s["exact_match"]) for s in out["samples"]["aggc_gsm8k"] if s["filter"] == "strict")
    assert strict == [(0, 1.0), (1, 0.0), (2, 1.0), (3, 0.0)]
    assert out["results"]["aggc_gsm8k"]["exact_match,strict"] == 0.5
    reference = [gsm8k_reference_correct(s["resps"][0][0], s["target"])
                 for s in sorted(out["samples"]["aggc_gsm8k"], key=lambda s: s["doc_id"]) if s["filter"] == "strict"]
    assert reference == [True, False, True, True]


def test_verl_tasks_score_verls_format_through_lm_eval(task_manager):
    """Table 5's tasks run by lm-eval itself on the shipped data: a response in verl's format
    with the item's answer scores 1 ("#### N" for GSM8K, the last \\boxed{} for MATH), the
    SFT format ("The answer is: N") and a wrong last answer 0."""
    import lm_eval
    from lm_eval.api.model import LM

    responses = {
        "aggc_gsm8k_verl": [lambda doc: f"Steps.\n#### {doc['answer'].split('####')[-1].strip()}",
                            lambda doc: f"{ANSWER_MARKER}{doc['answer'].split('####')[-1].strip()}",
                            lambda doc: f"#### {doc['answer'].split('####')[-1].strip()}\nNo: #### 0.5"],
        "aggc_math_verl": [lambda doc: f"Hence $\\boxed{{{doc['answer']}}}$.",
                           lambda doc: f"{ANSWER_MARKER}{doc['answer']}",
                           lambda doc: f"$\\boxed{{{doc['answer']}}}$, or rather $\\boxed{{-0.123}}$"],
    }

    class ScriptedLM(LM):
        def generate_until(self, requests):
            return [responses[r.task_name][r.doc_id](r.doc) for r in requests]

        def loglikelihood(self, requests):
            raise NotImplementedError

        def loglikelihood_rolling(self, requests):
            raise NotImplementedError

    out = lm_eval.simple_evaluate(model=ScriptedLM(), tasks=list(responses), task_manager=task_manager, limit=3, log_samples=True)
    for task in responses:
        assert sorted((s["doc_id"], s["verl"]) for s in out["samples"][task]) == [(0, 1.0), (1, 0.0), (2, 0.0)], task


def test_every_shipped_item_scores_its_own_answer_and_never_an_empty_one():
    """On every GSM8K test and MATH-500 item, a response stating the item's gold in the task's
    format scores 1 and one with an empty answer ("#### ,", "\\\\boxed{}", "The answer is: ")
    scores 0, by verl's rules (Table 5's lm-eval hooks) and the authors' (no item has an empty
    gold, which an empty extraction would match). The authors' GSM8K rule reads one thousands
    separator only, so golds written with two cannot match as written (their quirk, kept)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    hook = {task: load_yaml(ROOT / "evaluation" / task)["process_results"] for task in ("gsm8k_verl.yaml", "math_verl.yaml", "math.yaml")}
    for doc in map(json.loads, (DATA / "gsm8k" / "test.jsonl").read_text().splitlines()):
        gold = doc["answer"].split("####")[-1].strip()
        assert (hook["gsm8k_verl.yaml"](doc, [f"Steps.\n#### {gold}"])["verl"], hook["gsm8k_verl.yaml"](doc, ["#### ,"])["verl"]) == (1, 0), gold
        assert gsm8k_reference_correct(f"{ANSWER_MARKER}{gold}", gold) == (gold.count(",") < 2), gold
        assert not gsm8k_reference_correct(f"{ANSWER_MARKER},", gold)
    for doc in map(json.loads, (DATA / "math500" / "test.jsonl").read_text().splitlines()):
        gold = doc["answer"]
        assert (hook["math_verl.yaml"](doc, [f"So $\\boxed{{{gold}}}$."])["verl"], hook["math_verl.yaml"](doc, ["$\\boxed{}$"])["verl"]) == (1, 0), gold
        assert (hook["math.yaml"](doc, [f"{ANSWER_MARKER}{gold}"])["reference"], hook["math.yaml"](doc, [ANSWER_MARKER])["reference"]) == (1, 0), gold
