"""The pieces that make a generation pass resumable by shard: part files written by the workers, a ledger
of finished shards, and the claims that generate each image content once.

Layout under a pass directory (every path that a marker records is relative to it)::

    plan.parquet, plan.json          the saved CorpusPlan and the settings fingerprint it was made with
    parts/scored/shard_000012/part-<key>.parquet       scored, pre-dedup question rows of shard 12
    parts/rejects/shard_000012/part-<key>.parquet      unusable items of shard 12
    parts/duplicates/shard_000012/part-<key>.parquet   copies of images another item generated
    shards/shard_000012.json         the marker: written only once every item of shard 12 is in a part file

A part file is written by the Ray Data task that holds the rows (never by the driver) to a hidden
temporary name, fsynced and renamed, so a reader sees whole files or none. Its name is a hash of the rows'
keys: a task that Ray retries rewrites the same file instead of adding a second copy. A shard is finished
when the items found in its part files are exactly its planned items, a scored item counting once all its
question rows (``item_rows``) are on disk; its marker lists those files.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray

from visplay.data.images import add_reason_counts, images_of, rejects_of
from visplay.data.schemas import DUPLICATES_SCHEMA, REJECT_REASONS

TABLES = ("scored", "rejects", "duplicates")
"""The part tables of step 1, each a folder of per-shard part files."""


def shard_name(shard: int) -> str:
    """``shard_000012``: the folder and marker name of a shard."""
    return f"shard_{shard:06d}"


def write_part(table: pa.Table, out_dir: str | Path, kind: str, shard: int) -> str:
    """Write ``table`` (rows of one shard) durably as one part file; returns its path relative to ``out_dir``.

    The name is a hash of the rows' keys (``item``, and ``question_id`` where present), so writing the same
    rows again replaces the file.
    """
    keys = [str(i) for i in table["item"].to_pylist()]
    if "question_id" in table.column_names:
        keys = [f"{k}/{q}" for k, q in zip(keys, table["question_id"].to_pylist(), strict=True)]
    name = "part-" + hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:20] + ".parquet"
    relative = Path("parts") / kind / shard_name(shard) / name
    write_durably(table, Path(out_dir) / relative)
    return relative.as_posix()


def write_durably(table: pa.Table, path: Path) -> None:
    """Write ``table`` to ``path`` whole or not at all: a hidden temporary name, fsync, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_by_shard(table: pa.Table, out_dir: str | Path, kind: str) -> list[tuple[int, str]]:
    """Split ``table`` by its ``shard`` column and write one part file per shard: ``[(shard, path), ...]``."""
    out = []
    for shard in sorted(set(table["shard"].to_pylist())):
        rows = table.filter(pc.equal(table["shard"], shard))
        out.append((shard, write_part(rows, out_dir, kind, shard)))
    return out


class ImageClaims:
    """Ray actor: the first item to offer an image content (``image_id``) owns it; later copies are duplicates.

    One actor per pass; it holds one entry per distinct image of the pass (about 100 bytes each: 100 MB at
    1M images, in the actor, not the driver). Seeded from the finished shards' scored parts, so a resumed
    pass does not generate again what a finished shard generated. Claims are idempotent: the owner asking
    again (a retried task) is told it owns the image.
    """

    def __init__(self, out_dir: str, finished_parts: list[str]) -> None:
        self.owner: dict[str, int] = {}
        for relative in finished_parts:
            table = pq.read_table(Path(out_dir) / relative, columns=["image_id", "item"])
            for image_id, item in zip(table["image_id"].to_pylist(), table["item"].to_pylist(), strict=True):
                self.owner[image_id] = min(item, self.owner.get(image_id, item))

    def claim(self, image_ids: list[str], items: list[int]) -> list[int]:
        """The owning item of each image (the caller's own item when it is the first to offer it)."""
        return [self.owner.setdefault(i, item) for i, item in zip(image_ids, items, strict=True)]


