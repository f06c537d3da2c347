"""The LLM judge against a tiny local OpenAI-compatible server (stdlib http.server on 127.0.0.1).

The server answers POST /v1/chat/completions with scripted replies (a status code and the verdict text),
records every request body, and counts them, so each test states exactly how many HTTP calls were made.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from visplay.eval.judge import Judge, JudgeError, judge_prompt, parse_verdict
from visplay.eval.schema import EvalExample, Prediction
from visplay.eval.scoring import join_predictions, make_report, score_rows


class FakeEndpoint:
    """Scripted chat-completions server: ``script`` holds (status, content) pairs served in order; once it
    is used up, every request gets (200, ``default``)."""

    def __init__(self) -> None:
        self.script: list[tuple[int, str]] = []
        self.default = "correct"
        self.requests: list[dict] = []
        self.paths: list[str] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
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


@pytest.fixture
def endpoint() -> Iterator[FakeEndpoint]:
    server = FakeEndpoint()
    yield server
    server.server.shutdown()
    server.server.server_close()


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
    return EvalExample(example_id, "mmstar", question, b"png", "B", ("circle", "square"), "", "choice")


MMVET = EvalExample("v1_0", "mmvet", "What are the numbers?", b"png", "-1<AND>-5", (), "math", "open")


@pytest.mark.parametrize(
    "reply, benchmark, score",
    [
        ("correct", "mmstar", 1.0),
        ("Correct.", "mmstar", 1.0),
        ("**Incorrect**", "mmstar", 0.0),
        ("incorrect, because the reference says B", "mmstar", 0.0),
        ("The answer is correct", "mmstar", None),  # the first word must be the verdict
        ("", "mmstar", None),
        ("0.6", "mmvet", 0.6),
        ("1.0.", "mmvet", 1.0),
        ("0.5 because one of two numbers", "mmvet", 0.5),
        ("1.5", "mmvet", None),  # outside [0, 1]
        ("nan", "mmvet", None),
        ("Score: 0.4", "mmvet", None),
    ],
)
def test_parse_verdict(reply, benchmark, score):
    assert parse_verdict(reply, benchmark) == score


def test_prompts():
    mmvet = judge_prompt(MMVET, "I see\n-1 and -5")
    # The last table row: question | gold with spaced markers | prediction on one line | (score to fill).
    assert mmvet.endswith("What are the numbers? | -1 <AND> -5 | I see -1 and -5 |")
    assert "0.0 (completely wrong)" in mmvet
    generic = judge_prompt(_mmstar("q1"), "long reasoning... \\boxed{square}")
    assert "Options:\nA. circle\nB. square\n" in generic
    assert "Reference answer: B (square)\nModel answer: square\n" in generic  # the box content is judged
    assert generic.endswith("Reply with exactly one word: correct or incorrect.")


def test_judging_then_rescoring_hits_the_cache(endpoint, tmp_path):
    examples = [_mmstar(f"q{i}") for i in range(3)]
    predictions = [Prediction(f"q{i}", f"\\boxed{{{'B' if i else 'A'}}}", "m0") for i in range(3)]
    endpoint.script = [(200, "incorrect")]  # the first request; the rest get "correct"
    judge = _judge(endpoint, tmp_path)
    rows = judge.judge_pairs(join_predictions(examples, predictions), max_workers=1)
    assert [r.score for r in rows] == [0.0, 1.0, 1.0]
    assert endpoint.count == 3 and set(endpoint.paths) == {"/v1/chat/completions"}
    assert {(r["model"], r["temperature"]) for r in endpoint.requests} == {("judge-model", 0.0)}
    assert judge.stats() == {"calls": 3, "cache_hits": 0, "failures": 0, "unparsed": 0}

    # A fresh judge on the same cache file: same verdicts, zero new HTTP calls.
    again = _judge(endpoint, tmp_path)
    rows_again = again.judge_pairs(join_predictions(examples, predictions))
    assert [r.score for r in rows_again] == [0.0, 1.0, 1.0]
    assert endpoint.count == 3
    assert again.stats() == {"calls": 0, "cache_hits": 3, "failures": 0, "unparsed": 0}
    assert len((tmp_path / "judge_cache.jsonl").read_text().splitlines()) == 3

    # The report counts verdicts: judge score (0 + 1 + 1) / 3; rule score also 2/3 (rows 1, 2 answer B).
    report = make_report(score_rows(examples, predictions), rows_again)
    assert (report.rule_score, report.judge_score, report.extra["judge_missing"]) == (2 / 3, 2 / 3, 0.0)


def test_a_different_judge_model_does_not_share_the_cache(endpoint, tmp_path):
    _judge(endpoint, tmp_path).judge(_mmstar("q1"), "\\boxed{B}")
    other = Judge(endpoint.base_url, "other-model", cache_path=tmp_path / "judge_cache.jsonl")
    assert other.judge(_mmstar("q1"), "\\boxed{B}").cached is False
    assert endpoint.count == 2


def test_server_error_is_retried_with_backoff(endpoint, tmp_path):
    endpoint.script = [(500, "overloaded"), (503, "overloaded"), (200, "correct")]
    judge = _judge(endpoint, tmp_path)
    result = judge.judge(_mmstar("q1"), "\\boxed{B}")
    assert (result.score, result.cached) == (1.0, False)
    assert endpoint.count == 3
    assert judge.stats() == {"calls": 3, "cache_hits": 0, "failures": 2, "unparsed": 0}
    assert judge.sleeps == [0.25, 0.5]  # base_delay * 2**attempt


def test_exhausted_retries_and_client_errors_raise(endpoint, tmp_path):
    endpoint.script = [(500, "down")] * 3
    judge = _judge(endpoint, tmp_path, max_retries=2)
    with pytest.raises(JudgeError, match="failed after 3 attempt"):
        judge.judge(_mmstar("q1"), "\\boxed{B}")
    assert endpoint.count == 3

    endpoint.script = [(404, "no such model")]
    with pytest.raises(JudgeError, match="failed after 1 attempt"):  # a 4xx is not retried
        judge.judge(_mmstar("q2"), "\\boxed{B}")
    assert endpoint.count == 4
    assert not (tmp_path / "judge_cache.jsonl").exists()  # nothing fetched, nothing cached


def test_connection_error_is_retried(tmp_path):
    judge = Judge("http://127.0.0.1:9/v1", "judge-model", max_retries=1, base_delay=0.0, sleep=lambda s: None)
    with pytest.raises(JudgeError, match="APIConnectionError"):
        judge.judge(_mmstar("q1"), "B")
    assert judge.stats() == {"calls": 2, "cache_hits": 0, "failures": 2, "unparsed": 0}


def test_unparseable_verdict_is_counted_not_zero(endpoint, tmp_path):
    endpoint.default = "I am not sure."
    judge = _judge(endpoint, tmp_path)
    result = judge.judge(MMVET, "-1 and -5")
    assert (result.score, result.reply) == (None, "I am not sure.")
    assert judge.stats() == {"calls": 1, "cache_hits": 0, "failures": 0, "unparsed": 1}
    # Cached like any reply: judging again makes no request and counts it unparsed again.
    assert judge.judge(MMVET, "-1 and -5").score is None
    assert judge.stats() == {"calls": 1, "cache_hits": 1, "failures": 0, "unparsed": 2}
    rows = judge.judge_pairs([(MMVET, Prediction("v1_0", "-1 and -5", "m0"))])
    report = make_report(score_rows([MMVET], [Prediction("v1_0", "-1 and -5", "m0")]), rows)
    assert (report.judge_score, report.extra["judge_n"], report.extra["judge_missing"]) == (None, 0.0, 1.0)


def test_mmvet_partial_credit(endpoint, tmp_path):
    endpoint.default = "0.5"
    assert _judge(endpoint, tmp_path).judge(MMVET, "x = -1").score == 0.5


def test_truncated_last_cache_line_is_ignored(endpoint, tmp_path):
    judge = _judge(endpoint, tmp_path)
    judge.judge(_mmstar("q1"), "\\boxed{B}")
    with (tmp_path / "judge_cache.jsonl").open("a") as handle:
        handle.write('{"key": "abc", "rep')  # an interrupted write
    again = _judge(endpoint, tmp_path)
    assert again.judge(_mmstar("q1"), "\\boxed{B}").cached is True
    assert endpoint.count == 1
    # The partial line was dropped, so the next verdict is appended on a line of its own.
    again.judge(_mmstar("q2"), "\\boxed{B}")
    assert len((tmp_path / "judge_cache.jsonl").read_text().splitlines()) == 2
    third = _judge(endpoint, tmp_path)
    assert [third.judge(_mmstar(q), "\\boxed{B}").cached for q in ("q1", "q2")] == [True, True]
    assert endpoint.count == 2


def test_corrupt_cache_line_in_the_middle_is_an_error(endpoint, tmp_path):
    (tmp_path / "judge_cache.jsonl").write_text('garbage\n{"key": "k", "model": "m", "reply": "correct"}\n')
    with pytest.raises(ValueError, match="line 1 is not a cache entry"):
        _judge(endpoint, tmp_path)
