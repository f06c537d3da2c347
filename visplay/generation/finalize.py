"""Step 2 of a generation pass: the corpus-wide decisions over the finished shards, and the final tables.

Runs as Ray Data over the part files of step 1 (no row passes through the driver):

    scored parts ─▶ keep? ─yes─▶ groupby(question_key): first (item, sample) wins, others ``duplicate``
                        │      ─▶ groupby(image_id): the cap ranks by reward, then order ─▶ ``per_image_cap``
                        └─no──────────────────────────────────────────────────────────────────┐
                                                          union, sort by (item, sample_index) ◀┘
                                                          ─▶ VerdictSink: questions/ (kept), dropped/

Shuffles run as Ray tasks (sort-based, pull), not the hash shuffle's aggregator actors: on the embedded
default those actors cost about 20 s to start per groupby, the tasks a few seconds. ``questions/`` and
``dropped/`` are sorted by (item, sample_index); ``rejects/`` and ``duplicates/`` are in no set order.
Same semantics as :func:`visplay.generation.dedup.dedup_and_cap` over the rows in (item, sample_index)
order (tested equal). The final rows are written in one streaming write (nothing is materialized past the
shuffles); the counts of ``summary.json`` are the write tasks' partial counts, summed on the driver (one
small dict per task). Step 2 rewrites its four folders from scratch, so a step killed midway and run again
leaves no file of the first attempt behind.
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray
from ray.data import SaveMode
from ray.data.block import BlockAccessor
from ray.data.context import ShuffleStrategy
from ray.data.datasource import Datasink, WriteResult

from visplay.data.schemas import DUPLICATES_SCHEMA, REJECTS_SCHEMA, SCORED_SCHEMA
from visplay.generation.shards import TABLES, write_durably

ORDER = ["item", "sample_index"]
"""The stable order key of question rows: the plan's item, then the questioner sample."""


def corpus_dedup(scored: ray.data.Dataset, max_per_image: int, scope: str) -> ray.data.Dataset:
    """Scored rows -> the same rows with ``duplicate`` / ``per_image_cap`` drops decided corpus-wide."""
    if scope not in ("corpus", "image"):
        raise ValueError(f"dedup scope must be 'corpus' or 'image', got {scope!r}")
    kept = scored.map_batches(_kept, batch_format="pyarrow", fn_kwargs={"keep": True})
    rest = scored.map_batches(_kept, batch_format="pyarrow", fn_kwargs={"keep": False})
    # Keys are columns written in step 1: Ray Data passes an empty block through map_batches without calling
    # the function, so a key column added here would be missing from empty blocks at the shuffle.
    key = ["question_key"] if scope == "corpus" else ["image_id", "question_key"]
    deduped = kept.groupby(key).map_groups(_first_wins, batch_format="pyarrow")
    capped = deduped.groupby("image_id").map_groups(
        _cap, batch_format="pyarrow", fn_kwargs={"max_per_image": max_per_image}
    )
    return capped.union(rest)


def write_table(ds: ray.data.Dataset, folder: Path, schema: pa.Schema) -> str:
    """Write ``ds`` as a parquet dataset folder with Ray Data, replacing what the folder held. Returns the
    folder name."""
    ds.write_parquet(str(folder), mode=SaveMode.OVERWRITE)
    _ensure_schema_file(folder, schema)
    return folder.name


def _ensure_schema_file(folder: Path, schema: pa.Schema) -> None:
    """An empty table folder gets one empty file with the schema, so every reader finds the columns."""
    if not any(folder.glob("*.parquet")):
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(schema.empty_table(), folder / "empty.parquet")


class VerdictSink(Datasink):
    """Ray Data sink of the final question rows: each write task puts its kept rows in one part file of
    ``questions/`` and the rest in one of ``dropped/``, and returns the partial counts of its rows.

    Ray Data's own writers write a dataset to one folder; the two tables come from one sorted dataset,
    which written twice would run its shuffles twice, or be held whole in the object store in between.
    Part files are named by write task (``part-000007.parquet``: task order is the sorted order) and land
    whole (:func:`~visplay.generation.shards.write_durably`). ``counts`` holds the summed counts after the write.
    """

    def __init__(self, out_dir: Path) -> None:
        self.folders = {True: out_dir / "questions", False: out_dir / "dropped"}
        self.counts: Counter = Counter()

    def on_write_start(self, schema: pa.Schema | None = None) -> None:
        for folder in self.folders.values():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)

    def write(self, blocks: Iterable, ctx) -> dict:
        tables = [BlockAccessor.for_block(b).to_arrow() for b in blocks]
        tables = [t.cast(SCORED_SCHEMA) for t in tables if t.num_rows]  # an empty block may lack columns
        table = pa.concat_tables(tables) if tables else SCORED_SCHEMA.empty_table()
        for keep, folder in self.folders.items():
            rows = _kept(table, keep)
            if rows.num_rows:
                write_durably(rows, folder / f"part-{ctx.task_idx:06d}.parquet")
        return dict(partial_counts(table))

    def on_write_complete(self, write_result: WriteResult) -> None:
        for counts in write_result.write_returns:
            self.counts.update(counts)
        for folder in self.folders.values():
            _ensure_schema_file(folder, SCORED_SCHEMA)