RemoteImageClaims = ray.remote(num_cpus=0)(ImageClaims)


class SplitDecoded:
    """Ray Data stage: decoded rows -> image rows to generate; rejects and duplicate copies written as parts.

    Input: ``visplay.data.images`` decoded rows (``ok``, the images columns, ``reason``/``detail``).
    Output: the images rows (IMAGES_SCHEMA) of contents this pass has not generated yet.
    """

    columns = ("ok", "image_id", "item", "shard", "source", "reason")

    def __init__(self, out_dir: str, claims: ray.actor.ActorHandle) -> None:
        self.out_dir = out_dir
        self.claims = claims

    def __call__(self, batch: pa.Table) -> pa.Table:
        missing = [c for c in self.columns if c not in batch.column_names]
        if missing:
            raise ValueError(f"SplitDecoded needs columns {self.columns}; missing {missing}")
        rejects = rejects_of(batch)
        if rejects.num_rows:
            write_by_shard(rejects, self.out_dir, "rejects")
        images = images_of(batch)
        if not images.num_rows:
            return images
        owners = pa.array(
            ray.get(self.claims.claim.remote(images["image_id"].to_pylist(), images["item"].to_pylist())),
            pa.int64(),
        )
        copy = pc.not_equal(owners, images["item"])
        if pc.any(copy).as_py():
            duplicates = pa.table(
                {
                    "image_id": images["image_id"].filter(copy),
                    "source": images["source"].filter(copy),
                    "item": images["item"].filter(copy),
                    "shard": images["shard"].filter(copy),
                    "owner_item": owners.filter(copy),
                },
                schema=DUPLICATES_SCHEMA,
            )
            write_by_shard(duplicates, self.out_dir, "duplicates")
        return images.filter(pc.invert(copy))


class WriteScored:
    """Ray Data stage, the last of step 1: scored rows -> per-shard part files; returns one small row per
    part written (``shard``, ``path``), the only thing of the pass that reaches the driver."""

    columns = ("shard", "item", "question_id")

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir

    def __call__(self, batch: pa.Table) -> pa.Table:
        missing = [c for c in self.columns if c not in batch.column_names]
        if missing:
            raise ValueError(f"WriteScored needs columns {self.columns}; missing {missing}")
        written = write_by_shard(batch, self.out_dir, "scored") if batch.num_rows else []
        return pa.table(
            {
                "shard": pa.array([s for s, _ in written], pa.int32()),
                "path": pa.array([p for _, p in written], pa.string()),
            }
        )


