"""An LLM judge behind any OpenAI-compatible endpoint, with retries and a disk cache.

    judge = Judge("http://127.0.0.1:8000/v1", "Qwen2.5-72B-Instruct", cache_path=run_dir / "judge_cache.jsonl")
    rows = judge.judge_pairs(join_predictions(examples, predictions))    # ScoredRow, score None = no verdict
    judge.stats()    # {"calls": 212, "cache_hits": 0, "failures": 2, "unparsed": 1}

Prompts (:func:`judge_prompt`): MM-Vet gets a 0.0-1.0 partial-credit prompt in the style of the MM-Vet
paper (a few-shot table where ``<AND>`` needs every element and ``<OR>`` any one), whose reply is a number;
every other benchmark gets a correct/incorrect prompt whose reply maps to 1.0/0.0 (:func:`parse_verdict`).
Requests use temperature 0. A reply that cannot be parsed is not scored 0: its score is None and it is
counted in ``unparsed``.

What the judge sees of a completion: MM-Vet, the whole completion (newlines folded, as one table cell);
other benchmarks, the content of the last ``\\boxed{}`` if there is one, else the completion's last
:data:`MAX_PREDICTION_CHARS` characters.

Retries: connection errors, timeouts, HTTP 429 and 5xx are retried up to ``max_retries`` times, waiting
``base_delay * 2**attempt`` seconds before retry ``attempt + 1``; other errors (a 4xx: bad model name or
key) and exhausted retries raise :class:`JudgeError`. Verdicts already fetched stay in the cache, so a rerun
resumes where it stopped.

Cache: one JSON line per fetched reply, ``{"key", "model", "reply"}``, keyed by the sha256 of (judge model,
prompt text, judged answer); unparseable replies are cached too, so re-scoring is free and reproducible.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import openai

from visplay.eval.schema import LETTERS, EvalExample, Prediction
from visplay.eval.scoring import ScoredRow
from visplay.rewards import extract_boxed

MAX_PREDICTION_CHARS = 2000
"""Characters of an unboxed completion shown to the generic judge (the end, where the answer usually is)."""

MMVET_PROMPT = """\
Compare the ground truth with the prediction of an AI model and give the prediction a correctness score. \
In the ground truth, <AND> means the prediction is fully right only if it contains every element joined by \
<AND>; <OR> means it is fully right if it contains any one of the elements joined by <OR>. The score is one \
of 0.0 (completely wrong), 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9 or 1.0 (completely right). Reply with \
the score only, completing the last cell of the table.

Question | Ground truth | Prediction | Correctness
--- | --- | --- | ---
How many apples are on the plate? | 3 | There are three apples on the plate. | 1.0
What are the two numbers on the sign? | 12 <AND> 40 | 12 | 0.5
What are the two numbers on the sign? | 12 <AND> 40 | The sign shows 12 and 40. | 1.0
Which animal is shown? | cat <OR> kitten | a small kitten | 1.0
Which animal is shown? | cat <OR> kitten | a puppy | 0.0
Why is this picture funny? | A dog wears glasses and reads a newspaper at a breakfast table like a person, \
which is unexpected for an animal. | A dog is reading. | 0.4
{question} | {answer} | {prediction} |"""
"""MM-Vet's partial-credit prompt (format fields: question, answer, prediction)."""

GENERIC_PROMPT = """\
You are grading a model's answer to a question about an image. Decide whether the model's answer agrees \
with the reference answer. Ignore differences of format, wording or notation that do not change the \
meaning (0.5 and 1/2 agree; for a multiple-choice question an option's letter and its text are the same \
answer). An answer that is missing, ambiguous or gives several different answers is incorrect.

Question: {question}
{options}Reference answer: {answer}
Model answer: {prediction}

Reply with exactly one word: correct or incorrect."""
"""The correct/incorrect prompt of every benchmark but MM-Vet (format fields: question, options, answer,
prediction)."""

_WORD_RE = re.compile(r"[a-z]+")
_VERDICT_WORDS = {"correct": 1.0, "incorrect": 0.0}


class JudgeError(RuntimeError):
    """The endpoint refused a request (4xx) or kept failing after every retry."""


@dataclass(frozen=True)
class JudgeResult:
    """One verdict: ``score`` in [0, 1], or None when ``reply`` could not be parsed; ``cached`` says whether
    it came from the cache (no request made)."""

    score: float | None
    reply: str
    cached: bool


