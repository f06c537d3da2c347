"""Step 2 of a generation pass on real Ray Data: the distributed dedup and cap equal the in-memory rule,
and the shard ledger marks a shard only when every planned item is on disk."""

from __future__ import annotations

import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ray.data.context import ShuffleStrategy

from visplay.data.schemas import SCORED_SCHEMA
from visplay.generation.dedup import dedup_and_cap, question_hash
from visplay.generation.finalize import ORDER, corpus_dedup
from visplay.generation.shards import ShardLedger, write_part


def _random_rows(n: int, seed: int) -> list[dict]:
    """Scored rows with many repeats: 5 question texts (with case/punctuation variants), 6 images, rewards
    from 3 values (ties for the cap), a third not kept. In (item, sample_index) order."""
    rng = random.Random(seed)
    texts = ["How many?", "how many", "What colour?", "Which bar?", "Is it red?", "What shape is it"]
    rows = []
    for i in range(n):
        item, sample = divmod(i, 3)
        question = rng.choice(texts)
        keep = rng.random() < 0.67
        row = dict.fromkeys(SCORED_SCHEMA.names)
        row |= {
            "question_id": f"q{i}", "image_id": f"img{rng.randrange(6)}", "source": "s", "item": item,
            "shard": 0, "sample_index": sample, "parse_ok": True, "question": question,
            "question_key": question_hash(question), "reward": rng.choice([0.0, 0.5, 1.0]), "keep": keep,
            "drop_reason": "" if keep else "too_easy", "answers": [], "extracted": [],
        }  # fmt: skip
        rows.append(row)
    return rows


@pytest.mark.slow
@pytest.mark.parametrize("scope", ["corpus", "image"])
def test_distributed_dedup_and_cap_equal_the_in_memory_rule(ray_local, scope):
    rows = _random_rows(300, seed=1 if scope == "corpus" else 2)
    expected = dedup_and_cap(rows, max_per_image=2, scope=scope)
    table = pa.Table.from_pylist(rows, schema=SCORED_SCHEMA)
    blocks = [table.slice(i, 37) for i in range(0, table.num_rows, 37)]  # several blocks, as parts are
    context = ray_local.data.DataContext.get_current()
    saved = context.shuffle_strategy
    context.shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED  # as finalize() runs it
    try:
        out = corpus_dedup(ray_local.data.from_arrow(blocks), max_per_image=2, scope=scope).sort(ORDER)
        got = [(r["question_id"], r["drop_reason"], r["keep"]) for r in out.take_all()]
    finally:
        context.shuffle_strategy = saved
    assert got == [(r["question_id"], reason, reason == "") for r, reason in zip(rows, expected, strict=True)]
    assert {"duplicate", "per_image_cap"} <= set(expected)  # both rules really fired


def test_ledger_marks_a_shard_only_when_every_item_is_in_a_part(tmp_path):
    ledger = ShardLedger(tmp_path, {0: 3, 1: 2}, fingerprint="f")
    rejects = pa.table({"source": ["a"], "item": pa.array([0], pa.int64()), "shard": pa.array([0], pa.int32()),
                        "reason": ["empty"], "detail": ["zero bytes"]})  # fmt: skip
    write_part(rejects, tmp_path, "rejects", 0)

    def scored(item: int, ids: str, item_rows: int) -> pa.Table:
        rows = [{"item": item, "shard": 0, "question_id": q, "item_rows": item_rows} for q in ids]
        return pa.Table.from_pylist(
            [dict.fromkeys(SCORED_SCHEMA.names) | r for r in rows], schema=SCORED_SCHEMA
        )

    path = write_part(scored(1, "x", 1), tmp_path, "scored", 0)
    assert ledger.try_finish(0) is None  # item 2 is missing
    assert write_part(scored(1, "x", 1), tmp_path, "scored", 0) == path  # the same rows again: the same file
    write_part(scored(2, "y", 2), tmp_path, "scored", 0)  # item 2's first question row, in a part of its own
    assert ledger.try_finish(0) is None  # its second row (another block, another part) is not on disk yet
    write_part(scored(2, "z", 2), tmp_path, "scored", 0)
    marker = ledger.try_finish(0)
    assert marker is not None and marker["items"] == 3
    assert marker["counts"]["scored"] == 3 and marker["counts"]["scored_items"] == 2
    assert all(not f.startswith("/") for files in marker["files"].values() for f in files)  # relative
    assert ledger.finished() == {0: marker}
    assert len(pq.read_table(tmp_path / marker["files"]["scored"][0])) in (1, 2)
    ledger.clear(1)  # nothing there: clearing is harmless
    with pytest.raises(RuntimeError, match="other settings"):
        ShardLedger(tmp_path, {0: 3}, fingerprint="g").marker(0)


@pytest.mark.slow
def test_questioner_images_are_a_bounded_streaming_read(ray_local, unlabeled_corpus, tmp_path):
    """640 offered items in 20 read blocks of 32; asking for 4 images runs the first read task(s) only."""
    import re
    import shutil

    from visplay.config import CorpusConfig
    from visplay.train.tasks import QuestionerTask

    pictures = sorted(unlabeled_corpus.rglob("*.png"))
    for i in range(640):  # every other item is not an image (a reject), in sorted order
        target = tmp_path / f"f{i:04d}.png"
        if i % 2 == 0:
            shutil.copy(pictures[i % len(pictures)], target)
        else:
            target.write_bytes(b"junk")
    corpus = CorpusConfig(path=str(tmp_path))
    ds = QuestionerTask.first_images(corpus, 4)
    images = [row["image"] for row in ds.take_all()]
    assert images == [pictures[i % len(pictures)].read_bytes() for i in (0, 2, 4, 6)]  # the first 4, in order
    decode = re.search(r"MapBatches\(DecodeImages\)\S*: (\d+) tasks executed", ds.stats())
    assert decode is not None and int(decode.group(1)) <= 3, ds.stats()  # of 20 blocks
