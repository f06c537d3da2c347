"""The LLM judge against a tiny local OpenAI-compatible server (stdlib http.server on 127.0.0.1).

The server answers POST /v1/chat/completions with scripted replies (a status code and the verdict text),
records every request body, and counts them, so each test states exactly how many HTTP calls were made.
Prompts are files (:class:`JudgePrompt`); the cache is shared by threads and by processes.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import multiprocessing
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from visplay.eval.judge import (
    MAX_PREDICTION_CHARS,
    Judge,
    JudgeError,
    JudgePrompt,
    judged_answer,
    parse_verdict,
)
from visplay.eval.schema import EvalExample, Prediction
from visplay.eval.scoring import join_predictions, make_report, score_rows, score_rule


class FakeEndpoint:
    """Scripted chat-completions server: ``script`` holds (status, content) pairs served in order; once it
    is used up, every request gets (200, ``default``)."""

    def __init__(self) -> None:
        self.script: list[tuple[int, str]] = []
        self.default = "correct"
        self.requests: list[dict] = []
        self.paths: list[str] = []
        self._lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with endpoint._lock:
                    endpoint.requests.append(body)
                    endpoint.paths.append(self.path)
                    status, content = endpoint.script.pop(0) if endpoint.script else (200, endpoint.default)
                payload = {
                    "id": f"cmpl-{len(endpoint.requests)}",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": content},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }
                if status != 200:
                    payload = {"error": {"message": content, "type": "server_error"}}
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def count(self) -> int:
        return len(self.requests)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint() -> Iterator[FakeEndpoint]:
    server = FakeEndpoint()
    yield server
    server.close()


class _Bench:
    """The two things make_report/score_rows need of a benchmark (its name and rule), without its files."""

    notes: tuple[str, ...] = ()

    def __init__(self, name: str) -> None:
        self.name = name

    def score(self, example: EvalExample, text: str) -> float:
        return score_rule(example, text)

    def metrics(self, rows) -> dict[str, float]:
        return {}


VERDICT = JudgePrompt.load("verdict")
PARTIAL = JudgePrompt.load("partial_credit")


def _judge(endpoint: FakeEndpoint, tmp_path, **kwargs) -> Judge:
    sleeps: list[float] = []
    judge = Judge(
        endpoint.base_url,
        "judge-model",
        cache_path=tmp_path / "judge_cache.jsonl",
        base_delay=0.25,
        sleep=sleeps.append,
        **kwargs,
    )
    judge.sleeps = sleeps  # type: ignore[attr-defined]
    return judge


def _mmstar(example_id: str) -> EvalExample:
    question = f"Which shape is in picture {example_id}?"  # distinct prompts: one cache entry per example
    return EvalExample(example_id, "mmstar", question, (b"png",), "B", ("circle", "square"), "", "choice")


MMVET = EvalExample("v1_0", "mmvet", "What are the numbers?", (b"png",), "-1<AND>-5", (), "math", "open")


def _lines(tmp_path) -> list[str]:
    return (tmp_path / "judge_cache.jsonl").read_text().splitlines()


@pytest.mark.parametrize(
    "reply, kind, score",
    [
        ("correct", "verdict", 1.0),
        ("Correct.", "verdict", 1.0),
        ("**Incorrect**", "verdict", 0.0),
        ("incorrect, because the reference says B", "verdict", 0.0),
        ("The answer is correct", "verdict", None),  # the first word must be the verdict
        ("", "verdict", None),
        ("0.6", "verdict", None),  # a number is not a verdict word
        ("0.6", "partial_credit", 0.6),
        ("1.0.", "partial_credit", 1.0),
        ("0.5 because one of two numbers", "partial_credit", 0.5),
        ("1.5", "partial_credit", None),  # outside [0, 1]
        ("nan", "partial_credit", None),
        ("Score: 0.4", "partial_credit", None),
        ("correct", "partial_credit", None),
    ],
)
def test_parse_verdict(reply, kind, score):
    assert parse_verdict(reply, kind) == score


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="judge kind 'mmvet' is not one of"):
        parse_verdict("0.5", "mmvet")
    with pytest.raises(ValueError, match="judge kind 'score'"):
        JudgePrompt.load("score")


def test_shipped_prompts_render():
    mmvet = PARTIAL.render(MMVET, "I see\n-1 and -5")
    # The last table row: question | gold with spaced markers | prediction on one line | (score to fill);
    # the file's trailing newline is not sent.
    assert mmvet.endswith("What are the numbers? | -1 <AND> -5 | I see -1 and -5 |")
    assert "0.0 (completely wrong)" in mmvet and "{" not in mmvet
    generic = VERDICT.render(_mmstar("q1"), "long reasoning... \\boxed{square}")
    assert "Options:\nA. circle\nB. square\n" in generic
    assert "Reference answer: B (square)\nModel answer: square\n" in generic  # the box content is judged
    assert generic.endswith("Reply with exactly one word: correct or incorrect.")
    assert VERDICT.path.endswith("visplay/eval/prompts/verdict.txt") and VERDICT.kind == "verdict"


def test_what_the_judge_sees_follows_the_prompt_kind():
    completion = "x" * 3000 + "\nso the answer is -1 and -5"
    # verdict: no box, so the last MAX_PREDICTION_CHARS characters; partial_credit: all of it, one line.
    assert judged_answer(completion, "verdict") == completion[-MAX_PREDICTION_CHARS:]
    assert judged_answer(completion, "partial_credit") == "x" * 3000 + " so the answer is -1 and -5"
    assert judged_answer("a \\boxed{1} then \\boxed{2}", "verdict") == "2"  # the last box
    # The same MM-Vet example under a verdict prompt: the box content, and no folding.
    assert VERDICT.render(MMVET, "think\n\\boxed{-1, -5}").count("Model answer: -1, -5\n") == 1


def test_a_user_prompt_file_is_filled_by_plain_replacement(tmp_path):
    # Braces that are not our placeholders (LaTeX, JSON, {{ }}) are sent as written; str.format would fail.
    file = tmp_path / "official.txt"
    template = 'Grade $\\frac{1}{2}$ {"a": 1} {{x}} {unknown}\nQ: {question}\nGT: {answer}\nP: {prediction}\n'
    file.write_text(template)
    prompt = JudgePrompt.load("verdict", file)
    # A prediction that contains a placeholder is not filled again (one pass).
    text = prompt.render(_mmstar("q1"), "\\boxed{{answer}}")
    assert text == (
        'Grade $\\frac{1}{2}$ {"a": 1} {{x}} {unknown}\n'
        "Q: Which shape is in picture q1?\nGT: B (square)\nP: {answer}"
    )
    digest = hashlib.sha256(file.read_bytes()).hexdigest()  # the sha256 of the file, as sha256sum gives it
    assert prompt.sha256 == digest
    assert prompt.describe() == f"{file} sha256:{digest[:12]}"


def test_a_bad_prompt_file_is_an_error_naming_it(tmp_path):
    with pytest.raises(ValueError, match=r"judge prompt .*nope\.txt: cannot be read"):
        JudgePrompt.load("verdict", tmp_path / "nope.txt")
    no_prediction = tmp_path / "half.txt"
    no_prediction.write_text("Q: {question} GT: {answer}")
    with pytest.raises(ValueError, match=r"half\.txt: the template lacks \{prediction\}"):
        JudgePrompt.load("partial_credit", no_prediction)
    with pytest.raises(ValueError, match=r"lacks \{answer\} and \{prediction\}"):
        JudgePrompt("inline", "grade it", "verdict")


def test_judging_then_rescoring_hits_the_cache(endpoint, tmp_path):
    examples = [_mmstar(f"q{i}") for i in range(3)]
    predictions = [Prediction(f"q{i}", f"\\boxed{{{'B' if i else 'A'}}}", "m0") for i in range(3)]
    endpoint.script = [(200, "incorrect")]  # the first request; the rest get "correct"
    judge = _judge(endpoint, tmp_path)
    rows = judge.judge_pairs(join_predictions(examples, predictions), VERDICT, max_workers=1)
    assert [r.score for r in rows] == [0.0, 1.0, 1.0]
    assert endpoint.count == 3 and set(endpoint.paths) == {"/v1/chat/completions"}
    assert {(r["model"], r["temperature"], r["max_tokens"]) for r in endpoint.requests} == {
        ("judge-model", 0.0, 16)
    }
    assert endpoint.requests[0]["messages"] == [
        {"role": "user", "content": VERDICT.render(examples[0], predictions[0].text)}
    ]
    assert judge.stats() == {"calls": 3, "cache_hits": 0, "failures": 0, "unparsed": 0}

    # A fresh judge on the same cache file: same verdicts, zero new HTTP calls.
    again = _judge(endpoint, tmp_path)
    rows_again = again.judge_pairs(join_predictions(examples, predictions), VERDICT)
    assert [r.score for r in rows_again] == [0.0, 1.0, 1.0]
    assert endpoint.count == 3
    assert again.stats() == {"calls": 0, "cache_hits": 3, "failures": 0, "unparsed": 0}
    assert len(_lines(tmp_path)) == 3

    # The report counts verdicts: judge score (0 + 1 + 1) / 3; rule score also 2/3 (rows 1, 2 answer B).
    bench = _Bench("mmstar")
    report = make_report(bench, score_rows(bench, examples, predictions), rows_again)
    assert (report.rule_score, report.judge_score, report.extra["judge_missing"]) == (2 / 3, 2 / 3, 0.0)


def test_everything_that_changes_a_verdict_misses_the_cache(endpoint, tmp_path):
    question, completion = _mmstar("q1"), "\\boxed{B}"
    _judge(endpoint, tmp_path).judge(question, completion, VERDICT)
    assert _judge(endpoint, tmp_path).judge(question, completion, VERDICT).cached is True
    # Another model, another max_tokens, another prompt file: new requests to the same server.
    other_model = Judge(endpoint.base_url, "other-model", cache_path=tmp_path / "judge_cache.jsonl")
    assert other_model.judge(question, completion, VERDICT).cached is False
    longer = _judge(endpoint, tmp_path, max_tokens=32)
    assert longer.judge(question, completion, VERDICT).cached is False
    assert endpoint.requests[-1]["max_tokens"] == 32
    reworded = JudgePrompt("p.txt", VERDICT.text.replace("exactly one word", "one word"), "verdict")
    assert _judge(endpoint, tmp_path).judge(question, completion, reworded).cached is False
    assert endpoint.count == 4
    # The same model name on another server (another base_url).
    second = FakeEndpoint()
    try:
        elsewhere = _judge(second, tmp_path)
        assert elsewhere.judge(question, completion, VERDICT).cached is False
        assert (second.count, endpoint.count) == (1, 4)
    finally:
        second.close()
    # The key covers exactly those: a trailing "/" on the same base_url is the same endpoint.
    same = Judge(endpoint.base_url + "/", "judge-model", cache_path=tmp_path / "judge_cache.jsonl")
    assert same.judge(question, completion, VERDICT).cached is True
    assert len(_lines(tmp_path)) == 5


def test_server_error_is_retried_with_backoff(endpoint, tmp_path):
    endpoint.script = [(500, "overloaded"), (503, "overloaded"), (200, "correct")]
    judge = _judge(endpoint, tmp_path)
    result = judge.judge(_mmstar("q1"), "\\boxed{B}", VERDICT)
    assert (result.score, result.cached) == (1.0, False)
    assert endpoint.count == 3
    assert judge.stats() == {"calls": 3, "cache_hits": 0, "failures": 2, "unparsed": 0}
    assert judge.sleeps == [0.25, 0.5]  # base_delay * 2**attempt


def test_exhausted_retries_and_client_errors_raise(endpoint, tmp_path):
    endpoint.script = [(500, "down")] * 3
    judge = _judge(endpoint, tmp_path, max_retries=2)
    with pytest.raises(JudgeError, match="failed after 3 attempt"):
        judge.judge(_mmstar("q1"), "\\boxed{B}", VERDICT)
    assert endpoint.count == 3

    endpoint.script = [(404, "no such model")]
    with pytest.raises(JudgeError, match="failed after 1 attempt"):  # a 4xx is not retried
        judge.judge(_mmstar("q2"), "\\boxed{B}", VERDICT)
    assert endpoint.count == 4
    assert not (tmp_path / "judge_cache.jsonl").exists()  # nothing fetched, nothing cached


def test_connection_error_is_retried(tmp_path):
    judge = Judge("http://127.0.0.1:9/v1", "judge-model", max_retries=1, base_delay=0.0, sleep=lambda s: None)
    with pytest.raises(JudgeError, match="APIConnectionError"):
        judge.judge(_mmstar("q1"), "B", VERDICT)
    assert judge.stats() == {"calls": 2, "cache_hits": 0, "failures": 2, "unparsed": 0}


def test_unparseable_verdict_is_counted_not_zero(endpoint, tmp_path):
    endpoint.default = "I am not sure."
    judge = _judge(endpoint, tmp_path)
    result = judge.judge(MMVET, "-1 and -5", PARTIAL)
    assert (result.score, result.reply) == (None, "I am not sure.")
    assert judge.stats() == {"calls": 1, "cache_hits": 0, "failures": 0, "unparsed": 1}
    # Cached like any reply: judging again makes no request and counts it unparsed again.
    assert judge.judge(MMVET, "-1 and -5", PARTIAL).score is None
    assert judge.stats() == {"calls": 1, "cache_hits": 1, "failures": 0, "unparsed": 2}
    predictions = [Prediction("v1_0", "-1 and -5", "m0")]
    rows = judge.judge_pairs([(MMVET, predictions[0])], PARTIAL)
    bench = _Bench("mmvet")
    report = make_report(bench, score_rows(bench, [MMVET], predictions), rows)
    assert (report.judge_score, report.extra["judge_n"], report.extra["judge_missing"]) == (None, 0.0, 1.0)


def test_partial_credit(endpoint, tmp_path):
    endpoint.default = "0.5"
    assert _judge(endpoint, tmp_path).judge(MMVET, "x = -1", PARTIAL).score == 0.5


def test_truncated_last_cache_line_is_repaired(endpoint, tmp_path):
    judge = _judge(endpoint, tmp_path)
    judge.judge(_mmstar("q1"), "\\boxed{B}", VERDICT)
    with (tmp_path / "judge_cache.jsonl").open("a") as handle:
        handle.write('{"key": "abc", "rep')  # an interrupted write
    again = _judge(endpoint, tmp_path)
    assert len(_lines(tmp_path)) == 1  # the partial line was cut off on loading
    assert again.judge(_mmstar("q1"), "\\boxed{B}", VERDICT).cached is True
    assert endpoint.count == 1
    # So the next verdict is appended on a line of its own.
    again.judge(_mmstar("q2"), "\\boxed{B}", VERDICT)
    assert len(_lines(tmp_path)) == 2
    third = _judge(endpoint, tmp_path)
    assert [third.judge(_mmstar(q), "\\boxed{B}", VERDICT).cached for q in ("q1", "q2")] == [True, True]
    assert endpoint.count == 2


def test_a_whole_last_entry_without_its_newline_is_kept(endpoint, tmp_path):
    (tmp_path / "judge_cache.jsonl").write_text('{"key": "k1", "reply": "correct"}')  # edited by hand
    judge = _judge(endpoint, tmp_path)
    judge.judge(_mmstar("q1"), "\\boxed{B}", VERDICT)
    assert _lines(tmp_path)[0] == '{"key": "k1", "reply": "correct"}' and len(_lines(tmp_path)) == 2


def test_an_append_repairs_under_the_lock_and_keeps_other_writers_lines(endpoint, tmp_path):
    # Judge a loads the cache first; then another writer, b, appends a line and is cut off mid-line.
    a, b = _judge(endpoint, tmp_path), _judge(endpoint, tmp_path)
    b.judge(_mmstar("q1"), "\\boxed{B}", VERDICT)
    with (tmp_path / "judge_cache.jsonl").open("a") as handle:
        handle.write('{"key": "abc", "rep')
    a.judge(_mmstar("q2"), "\\boxed{B}", VERDICT)
    # a re-read the file under the lock: b's whole line stays, the partial one is gone, a's line follows.
    assert len(_lines(tmp_path)) == 2 and all(
        json.loads(line)["reply"] == "correct" for line in _lines(tmp_path)
    )
    fresh = _judge(endpoint, tmp_path)
    assert [fresh.judge(_mmstar(q), "\\boxed{B}", VERDICT).cached for q in ("q1", "q2")] == [True, True]


def test_an_append_waits_for_the_file_lock(tmp_path):
    path = tmp_path / "judge_cache.jsonl"
    judge = Judge("http://127.0.0.1:9/v1", "judge-model", cache_path=path)
    with path.open("a+b") as other:  # another process's lock, as far as flock is concerned
        fcntl.flock(other.fileno(), fcntl.LOCK_EX)
        writer = threading.Thread(target=judge._store, args=("k1", "correct"))
        writer.start()
        writer.join(0.3)
        assert writer.is_alive() and path.read_bytes() == b""
        fcntl.flock(other.fileno(), fcntl.LOCK_UN)
    writer.join(10)
    assert not writer.is_alive() and len(path.read_text().splitlines()) == 1


def test_corrupt_cache_line_in_the_middle_is_an_error(endpoint, tmp_path):
    (tmp_path / "judge_cache.jsonl").write_text('{"key": "k", "reply": "correct"}\ngarbage\n{"key": "j"}\n')
    with pytest.raises(
        ValueError, match=r"judge_cache\.jsonl: line 2 is not a judge cache entry: b'garbage'"
    ):
        _judge(endpoint, tmp_path)
    # A complete last line (it has its newline) that is no entry is corruption too, not a cut-off write.
    (tmp_path / "judge_cache.jsonl").write_text('{"key": "k", "reply": "correct"}\n{"key": "j"}\n')
    with pytest.raises(ValueError, match="line 2 is not a judge cache entry"):
        _judge(endpoint, tmp_path)


N_PER_PROCESS = 60


def _judge_in_process(base_url: str, cache_path: str, worker: int, barrier) -> None:
    """One of two processes judging distinct questions into the same cache file, 4 threads each."""
    judge = Judge(base_url, "judge-model", cache_path=cache_path)
    examples = [_mmstar(f"w{worker}-{i}") for i in range(N_PER_PROCESS)]
    predictions = [Prediction(e.example_id, "\\boxed{B}", "m0") for e in examples]
    barrier.wait()
    rows = judge.judge_pairs(join_predictions(examples, predictions), VERDICT, max_workers=4)
    assert all(r.score == 1.0 for r in rows)


def test_two_processes_share_one_cache_file(endpoint, tmp_path):
    endpoint.default = "correct " + "x" * 20_000  # long lines: a torn write would show
    path = tmp_path / "judge_cache.jsonl"
    path.write_text('{"key": "k0", "reply": "correct"}\n{"key": "abc", "rep')  # a cut-off line to repair
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    workers = [
        context.Process(target=_judge_in_process, args=(endpoint.base_url, str(path), w, barrier))
        for w in range(2)
    ]
    for process in workers:
        process.start()
    for process in workers:
        process.join(120)
    assert [p.exitcode for p in workers] == [0, 0]
    assert endpoint.count == 2 * N_PER_PROCESS
    lines = path.read_text().splitlines()
    assert len(lines) == 2 * N_PER_PROCESS + 1  # every entry on its own whole line, the partial one gone
    assert all(json.loads(line)["reply"].startswith("correct") for line in lines)
    fresh = _judge(endpoint, tmp_path)
    examples = [_mmstar(f"w{w}-{i}") for w in range(2) for i in range(N_PER_PROCESS)]
    assert all(fresh.judge(e, "\\boxed{B}", VERDICT).cached for e in examples)
    assert endpoint.count == 2 * N_PER_PROCESS
