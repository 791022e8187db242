"""MT-Bench end to end on a tiny trained model: answers in-process, judgments from a real
OpenAI-compatible HTTP server on 127.0.0.1 (stdlib, scripted replies), so the `openai` client path
is the one a cluster run takes against `vllm serve`."""

import json
import shutil
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from aggc.config import ConfigError
from aggc.data.formats import ALPACA_PROMPT
from aggc.evaluate import mt_bench
from aggc.evaluate.mt_bench import ALPACA_NEXT_TURN, check_inputs, evaluate_mt_bench
from aggc.paths import CONF_DIR, ROOT

from ..train._helpers import only_run, train_cli

pytestmark = pytest.mark.slow
FIXTURES = ROOT / "tests" / "fixtures" / "mt_bench"
QUESTIONS = [json.loads(line) for line in (FIXTURES / "question.jsonl").read_text().splitlines()]
PROMPTS = {p["name"]: p for p in map(json.loads, (FIXTURES / "judge_prompts.jsonl").read_text().splitlines())}
REF_LINES = (FIXTURES / "reference_answer" / "gpt-4.jsonl").read_text().splitlines()
REFS = {r["question_id"]: r["choices"][0]["turns"] for r in map(json.loads, REF_LINES)}
# The scripted judge's rating of each (question id, turn).
RATINGS = {(81, 1): 8, (81, 2): 6, (91, 1): 3, (91, 2): 4, (108, 1): 7, (108, 2): 2, (120, 1): 9, (120, 2): 5}
SERVED = "served-judge-2024-01"


def identify(body: dict) -> tuple[int, int]:
    """(question id, turn) of a judge request, read off its user message."""
    user = body["messages"][-1]["content"]
    turn = 2 if "### User:" in user else 1
    (qid,) = [q["question_id"] for q in QUESTIONS if q["turns"][0] in user]
    return qid, turn


class Judge:
    """Scripted judge: `script(qid, turn, nth call for this pair)` -> reply text, or an int HTTP status."""

    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self, script=None):
        self.requests, self.calls = [], Counter()
        self.script = script or (lambda qid, turn, n: f"Reasonable.\n\nRating: [[{RATINGS[qid, turn]}]]")

    def answer(self, path: str, headers: dict, body: dict):
        with self.lock:
            self.requests.append({"path": path, "headers": headers, "body": body})
            key = identify(body)
            self.calls[key] += 1
            n = self.calls[key]
        return self.script(*key, n)