class ShardLedger:
    """Which shards of a pass are finished, judged from the part files on disk; writes their markers.

    Held by the driver; a check reads only the ``item`` column of one shard's parts (and ``reason`` of its
    rejects: a few KB per shard), so its cost does not grow with the corpus. The marker records the counts
    the summary needs, so step 2 never reads the rejects again.
    """

    def __init__(self, out_dir: str | Path, sizes: dict[int, int], fingerprint: str) -> None:
        self.out_dir = Path(out_dir)
        self.sizes = sizes
        self.fingerprint = fingerprint
        (self.out_dir / "shards").mkdir(parents=True, exist_ok=True)

    def marker(self, shard: int) -> dict | None:
        """The shard's marker, or None when it is not finished (a marker of other settings is an error)."""
        path = self.out_dir / "shards" / f"{shard_name(shard)}.json"
        if not path.is_file():
            return None
        marker = json.loads(path.read_text())
        if marker["fingerprint"] != self.fingerprint:
            raise RuntimeError(f"{path} was written with other settings than this pass's plan.json")
        return marker

    def finished(self) -> dict[int, dict]:
        """Markers of the finished shards, by shard."""
        return {s: m for s in self.sizes if (m := self.marker(s)) is not None}

    def clear(self, shard: int) -> None:
        """Remove what an interrupted run left of an unfinished shard (its part files)."""
        for kind in TABLES:
            shutil.rmtree(self.out_dir / "parts" / kind / shard_name(shard), ignore_errors=True)

    def try_finish(self, shard: int) -> dict | None:
        """Write the shard's marker if every planned item is in its part files; returns the marker or None."""
        if (done := self.marker(shard)) is not None:
            return done
        files: dict[str, list[str]] = {}
        items: set[int] = set()
        counts: dict[str, int] = {}
        by_reason = dict.fromkeys(REJECT_REASONS, 0)
        for kind in TABLES:
            folder = self.out_dir / "parts" / kind / shard_name(shard)
            paths = sorted(folder.glob("part-*.parquet")) if folder.is_dir() else []
            files[kind] = [p.relative_to(self.out_dir).as_posix() for p in paths]
            columns = {"rejects": ["item", "reason"], "scored": ["item", "item_rows"]}.get(kind, ["item"])
            tables = [pq.read_table(p, columns=columns) for p in paths]
            found = {i for t in tables for i in t["item"].to_pylist()}
            if kind == "scored":  # an item's question rows can span parts: found once all of them are on disk
                rows = Counter(i for t in tables for i in t["item"].to_pylist())
                want = {
                    i: n
                    for t in tables
                    for i, n in zip(t["item"].to_pylist(), t["item_rows"].to_pylist(), strict=True)
                }
                found = {i for i in found if rows[i] == want[i]}
            counts[kind] = sum(t.num_rows for t in tables)
            counts[f"{kind}_items"] = len(found)
            items |= found
            if kind == "rejects":
                for t in tables:
                    add_reason_counts(by_reason, t["reason"])
        if len(items) != self.sizes[shard]:
            return None
        marker = {"shard": shard, "fingerprint": self.fingerprint, "items": len(items), "files": files,
                  "counts": counts, "rejects_by_reason": {r: n for r, n in by_reason.items() if n}}  # fmt: skip
        path = self.out_dir / "shards" / f"{shard_name(shard)}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(marker, indent=1))
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        return marker


class ShardWatcher(threading.Thread):
    """Marks shards finished while the pass streams: a driver thread that asks the ledger every
    ``interval`` seconds about the unfinished shards, in plan order.

    Part files are on disk as soon as a worker writes them, while the rows Ray Data hands the driver come
    in plan order and wait for the slowest earlier block, so the disk is the earlier signal. One poll stops
    after ``frontier`` shards that are not complete yet (the shards in flight; later ones have not
    started), so its cost stays a few shard checks however large the pass. ``on_first`` is called once,
    from this thread, right after the first marker.
    """

    def __init__(
        self, ledger: ShardLedger, shards: list[int], on_first, interval: float = 1.0, frontier: int = 2
    ) -> None:
        super().__init__(name="shard-watcher", daemon=True)
        self.ledger, self.waiting, self.on_first = ledger, list(shards), on_first
        self.interval, self.frontier = interval, frontier
        self.marked = 0
        self._stop_event = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self._stop_event.wait(self.interval):
                self.poll()
        except BaseException as err:  # reported by stop(), on the driver's thread
            self.error = err

    def poll(self) -> None:
        """Mark every waiting shard that is complete on disk, up to ``frontier`` incomplete ones."""
        incomplete = 0
        for shard in list(self.waiting):
            if self.ledger.try_finish(shard) is None:
                incomplete += 1
                if incomplete >= self.frontier:
                    return
                continue
            self.waiting.remove(shard)
            self.marked += 1
            if self.marked == 1:
                self.on_first()

    def stop(self, raise_error: bool = True) -> list[int]:
        """Stop polling (after a poll in progress, and a hold in ``on_first``); the shards still waiting."""
        self._stop_event.set()
        self.join()
        if self.error is not None and raise_error:
            raise RuntimeError(
                f"marking shards of {self.ledger.out_dir} failed: {self.error}"
            ) from self.error
        return self.waiting