def judged_answer(example: EvalExample, prediction_text: str) -> str:
    """What the judge is shown of a completion (module docstring)."""
    if example.benchmark == "mmvet":
        return " ".join(prediction_text.split())
    boxed = extract_boxed(prediction_text)
    return boxed if boxed is not None else prediction_text.strip()[-MAX_PREDICTION_CHARS:]


def judge_prompt(example: EvalExample, prediction_text: str) -> str:
    """The full prompt for one example and completion (MM-Vet or generic, see the module docstring)."""
    answer = judged_answer(example, prediction_text)
    if example.benchmark == "mmvet":
        gold = example.answer.replace("<AND>", " <AND> ").replace("<OR>", " <OR> ")
        return MMVET_PROMPT.format(
            question=" ".join(example.question.split()), answer=" ".join(gold.split()), prediction=answer
        )
    options = "".join(f"{LETTERS[i]}. {text}\n" for i, text in enumerate(example.options))
    gold = example.answer
    if example.answer_type == "choice" and example.options:
        gold = f"{gold} ({example.options[LETTERS.index(gold)]})"
    return GENERIC_PROMPT.format(
        question=example.question,
        options=f"Options:\n{options}" if options else "",
        answer=gold,
        prediction=answer,
    )


def parse_verdict(reply: str, benchmark: str) -> float | None:
    """The score in a judge reply, or None if it cannot be read.

    MM-Vet: the reply's first token as a number in [0, 1] (``"0.6"``, ``"0.6."``, ``"1.0 because ..."``).
    Others: the reply's first word, ``correct`` → 1.0 or ``incorrect`` → 0.0 (case, markdown and
    punctuation ignored: ``"**Correct**."`` → 1.0); anything else (``"The answer is correct"``) → None.
    """
    text = reply.strip().lower().lstrip("*_`\"' ")
    if benchmark == "mmvet":
        tokens = text.split()
        if not tokens:
            return None
        try:
            value = float(tokens[0].strip("*_`\"'").rstrip(".,;:"))
        except ValueError:
            return None
        return value if 0.0 <= value <= 1.0 else None  # NaN fails both comparisons
    word = _WORD_RE.match(text)
    if word is None or word.group() not in _VERDICT_WORDS:
        return None
    return _VERDICT_WORDS[word.group()]