@pytest.fixture(scope="module")
def server():
    judge = Judge()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            reply = judge.answer(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            status = reply if isinstance(reply, int) else 200
            payload = {"error": {"message": "overloaded"}} if status != 200 else {
                "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": SERVED,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    judge.base_url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    yield judge
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def judge(server):
    server.reset()
    return server


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    train_cli(root, "strategy=aggc")
    return only_run(root)


@pytest.fixture(scope="module")
def first(run, server, tmp_path_factory):
    """One full evaluation with the default scripted judge: (result, out dir, judge requests)."""
    server.reset()
    out = tmp_path_factory.mktemp("eval")
    result = evaluate_mt_bench(config(run, server.base_url), run / "final", out)
    return result, out, list(server.requests)


def with_answers(first, out: Path) -> Path:
    """`out` holding the answers of the first evaluation (no judgments): only the judge step runs."""
    (out / "cache" / "mt_bench").mkdir(parents=True)
    shutil.copy(first[1] / "cache" / "mt_bench" / "answers.jsonl", out / "cache" / "mt_bench" / "answers.jsonl")
    return out


def config(run: Path, base_url: str, *overrides: str):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("evaluate", overrides=[
            f"run={run}", "eval=mt_bench", f"eval.questions={FIXTURES / 'question.jsonl'}",
            f"eval.judge_prompts={FIXTURES / 'judge_prompts.jsonl'}",
            f"eval.reference_answers={FIXTURES / 'reference_answer' / 'gpt-4.jsonl'}",
            f"eval.judge.base_url={base_url}", "eval.judge.model=test-judge", "eval.judge.api_key_env=AGGC_TEST_UNSET_KEY",
            "eval.judge.backoff_s=0", "max_gen_toks=16", *overrides,
        ])


def mean(values):
    return sum(values) / len(values)


def expected_messages(question: dict, answers: list[str], turn: int) -> tuple[str, list[dict]]:
    """FastChat's single-answer judge request, written out independently of the module."""
    math = question["category"] in ("math", "reasoning", "coding")
    q1, q2 = question["turns"]
    ref = REFS.get(question["question_id"])
    if turn == 1:
        name = "single-math-v1" if math else "single-v1"
        fields = {"question": q1, "answer": answers[0], **({"ref_answer_1": ref[0]} if math else {})}
    else:
        name = "single-math-v1-multi-turn" if math else "single-v1-multi-turn"
        fields = {"question_1": q1, "question_2": q2, "answer_1": answers[0], "answer_2": answers[1]}
        fields.update({"ref_answer_1": ref[0], "ref_answer_2": ref[1]} if math else {})
    prompt = PROMPTS[name]
    return name, [
        {"role": "system", "content": prompt["system_prompt"]},
        {"role": "user", "content": prompt["prompt_template"].format(**fields)},
    ]


def test_full_run_judges_both_turns_with_fastchat_prompts(first, judge):
    """Every question's two turns are answered, each at its category's FastChat temperature, with the Alpaca prompt (turn 2: the first exchange
    plus a new instruction block) and sent to the judge once each with FastChat's single-answer
    prompt (reference answers for math/reasoning), temperature 0, max_tokens 2048, key "EMPTY";
    the scores are exactly the means of the scripted ratings, and the judge is recorded."""
    result, out, requests = first

    assert result["n"] == 4 and result["prompt"] == "alpaca" and result["generation"]["max_new_tokens"] == 16
    assert result["generation"]["cached"] == 0 and len(requests) == 8
    # writing and roleplay sampled at 0.7, reasoning and math greedy (FastChat's temperatures)
    assert [s["temperature"] for s in result["samples"]] == [0.7, 0.7, 0.0, 0.0] and result["generation"]["sampling"] == "fastchat"
    sent = {identify(r["body"]): r for r in requests}
    for sample, question in zip(result["samples"], QUESTIONS):
        assert sample["question_id"] == question["question_id"] and sample["turns"] == question["turns"]
        p1, p2 = sample["prompts"]
        assert p1 == ALPACA_PROMPT.format(instruction=question["turns"][0])
        assert p2 == p1 + " " + sample["answers"][0] + ALPACA_NEXT_TURN.format(instruction=question["turns"][1])
        for turn in (1, 2):
            name, messages = expected_messages(question, sample["answers"], turn)
            request = sent[question["question_id"], turn]
            assert request["path"] == "/v1/chat/completions" and request["headers"]["authorization"] == "Bearer EMPTY"
            assert request["body"]["messages"] == messages and request["body"]["model"] == "test-judge"
            assert request["body"]["temperature"] == 0 and request["body"]["max_tokens"] == 2048
            assert sample["judge_prompts"][turn - 1] == name
            rating = RATINGS[question["question_id"], turn]
            assert sample["ratings"][turn - 1] == {"runs": [rating], "median": rating}
    math_user = sent[120, 2]["body"]["messages"][1]["content"]
    assert REFS[120][0] in math_user and REFS[120][1] in math_user and "### Reference answer:" in math_user

    assert result["score"] == result["scores"]["mean"] == mean(list(RATINGS.values()))
    assert result["scores"]["turn1"] == mean([r for (_, t), r in RATINGS.items() if t == 1])
    assert result["scores"]["turn2"] == mean([r for (_, t), r in RATINGS.items() if t == 2])
    assert result["scores"]["by_category"] == {"math": 7.0, "reasoning": 4.5, "roleplay": 3.5, "writing": 7.0}
    assert result["parse_failures"] == {
        "turn1": 0, "turn2": 0, "total": 0, "replies": 8, "unrated_turns": {"turn1": 0, "turn2": 0, "total": 0}
    }
    j = result["judge"]
    assert j["model"] == "test-judge" and j["served_models"] == [SERVED] and j["base_url"] == judge.base_url and j["runs"] == 1
    assert j["prompt_version"] == "fastchat@0e6d3e4beaab66f4d3f93db72541a4abab8af28d" and len(j["judge_prompts_sha256"]) == 64
    assert len((out / "cache" / "mt_bench" / "answers.jsonl").read_text().splitlines()) == 4
    json.dumps(result)  # the result is JSON as it stands


def test_reply_without_rating_is_a_counted_parse_failure(run, first, judge, tmp_path):
    """A reply with no rating is counted (per turn and in total) and its turn is left out of the
    means, not scored 0; FastChat's fallback `[x]` still parses."""
    replies = {(91, 2): "I cannot rate this.", (81, 1): "Fine. Rating: [8]"}
    judge.reset(lambda qid, turn, n: replies.get((qid, turn), f"Rating: [[{RATINGS[qid, turn]}]]"))
    result = evaluate_mt_bench(config(run, judge.base_url), run / "final", with_answers(first, tmp_path))

    kept = {k: v for k, v in RATINGS.items() if k != (91, 2)}
    assert result["parse_failures"] == {
        "turn1": 0, "turn2": 1, "total": 1, "replies": 8, "unrated_turns": {"turn1": 0, "turn2": 1, "total": 1}
    }
    assert result["score"] == mean(list(kept.values())) and result["scores"]["turn2"] == mean([2, 5, 6])
    assert result["scores"]["by_category"]["roleplay"] == 3.0
    roleplay = next(s for s in result["samples"] if s["question_id"] == 91)
    assert roleplay["ratings"][1] == {"runs": [None], "median": None} and roleplay["judge_replies"][1] == ["I cannot rate this."]


def test_runs_3_takes_the_median_of_parsed_ratings(run, first, judge, tmp_path):
    """judge.runs=3 asks three times per turn and scores the median of the parsed ratings; an
    unparsed one of the three is a parse failure and the median is over the other two."""

    def script(qid, turn, n):
        if (qid, turn) == (120, 2) and n == 3:
            return "no verdict"
        return f"Rating: [[{[RATINGS[qid, turn], 10, 1][n - 1]}]]"

    judge.reset(script)
    result = evaluate_mt_bench(config(run, judge.base_url, "eval.judge.runs=3"), run / "final", with_answers(first, tmp_path))

    assert len(judge.requests) == 24 and result["judge"]["runs"] == 3
    medians = {k: v if k != (120, 2) else (5 + 10) / 2 for k, v in RATINGS.items()}
    assert result["score"] == mean(list(medians.values()))
    failures = result["parse_failures"]
    assert failures["turn2"] == failures["total"] == 1 and failures["replies"] == 24 and failures["unrated_turns"]["total"] == 0
    math = next(s for s in result["samples"] if s["question_id"] == 120)
    assert sorted(math["ratings"][0]["runs"]) == [1, 9, 10] and math["ratings"][0]["median"] == 9
    assert sorted(math["ratings"][1]["runs"], key=str) == sorted([5, 10, None], key=str) and math["ratings"][1]["median"] == 7.5


def test_second_call_resumes_from_the_caches(run, first, judge, tmp_path, monkeypatch):
    """A second call generates nothing (no model is loaded) and asks the judge nothing, giving the
    same result; with the last judgment line cut short (a crash mid-write), exactly that request is
    asked again, and the cache reads whole afterwards."""
    shutil.copytree(first[1] / "cache", tmp_path / "cache")
    import transformers

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded on resume")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_model)
    cfg = config(run, judge.base_url)
    second = evaluate_mt_bench(cfg, run / "final", tmp_path)
    assert judge.requests == [] and second["generation"]["cached"] == 4
    assert second["samples"] == first[0]["samples"] and second["scores"] == first[0]["scores"]

    judgments = tmp_path / "cache" / "mt_bench" / "judgments.jsonl"
    lines = judgments.read_text().splitlines()
    judgments.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:40])
    third = evaluate_mt_bench(cfg, run / "final", tmp_path)
    lost = json.loads(lines[-1])
    assert [identify(r["body"]) for r in judge.requests] == [(lost["question_id"], lost["turn"])]
    assert third["samples"] == first[0]["samples"]
    judge.reset()
    assert evaluate_mt_bench(cfg, run / "final", tmp_path)["samples"] == first[0]["samples"] and judge.requests == []