def read_parts(out_dir: Path, paths: list[str], schema: pa.Schema) -> ray.data.Dataset:
    """The part files of step 1 as one dataset (an empty dataset with ``schema`` when there are none)."""
    if not paths:
        return ray.data.from_arrow(schema.empty_table())
    # Ray 2.60's default parquet reader (datasource v2: list files, then read) took 20-25 s of fixed cost
    # per read on the embedded default, two files or two hundred; the v1 reader takes about 0.4 s. The
    # choice is made when the read is planned, so it is set only around this call.
    context = ray.data.DataContext.get_current()
    saved, context.use_datasource_v2 = context.use_datasource_v2, False
    try:
        return ray.data.read_parquet([str(out_dir / p) for p in paths], schema=schema)
    finally:
        context.use_datasource_v2 = saved


def finalize(out_dir: Path, markers: dict[int, dict], max_per_image: int, scope: str) -> dict:
    """Dedup and cap over every finished shard, write ``questions/``, ``dropped/``, ``rejects/``,
    ``duplicates/``; returns the counts for the summary (all from partial counts per block)."""
    files = {kind: [f for m in markers.values() for f in m["files"][kind]] for kind in TABLES}
    context = ray.data.DataContext.get_current()
    context.shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    context.execution_options.preserve_order = True  # write tasks in sorted order (also on a resumed step 2)
    scored = read_parts(out_dir, files["scored"], SCORED_SCHEMA)
    sink = VerdictSink(out_dir)
    sink.on_write_start()  # an empty dataset may not start the write: the folders are cleared either way
    corpus_dedup(scored, max_per_image, scope).sort(ORDER).write_datasink(sink)
    tables = {
        "questions": sink.folders[True].name,
        "dropped": sink.folders[False].name,
        "rejects": write_table(
            read_parts(out_dir, files["rejects"], REJECTS_SCHEMA), out_dir / "rejects", REJECTS_SCHEMA,
        ),
        "duplicates": write_table(
            read_parts(out_dir, files["duplicates"], DUPLICATES_SCHEMA), out_dir / "duplicates",
            DUPLICATES_SCHEMA,
        ),
    }  # fmt: skip
    counts = sink.counts
    for marker in markers.values():  # rejects were counted by reason when their shard was marked
        counts.update({f"rejects_{reason}": n for reason, n in marker["rejects_by_reason"].items()})
    counts["duplicate_image"] = sum(m["counts"]["duplicates"] for m in markers.values())
    counts["images_generated"] = sum(m["counts"]["scored_items"] for m in markers.values())
    return {"tables": tables, "counts": dict(counts)}


def _kept(batch: pa.Table, keep: bool) -> pa.Table:
    """The rows whose ``keep`` equals ``keep``."""
    mask = batch["keep"] if keep else pc.invert(batch["keep"])
    return batch.filter(mask)


def _first_wins(group: pa.Table) -> pa.Table:
    """One normalised question: the first row in (item, sample_index) order keeps it, the rest ``duplicate``."""
    group = group.sort_by([(c, "ascending") for c in ORDER])
    n = group.num_rows
    return _with_verdicts(group, [True] + [False] * (n - 1), [""] + ["duplicate"] * (n - 1))


def _cap(group: pa.Table, max_per_image: int) -> pa.Table:
    """One image: its kept rows ranked by reward (higher first), then order; beyond ``max_per_image``
    ``per_image_cap``."""
    rows = group.select(["keep", "reward", *ORDER]).to_pylist()
    ranked = sorted((i for i, r in enumerate(rows) if r["keep"]),
                    key=lambda i: (-rows[i]["reward"], rows[i]["item"], rows[i]["sample_index"]))  # fmt: skip
    over = set(ranked[max_per_image:])
    if not over:
        return group
    keep = [r["keep"] and i not in over for i, r in enumerate(rows)]
    reasons = [("per_image_cap" if i in over else r) for i, r in enumerate(group["drop_reason"].to_pylist())]
    return _with_verdicts(group, keep, reasons)


def _with_verdicts(group: pa.Table, keep: list[bool], reasons: list[str]) -> pa.Table:
    """``group`` with its ``keep`` and ``drop_reason`` columns replaced."""
    group = group.set_column(group.schema.get_field_index("keep"), "keep", pa.array(keep, pa.bool_()))
    index = group.schema.get_field_index("drop_reason")
    return group.set_column(index, "drop_reason", pa.array(reasons, pa.string()))


def partial_counts(batch: pa.Table) -> Counter:
    """The summary's counts over some final question rows (summed over write tasks on the driver)."""
    keep = batch["keep"].to_pylist()
    parsed = batch["parse_ok"].to_pylist()
    counts: Counter = Counter(questions=len(keep), kept=sum(keep), parsed=sum(parsed))
    counts.update(f"drops_{r}" for r, k in zip(batch["drop_reason"].to_pylist(), keep, strict=True) if not k)
    counts.update(
        f"p_hist_{min(int(p * 10), 9)}" for p, ok in zip(batch["p"].to_pylist(), parsed, strict=True) if ok
    )
    for column in ("questioner_tokens", "reasoner_tokens", "grade_timeouts"):
        counts[column] = int(pc.sum(batch[column]).as_py() or 0)
    for column in ("questioner_seconds", "reasoner_seconds"):
        counts[column] = float(pc.sum(batch[column]).as_py() or 0.0)
    return counts
