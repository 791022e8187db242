"""HumanEval+ / MBPP+ through evalplus where it can run; otherwise the result says why and the
base tests (aggc's sandbox) stay the headline. evalplus is not installed in this project's
environment: its own scoring path is not exercised here."""

from importlib.util import find_spec

import pytest
from hydra import compose, initialize_config_dir

from aggc.evaluate.evalplus_scoring import DATASETS, evalplus_id, plus_scores
from aggc.paths import CONF_DIR


@pytest.mark.parametrize("benchmark", ["humaneval", "mbpp"])
def test_code_benchmarks_offer_evalplus_off_by_default(benchmark):
    """evalplus runs generated code outside the bubblewrap sandbox, so it is asked for explicitly."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        ev = compose("evaluate", overrides=["run=.", f"eval={benchmark}"]).eval
    assert ev.evalplus is False and DATASETS[ev.task] == benchmark and ev.score == "pass@1"


def test_task_ids_are_named_as_evalplus_names_them():
    assert evalplus_id("humaneval", "HumanEval/163") == "HumanEval/163"
    assert evalplus_id("mbpp", 11) == "Mbpp/11"


@pytest.mark.skipif(find_spec("evalplus") is not None, reason="evalplus is installed here")
def test_without_evalplus_the_result_says_why():
    plus = plus_scores("mbpp.yaml", [{"task_id": 11, "code_extracted": "def f():\n    return 1"}])
    assert plus == {"used": False, "reason": "evalplus is not installed (pip install -e '.[evalplus]'): base tests only"}


def test_an_evalplus_release_other_than_the_pinned_one_is_not_called(tmp_path, monkeypatch):
    """The harness calls evalplus 0.3.1's functions (pyproject's extra); another release's
    signatures differ (master made one keyword-only), which would crash the benchmark after
    generation. An installed 0.4.0 (a real distribution on sys.path) is reported, not called."""
    (tmp_path / "evalplus").mkdir()
    (tmp_path / "evalplus" / "__init__.py").write_text("raise ImportError('the harness must not import this release')\n")
    (tmp_path / "evalplus-0.4.0.dist-info").mkdir()
    (tmp_path / "evalplus-0.4.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: evalplus\nVersion: 0.4.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    plus = plus_scores("humaneval.yaml", [{"task_id": "HumanEval/0", "code_extracted": "def f():\n    return 1"}])
    assert plus["used"] is False and "evalplus 0.4.0 is installed" in plus["reason"] and "0.3.1" in plus["reason"]


@pytest.mark.skipif(find_spec("evalplus") is not None, reason="evalplus is installed here")
def test_an_evalplus_folder_without_a_distribution_is_not_called(tmp_path, monkeypatch):
    """A folder named evalplus on sys.path (python -m puts the working directory first) is
    found by find_spec but has no version: version() raised PackageNotFoundError, crashing
    the benchmark after generation. It is reported, not called."""
    (tmp_path / "evalplus").mkdir()
    (tmp_path / "evalplus" / "__init__.py").write_text("raise ImportError('the harness must not import this folder')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    plus = plus_scores("mbpp.yaml", [{"task_id": 11, "code_extracted": "def f():\n    return 1"}])
    assert plus["used"] is False and "no installed distribution" in plus["reason"] and "0.3.1" in plus["reason"]
