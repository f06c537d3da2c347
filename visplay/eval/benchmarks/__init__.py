"""The benchmarks evaluation reads, one class each (:class:`~visplay.eval.benchmarks.base.Benchmark`), and
:func:`load_benchmark`, which reads a release as users download it.

    loaded = load_benchmark("mmmu", "MMMU/", split="validation")   # the repo root of subject folders
    loaded.examples, loaded.rejects

A file with the Vision-SR1 export's columns (``problem``, ``answer``, ``images``) is read with
:class:`~visplay.eval.benchmarks.vision_sr1.VisionSR1` for any benchmark that has such an export.
"""

from __future__ import annotations

from pathlib import Path

from visplay.eval.benchmarks.base import Benchmark, Loaded, read_benchmark
from visplay.eval.benchmarks.hallusionbench import HallusionBench
from visplay.eval.benchmarks.mathverse import MathVerse
from visplay.eval.benchmarks.mathvision import MathVision
from visplay.eval.benchmarks.mathvista import MathVista
from visplay.eval.benchmarks.mmmu import MMMU
from visplay.eval.benchmarks.mmvet import MMVet
from visplay.eval.benchmarks.simple import MMStar, RealWorldQA
from visplay.eval.benchmarks.synthetic import Synthetic
from visplay.eval.benchmarks.vision_sr1 import VisionSR1, is_export
from visplay.eval.benchmarks.visnumbench import VisNumBench

__all__ = ["BENCHMARKS", "Benchmark", "Loaded", "load_benchmark"]

BENCHMARKS: dict[str, Benchmark] = {
    bench.name: bench
    for bench in (
        MMVet(),
        MMMU(),
        RealWorldQA(),
        VisNumBench(),
        MathVerse(),
        MathVision(),
        HallusionBench(),
        MathVista(),
        MMStar(),
        Synthetic(),
    )
}
"""Benchmark name → its class's instance."""


def load_benchmark(name: str, path: str | Path, limit: int | None = None, split: str | None = None) -> Loaded:
    """Read the first ``limit`` examples (all if None) of benchmark ``name`` from a local release.

    Args:
        name: one of :data:`BENCHMARKS`.
        path: a file or folder in one of the layouts the benchmark's class lists.
        limit: at most this many examples (>= 1), in file order; reading stops there.
        split: the split to read where a release holds several side by side (MMMU).

    Returns:
        The examples (file order, ids unique) and the rows that cannot be evaluated, with their reasons.

    Raises:
        ValueError: an unknown benchmark name (the message lists the known ones) or a bad ``limit``.
        BenchmarkFormatError: the release cannot be read at all (no such file, a missing column, no usable
            row): the message names the file and what is wrong.
    """
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; known benchmarks: {sorted(BENCHMARKS)}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 or None, got {limit}")
    bench = BENCHMARKS[name]
    table = bench.open(Path(path), split)
    reader = VisionSR1(bench) if bench.export_names and is_export(table) else bench
    return read_benchmark(bench, reader, Path(path), table, limit)