def test_judge_errors_are_retried_then_fail(run, first, judge, tmp_path):
    """A 503 is retried (bounded) and the evaluation goes on; a judge that keeps failing ends the
    evaluation after retries+1 attempts with an error naming the endpoint, not a parse failure."""
    judge.reset(lambda qid, turn, n: 503 if n == 1 else f"Rating: [[{RATINGS[qid, turn]}]]")
    cfg = config(run, judge.base_url, "eval.judge.retries=1")
    result = evaluate_mt_bench(cfg, run / "final", with_answers(first, tmp_path / "a"))
    assert len(judge.requests) == 16 and result["score"] == mean(list(RATINGS.values()))

    judge.reset(lambda qid, turn, n: 503)
    cfg = config(run, judge.base_url, "eval.judge.retries=2", "eval.judge.parallel=1")
    with pytest.raises(RuntimeError, match="failed 3 times"):
        evaluate_mt_bench(cfg, run / "final", with_answers(first, tmp_path / "b"))
    assert len(judge.requests) == 3


@pytest.mark.parametrize(
    "overrides, error, message",
    [
        (("eval.questions=/nonexistent/question.jsonl",), FileNotFoundError, "eval.questions=/nonexistent/question.jsonl"),
        (("eval.reference_answers=/nonexistent/gpt-4.jsonl",), FileNotFoundError, "eval.reference_answers="),
        (("eval.judge.runs=0",), ConfigError, "eval.judge.runs=0"),
        (("eval.judge.model=null",), ConfigError, "eval.judge.model"),
        (("eval.judge.base_url=null",), ConfigError, "eval.judge.base_url"),
        (("eval.judge.base_url=https://judge.example.org/v1",), ConfigError, "eval.judge.api_key_env=AGGC_TEST_UNSET_KEY"),
    ],
)
def test_bad_config_fails_in_check_inputs(run, overrides, error, message, monkeypatch):
    """Missing files, runs < 1, no judge endpoint/model, or no key for a remote judge raise in
    check_inputs, with the key in the message, before any model is loaded."""
    cfg = config(run, "http://127.0.0.1:9/v1", *overrides)
    with pytest.raises(error, match=message.replace(".", r"\.")):
        check_inputs(cfg)
    import transformers

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: pytest.fail("tokenizer loaded"))
    with pytest.raises(error):
        evaluate_mt_bench(cfg, run / "final", Path("/nonexistent"))


