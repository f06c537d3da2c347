"""The base checkpoint shipped in the repository (``models/tiny-base``) and its manifest.

The embedded default starts every run from one bootstrapped tiny Qwen2.5-VL instead of building and
warming one up in each job (about a minute of the main job on 2 cores). It is the checkpoint
``jobs/bootstrap.py --ship models/tiny-base`` writes: the model files as the warm-up wrote them, plus
``visplay_base.json``:

    command        the argv that built it (rerun it to rebuild; the result is a new file set and manifest)
    recipe         the config it was built from: models.tiny, bootstrap_steps/images/seed/lr, the world
    wall_s         seconds the build and warm-up took (the evaluation excluded)
    losses         the warm-up's loss curve, (step, loss) pairs (from visplay_bootstrap.json)
    heldout        held-out accuracy per metric through the evaluation harness (eval_<bench>[_skill]; greedy,
                   and sampled pass@1 / maj@k with eval.samples)
    preconditions  visplay/preconditions.py on that evaluation: per skill greedy vs image-blind, pass@1 and
                   maj@k, and whether the base sees and leaves headroom for majority-vote RL
    files          sha256 of every other file in the folder

:func:`verify` compares a folder with its manifest; a test runs it on the shipped one, and another checks
that ``configs/tiny-cpu.yaml``'s recipe is the one recorded (a changed recipe must be reshipped).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from visplay.config import Config

BASE_MANIFEST = "visplay_base.json"
"""The manifest's file name inside the shipped folder."""


def recipe(cfg: Config) -> dict[str, Any]:
    """The settings a bootstrapped base depends on: the tiny model's shape and seed, the warm-up's, and the
    world its labeled split was drawn from."""
    m = cfg.models
    return {
        "tiny": m.tiny.model_dump(mode="json"),
        "bootstrap_steps": m.bootstrap_steps,
        "bootstrap_images": m.bootstrap_images,
        "bootstrap_seed": m.bootstrap_seed,
        "bootstrap_lr": m.bootstrap_lr,
        "bootstrap_questioner_share": m.bootstrap_questioner_share,
        "synthetic_kinds": list(cfg.corpus.synthetic_kinds),
    }


def file_digests(folder: Path) -> dict[str, str]:
    """sha256 (hex) of every file directly in ``folder`` but the manifest, by name."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != BASE_MANIFEST
    }


def ship(
    src: Path,
    dest: Path,
    *,
    command: list[str],
    cfg: Config,
    wall_s: float,
    heldout: Mapping[str, float],
    preconditions: dict | None = None,
) -> Path:
    """Copy the checkpoint at ``src`` to ``dest`` (replacing it) and write its manifest; returns it."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(src, dest)
    warm = json.loads((src / "visplay_bootstrap.json").read_text())
    manifest = {
        "format": "visplay-base/1",
        "command": command,
        "recipe": recipe(cfg),
        "wall_s": round(wall_s, 1),
        "losses": warm["losses"],
        "heldout": dict(sorted(heldout.items())),
        "preconditions": preconditions,
        "files": file_digests(dest),
    }
    path = dest / BASE_MANIFEST
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def verify(folder: Path) -> list[str]:
    """What differs between ``folder`` and its manifest (missing, extra or changed files); [] when none.

    Raises:
        FileNotFoundError: the folder has no manifest.
    """
    manifest = json.loads((folder / BASE_MANIFEST).read_text())
    recorded, actual = manifest["files"], file_digests(folder)
    problems = [f"{name}: missing" for name in sorted(set(recorded) - set(actual))]
    problems += [f"{name}: not in the manifest" for name in sorted(set(actual) - set(recorded))]
    problems += [
        f"{name}: sha256 {actual[name][:12]}, the manifest says {digest[:12]}"
        for name, digest in sorted(recorded.items())
        if name in actual and actual[name] != digest
    ]
    return problems
