"""Checkpoints as the project names them: a model directory with its content id, and the id itself.

A checkpoint's version is the sha256 of its weights, so everything generated or trained records exactly
which weights produced it, wherever the directory lives.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

MANIFEST = "visplay_model.json"
"""Written beside a checkpoint built or trained here: its content id and weight file sizes."""


@dataclass(frozen=True)
class Checkpoint:
    """A model directory and the version id recorded with everything it generates.

    ``engines``: running rollout actors that hold exactly these weights. When given, the pipeline's engine
    stage forwards to them (:class:`~visplay.engine.stage.RolloutEngineStage`) instead of starting its own
    autoscaling pool of engines: the embedded default reuses its warm engines, a cluster leaves it empty.
    """

    path: str
    version: str
    engines: tuple = ()


def weight_files(path: Path) -> list[Path]:
    """The ``*.safetensors`` files of a checkpoint directory, sorted by name (none is an error)."""
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors weights in {path}")
    return files


def weights_sha256(path: str | Path) -> str:
    """sha256 over every ``*.safetensors`` file of a checkpoint directory (names and bytes, sorted by name)."""
    digest = hashlib.sha256()
    for file in weight_files(Path(path)):
        digest.update(file.name.encode() + b"\0")
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def model_version(path: str | Path) -> str:
    """Content id of a checkpoint directory: the sha256 of its weights (hex).

    For a directory built here it is read from ``visplay_model.json`` (checked against the weight files'
    sizes); for any other checkpoint the weights are hashed, which reads every byte once.
    """
    path = Path(path)
    manifest = path / MANIFEST
    if manifest.is_file():
        info = json.loads(manifest.read_text())
        sizes = {file.name: file.stat().st_size for file in weight_files(path)}
        if sizes == info.get("weight_file_sizes"):
            return info["content_id"]
    return weights_sha256(path)