class Judge:
    """Scores completions with an LLM behind an OpenAI-compatible ``/chat/completions`` endpoint.

    Args:
        base_url: the API root, e.g. ``http://127.0.0.1:8000/v1``.
        model: the judge model's name on that endpoint (part of every cache key).
        api_key: sent as a bearer token; None for endpoints that need none.
        cache_path: the JSONL cache file (created on first write); None keeps verdicts in memory only.
        max_retries: retries after the first attempt for connection errors, timeouts, 429 and 5xx (>= 0).
        base_delay: seconds before the first retry; doubled for each further one.
        timeout_s: per-request timeout.
        max_tokens: reply length limit (a verdict is a word or a number).
        sleep: the wait function (tests pass a no-op).

    Counters (read with :meth:`stats`): ``calls`` requests sent (retries included), ``cache_hits`` verdicts
    served from the cache, ``failures`` requests that failed (whether or not a retry then succeeded),
    ``unparsed`` replies :func:`parse_verdict` could not read (fetched or cached). Thread-safe.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        *,
        cache_path: str | Path | None = None,
        max_retries: int = 4,
        base_delay: float = 1.0,
        timeout_s: float = 60.0,
        max_tokens: int = 16,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_retries < 0 or base_delay < 0:
            raise ValueError(f"max_retries and base_delay must be >= 0, got {max_retries}, {base_delay}")
        self.base_url, self.model = base_url, model
        self.max_retries, self.base_delay, self.max_tokens, self._sleep = (
            max_retries,
            base_delay,
            max_tokens,
            sleep,
        )
        self._api_key, self._timeout_s = api_key, timeout_s
        self._client: openai.OpenAI | None = None  # built on the first request: cache hits need none
        self._lock = threading.Lock()
        self.calls = self.cache_hits = self.failures = self.unparsed = 0
        self.cache_path = Path(cache_path) if cache_path is not None else None
        self._cache: dict[str, str] = self._load_cache()

    def _load_cache(self) -> dict[str, str]:
        """key → reply from the cache file. A truncated last line (an interrupted write) is dropped from the
        file, so later appends start on a fresh line; a bad line elsewhere is a ValueError."""
        if self.cache_path is None or not self.cache_path.exists():
            return {}
        cache = {}
        lines = self.cache_path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, start=1):
            try:
                entry = json.loads(line)
                cache[entry["key"]] = entry["reply"]
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                if number < len(lines):
                    raise ValueError(
                        f"{self.cache_path}: line {number} is not a cache entry ({err})"
                    ) from err
                tmp = self.cache_path.with_suffix(".tmp")
                tmp.write_text("".join(kept + "\n" for kept in lines[:-1]), encoding="utf-8")
                os.replace(tmp, self.cache_path)
        return cache

    def cache_key(self, prompt: str, answer: str) -> str:
        """sha256 of (judge model, prompt text, judged answer)."""
        return hashlib.sha256(json.dumps([self.model, prompt, answer]).encode()).hexdigest()

    def stats(self) -> dict[str, int]:
        """The counters: calls, cache_hits, failures, unparsed."""
        with self._lock:
            return {
                "calls": self.calls,
                "cache_hits": self.cache_hits,
                "failures": self.failures,
                "unparsed": self.unparsed,
            }

    def judge(self, example: EvalExample, prediction_text: str) -> JudgeResult:
        """The verdict on one completion: from the cache, else from the endpoint (then cached)."""
        prompt = judge_prompt(example, prediction_text)
        key = self.cache_key(prompt, judged_answer(example, prediction_text))
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self.cache_hits += 1
        reply = cached if cached is not None else self._request(prompt)
        if cached is None:
            self._store(key, reply)
        score = parse_verdict(reply, example.benchmark)
        if score is None:
            with self._lock:
                self.unparsed += 1
        return JudgeResult(score, reply, cached is not None)

    def judge_pairs(
        self, pairs: Sequence[tuple[EvalExample, Prediction]], max_workers: int = 4
    ) -> list[ScoredRow]:
        """Judge every (example, prediction) pair, ``max_workers`` requests at a time; rows in input order,
        ``score`` None where the reply could not be parsed."""
        with ThreadPoolExecutor(max_workers=max_workers) as pool:
            results = list(pool.map(lambda pair: self.judge(pair[0], pair[1].text), pairs))
        return [ScoredRow(e, p, r.score) for (e, p), r in zip(pairs, results, strict=True)]

    def _store(self, key: str, reply: str) -> None:
        """Remember a fetched reply, and append it to the cache file."""
        with self._lock:
            self._cache[key] = reply
            if self.cache_path is not None:
                self.cache_path.parent.mkdir(parents=True, exist_ok=True)
                with self.cache_path.open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps({"key": key, "model": self.model, "reply": reply}) + "\n")

    def _openai(self) -> openai.OpenAI:
        """The HTTP client (openai's own retries off: :meth:`_request` retries)."""
        with self._lock:
            if self._client is None:
                self._client = openai.OpenAI(
                    base_url=self.base_url,
                    api_key=self._api_key or "none",
                    max_retries=0,
                    timeout=self._timeout_s,
                )
            return self._client

    def _request(self, prompt: str) -> str:
        """One chat completion at temperature 0, retried on transient errors (module docstring)."""
        attempt = 0
        while True:
            with self._lock:
                self.calls += 1
            try:
                response = self._openai().chat.completions.create(
                    model=self.model,
                    messages=[{"role": "user", "content": prompt}],
                    temperature=0.0,
                    max_tokens=self.max_tokens,
                )
                return response.choices[0].message.content or ""
            except (openai.APIConnectionError, openai.APIStatusError) as err:
                with self._lock:
                    self.failures += 1
                status = err.status_code if isinstance(err, openai.APIStatusError) else None
                transient = status is None or status == 429 or status >= 500
                if not transient or attempt >= self.max_retries:
                    raise JudgeError(
                        f"judge {self.model!r} at {self.base_url}: request failed after {attempt + 1} "
                        f"attempt(s): {type(err).__name__} {status or ''} {err}"
                    ) from err
                self._sleep(self.base_delay * 2**attempt)
                attempt += 1