def test_math_question_without_reference_is_a_config_error(run, tmp_path):
    """A question of a reference-graded category with no reference answer fails in check_inputs."""
    refs = tmp_path / "refs.jsonl"
    refs.write_text(REF_LINES[0] + "\n")  # question 108 only
    with pytest.raises(ConfigError, match="question 120"):
        check_inputs(config(run, "http://127.0.0.1:9/v1", f"eval.reference_answers={refs}"))


def test_rating_parse_and_chat_template_prompt(run):
    """FastChat's rating regexes ([[x]], then [x], else none); with chat_template=true and a tokenizer
    template, turn 2's prompt is the whole conversation through apply_chat_template."""
    assert mt_bench.parse_rating("Rating: [[7]]") == 7 and mt_bench.parse_rating("[[8.5]] and [3]") == 8.5
    assert mt_bench.parse_rating("see [2] Rating: [6]") == 2 and mt_bench.parse_rating("Rating: 7/10") is None

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(run / "final")
    cfg = config(run, "http://127.0.0.1:9/v1", "chat_template=true")
    assert mt_bench.prompt_style(cfg, tokenizer) == "alpaca"  # the tiny tokenizer has no template
    tokenizer.chat_template = (
        "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    assert mt_bench.prompt_style(cfg, tokenizer) == "chat_template"
    prompt = mt_bench.render_prompt("chat_template", tokenizer, ["Q1", "Q2"], ["A1"])
    assert prompt == "<user>Q1<assistant>A1<user>Q2<assistant>"


def test_entry_point_writes_the_result_file(run, judge):
    """`python -m aggc.evaluate eval=mt_bench` (a separate process, as on a cluster) talks to the
    judge over HTTP and writes <run>/eval/mt_bench.json with the judge recorded."""
    import os
    import subprocess
    import sys

    args = [f"run={run}", "eval=mt_bench", f"eval.questions={FIXTURES / 'question.jsonl'}",
            f"eval.judge_prompts={FIXTURES / 'judge_prompts.jsonl'}",
            f"eval.reference_answers={FIXTURES / 'reference_answer' / 'gpt-4.jsonl'}",
            f"eval.judge.base_url={judge.base_url}", "eval.judge.model=test-judge", "max_gen_toks=16"]
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    proc = subprocess.run([sys.executable, "-m", "aggc.evaluate", *args], cwd=ROOT, env={**env, "HF_HUB_OFFLINE": "1"},
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((run / "eval" / "mt_bench.json").read_text())
    assert result["benchmark"] == "mt_bench" and result["score"] == mean(list(RATINGS.values()))
    assert result["judge"]["served_models"] == [SERVED] and result["chat_template"] is False
    assert len(judge.requests) == 8
