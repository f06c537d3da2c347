"""An LLM judge behind any OpenAI-compatible endpoint, with a prompt file, retries and a shared disk cache.

    prompt = JudgePrompt.load("verdict")                  # or JudgePrompt.load("partial_credit", "my.txt")
    judge = Judge("http://127.0.0.1:8000/v1", "Qwen2.5-72B-Instruct", cache_path=run_dir / "judge_cache.jsonl")
    rows = judge.judge_pairs(join_predictions(examples, predictions), prompt)   # ScoredRow, None = no verdict
    judge.stats()       # {"calls": 212, "cache_hits": 0, "failures": 2, "unparsed": 1}
    prompt.describe()   # "…/visplay/eval/prompts/verdict.txt sha256:3f2a…", recorded in the report

Prompts (:class:`JudgePrompt`) are text files with the placeholders ``{question}``, ``{options}``,
``{answer}`` and ``{prediction}`` (the last two required), filled by plain replacement, so any other brace
or LaTeX in the file is sent as written. Each kind (:data:`~visplay.eval.benchmarks.base.JUDGE_KINDS`) has a
default shipped in ``visplay/eval/prompts/<kind>.txt`` (the project's own text):

* ``verdict`` — the reply is ``correct`` or ``incorrect`` → 1.0 / 0.0 (:func:`parse_verdict`); the judge is
  shown the content of the completion's last ``\\boxed{}``, else its last :data:`MAX_PREDICTION_CHARS`
  characters.
* ``partial_credit`` — the reply is a number in [0, 1], as MM-Vet grades (a few-shot table where ``<AND>``
  needs every element and ``<OR>`` any one); the judge is shown the whole completion, and every filled value
  is folded onto one line (it is a table cell).

MM-Vet's official evaluator (``yuweihao/MM-Vet``, ``mm-vet_evaluator.py``) sends its prompt followed by the
row ``question | answer | prediction | `` with ``<AND>``/``<OR>`` spaced out; to grade with that prompt, save
your copy of it to a file ending with the line ``{question} | {answer} | {prediction} |`` and name the file
in the config. Where we differ from that evaluator: a reply that cannot be read is not retried at a higher
temperature and then scored 0; its score is None and it is counted in ``unparsed``.

Requests use temperature 0. Retries: connection errors, timeouts, HTTP 429 and 5xx are retried up to
``max_retries`` times, waiting ``base_delay * 2**attempt`` seconds before retry ``attempt + 1``; other errors
(a 4xx: bad model name or key) and exhausted retries raise :class:`JudgeError`. Verdicts already fetched stay
in the cache, so a rerun resumes where it stopped.

Cache: one JSON line per fetched reply, ``{"key", "base_url", "model", "reply"}``; the key is the sha256 of
everything that changes a reply (:meth:`Judge.cache_key`: endpoint, model, ``max_tokens``, temperature and
the full rendered prompt). Unparseable replies are cached too, so re-scoring is free and reproducible.
Several processes may judge into one cache file: every append, and the repair of a truncated last line (an
interrupted write), happens under an exclusive ``flock`` on the file, with the file re-read under the lock;
the file is never replaced, only appended to or cut back to its last complete line.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import openai

from visplay.eval.benchmarks.base import JUDGE_KINDS
from visplay.eval.schema import LETTERS, EvalExample, Prediction
from visplay.eval.scoring import ScoredRow
from visplay.rewards import extract_boxed

MAX_PREDICTION_CHARS = 2000
"""Characters of an unboxed completion shown to a ``verdict`` judge (the end, where the answer usually is)."""

PROMPTS_DIR = Path(__file__).parent / "prompts"
"""Where the default prompt of each judge kind is shipped: ``<kind>.txt``."""

PLACEHOLDERS = ("question", "options", "answer", "prediction")
"""The fields a prompt file may name, as ``{question}`` etc.; ``{answer}`` and ``{prediction}`` are required."""

JUDGE_TEMPERATURE = 0.0
"""The sampling temperature of every judge request (part of the cache key)."""

_PLACEHOLDER_RE = re.compile(r"\{(" + "|".join(PLACEHOLDERS) + r")\}")
_MARKER_RE = re.compile(r"\s*<(AND|OR)>\s*")
_WORD_RE = re.compile(r"[a-z]+")
_VERDICT_WORDS = {"correct": 1.0, "incorrect": 0.0}


class JudgeError(RuntimeError):
    """The endpoint refused a request (4xx) or kept failing after every retry."""


def _check_kind(kind: str) -> None:
    if kind not in JUDGE_KINDS:
        raise ValueError(f"judge kind {kind!r} is not one of {JUDGE_KINDS}")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def judged_answer(prediction_text: str, kind: str) -> str:
    """What the judge is shown of a completion: ``partial_credit``, all of it on one line; ``verdict``, the
    last ``\\boxed{}`` content, else the last :data:`MAX_PREDICTION_CHARS` characters."""
    _check_kind(kind)
    if kind == "partial_credit":
        return _one_line(prediction_text)
    boxed = extract_boxed(prediction_text)
    return boxed if boxed is not None else prediction_text.strip()[-MAX_PREDICTION_CHARS:]


def gold_text(example: EvalExample) -> str:
    """The reference answer as the judge sees it: a choice letter with its option text (``B (square)``),
    and ``<AND>`` / ``<OR>`` spaced out (``-1<AND>-5`` → ``-1 <AND> -5``, as MM-Vet's evaluator sends it)."""
    gold = example.answer
    if example.answer_type == "choice" and example.options:
        gold = f"{gold} ({example.options[LETTERS.index(gold)]})"
    return _MARKER_RE.sub(r" <\1> ", gold)


def options_text(example: EvalExample) -> str:
    """``"Options:\\nA. circle\\nB. square\\n"`` for a question with options, else ``""``."""
    if not example.options:
        return ""
    return "Options:\n" + "".join(f"{LETTERS[i]}. {text}\n" for i, text in enumerate(example.options))


@dataclass(frozen=True)
class JudgePrompt:
    """A judge prompt template read from a file.

    Attributes:
        path: the file it was read from (reported with :meth:`describe`).
        text: the file's content, exactly (so :attr:`sha256` is the file's sha256).
        kind: one of :data:`~visplay.eval.benchmarks.base.JUDGE_KINDS`; says how a reply is read
            (:func:`parse_verdict`) and what the judge is shown (:func:`judged_answer`).
    """

    path: str
    text: str
    kind: str

    def __post_init__(self) -> None:
        """Refuse an unknown kind, or a template without ``{answer}`` or ``{prediction}``."""
        _check_kind(self.kind)
        missing = [f"{{{name}}}" for name in ("answer", "prediction") if f"{{{name}}}" not in self.text]
        if missing:
            raise ValueError(
                f"judge prompt {self.path}: the template lacks {' and '.join(missing)} "
                f"(placeholders: {', '.join('{' + p + '}' for p in PLACEHOLDERS)})"
            )

    @classmethod
    def load(cls, kind: str, path: str | Path | None = None) -> JudgePrompt:
        """The prompt in ``path``, or the shipped default for ``kind`` when ``path`` is None. A missing or
        unreadable file, or a template lacking a required placeholder, is a ValueError naming the file."""
        _check_kind(kind)
        file = Path(path) if path is not None else PROMPTS_DIR / f"{kind}.txt"
        try:
            text = file.read_bytes().decode("utf-8")
        except OSError as err:
            raise ValueError(f"judge prompt {file}: cannot be read ({err.strerror or err})") from err
        except UnicodeDecodeError as err:
            raise ValueError(f"judge prompt {file}: not UTF-8 text ({err})") from err
        return cls(str(file), text, kind)

    @property
    def sha256(self) -> str:
        """The sha256 (hex) of :attr:`text` in UTF-8."""
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    def describe(self) -> str:
        """``"<path> sha256:<first 12 hex digits>"``, for reports."""
        return f"{self.path} sha256:{self.sha256[:12]}"

    def render(self, example: EvalExample, prediction_text: str) -> str:
        """The prompt for one example and completion: each placeholder replaced by its value in one pass
        (a value is never scanned for placeholders), trailing newlines of the file dropped.

        Values: ``question``; ``options`` (:func:`options_text`); ``answer`` (:func:`gold_text`);
        ``prediction`` (:func:`judged_answer`). For ``partial_credit`` each value is folded onto one line.
        """
        values = {
            "question": example.question,
            "options": options_text(example),
            "answer": gold_text(example),
            "prediction": judged_answer(prediction_text, self.kind),
        }
        if self.kind == "partial_credit":
            values = {name: _one_line(value) for name, value in values.items()}
        return _PLACEHOLDER_RE.sub(lambda m: values[m.group(1)], self.text.rstrip("\r\n"))


def parse_verdict(reply: str, kind: str) -> float | None:
    """The score in a judge reply, or None if it cannot be read.

    ``partial_credit``: the reply's first token as a number in [0, 1] (``"0.6"``, ``"0.6."``,
    ``"1.0 because ..."``). ``verdict``: the reply's first word, ``correct`` → 1.0 or ``incorrect`` → 0.0
    (case, markdown and punctuation ignored: ``"**Correct**."`` → 1.0); anything else
    (``"The answer is correct"``) → None.
    """
    _check_kind(kind)
    text = reply.strip().lower().lstrip("*_`\"' ")
    if kind == "partial_credit":
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


@dataclass(frozen=True)
class JudgeResult:
    """One verdict: ``score`` in [0, 1], or None when ``reply`` could not be parsed; ``cached`` says whether
    it came from the cache (no request made)."""

    score: float | None
    reply: str
    cached: bool


@contextmanager
def _locked(path: Path) -> Iterator[BinaryIO]:
    """``path`` opened for reading and appending (created if absent), under an exclusive ``flock``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield handle
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _entry(line: bytes) -> tuple[str, str] | None:
    """(key, reply) of one cache line, or None if it is not a cache entry."""
    try:
        entry = json.loads(line)
        key, reply = entry["key"], entry["reply"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        return None
    return (key, reply) if isinstance(key, str) and isinstance(reply, str) else None


def _read_locked(handle: BinaryIO, path: Path) -> dict[str, str]:
    """key → reply of a cache file whose lock is held. A last line without its newline is an interrupted
    write: cut off (or, if it is a whole entry, given its newline), so later appends start on a fresh line.
    A bad complete line is a ValueError naming it."""
    handle.seek(0)
    data = handle.read()
    end = data.rfind(b"\n") + 1
    cache: dict[str, str] = {}
    for number, line in enumerate(data[:end].split(b"\n")[:-1], start=1):
        entry = _entry(line)
        if entry is None:
            raise ValueError(f"{path}: line {number} is not a judge cache entry: {line[:80]!r}")
        cache[entry[0]] = entry[1]
    if end < len(data):
        entry = _entry(data[end:])
        if entry is None:
            os.ftruncate(handle.fileno(), end)
        else:
            cache[entry[0]] = entry[1]
            handle.write(b"\n")
        handle.flush()
        os.fsync(handle.fileno())
    return cache


class Judge:
    """Scores completions with an LLM behind an OpenAI-compatible ``/chat/completions`` endpoint.

    Args:
        base_url: the API root, e.g. ``http://127.0.0.1:8000/v1`` (part of every cache key).
        model: the judge model's name on that endpoint (part of every cache key).
        api_key: sent as a bearer token; None for endpoints that need none.
        cache_path: the JSONL cache file (created on first write), which other processes may share; None
            keeps verdicts in memory only.
        max_retries: retries after the first attempt for connection errors, timeouts, 429 and 5xx (>= 0).
        base_delay: seconds before the first retry; doubled for each further one.
        timeout_s: per-request timeout.
        max_tokens: reply length limit (a verdict is a word or a number; part of every cache key).
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
        self.max_retries, self.base_delay, self.max_tokens = max_retries, base_delay, max_tokens
        self._sleep, self._api_key, self._timeout_s = sleep, api_key, timeout_s
        self._client: openai.OpenAI | None = None  # built on the first request: cache hits need none
        self._lock = threading.Lock()
        self.calls = self.cache_hits = self.failures = self.unparsed = 0
        self.cache_path = Path(cache_path) if cache_path is not None else None
        self._cache: dict[str, str] = {}
        if self.cache_path is not None and self.cache_path.exists():
            with _locked(self.cache_path) as handle:
                self._cache = _read_locked(handle, self.cache_path)

    def cache_key(self, prompt: str) -> str:
        """sha256 of everything that changes a reply: endpoint (trailing ``/`` ignored), model,
        ``max_tokens``, temperature and the rendered prompt."""
        fields = [self.base_url.rstrip("/"), self.model, self.max_tokens, JUDGE_TEMPERATURE, prompt]
        return hashlib.sha256(json.dumps(fields).encode()).hexdigest()

    def stats(self) -> dict[str, int]:
        """The counters: calls, cache_hits, failures, unparsed."""
        with self._lock:
            return {
                "calls": self.calls,
                "cache_hits": self.cache_hits,
                "failures": self.failures,
                "unparsed": self.unparsed,
            }

    def judge(self, example: EvalExample, prediction_text: str, prompt: JudgePrompt) -> JudgeResult:
        """The verdict on one completion: from the cache, else from the endpoint (then cached)."""
        text = prompt.render(example, prediction_text)
        key = self.cache_key(text)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self.cache_hits += 1
        reply = cached if cached is not None else self._request(text)
        if cached is None:
            self._store(key, reply)
        score = parse_verdict(reply, prompt.kind)
        if score is None:
            with self._lock:
                self.unparsed += 1
        return JudgeResult(score, reply, cached is not None)

    def judge_pairs(
        self, pairs: Sequence[tuple[EvalExample, Prediction]], prompt: JudgePrompt, max_workers: int = 4
    ) -> list[ScoredRow]:
        """Judge every (example, prediction) pair, ``max_workers`` requests at a time; rows in input order,
        ``score`` None where the reply could not be parsed."""
        with ThreadPoolExecutor(max_workers=max_workers) as pool:
            results = list(pool.map(lambda pair: self.judge(pair[0], pair[1].text, prompt), pairs))
        return [ScoredRow(e, p, r.score) for (e, p), r in zip(pairs, results, strict=True)]

    def _store(self, key: str, reply: str) -> None:
        """Remember a fetched reply, and append it to the cache file as one whole line under the file's
        lock (repairing an interrupted last line first: :func:`_read_locked`), flushed and fsynced."""
        with self._lock:
            self._cache[key] = reply
        if self.cache_path is None:
            return
        line = json.dumps({"key": key, "base_url": self.base_url, "model": self.model, "reply": reply})
        with _locked(self.cache_path) as handle:
            size = os.fstat(handle.fileno()).st_size
            if size and os.pread(handle.fileno(), 1, size - 1) != b"\n":
                _read_locked(handle, self.cache_path)
            handle.write(line.encode() + b"\n")
            handle.flush()
            os.fsync(handle.fileno())

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
                    temperature=JUDGE_TEMPERATURE,
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
