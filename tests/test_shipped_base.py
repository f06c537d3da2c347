"""The base checkpoint shipped in the repository (models/tiny-base): its files are the ones its manifest
lists, the manifest's recipe is the embedded default's, and a changed file is refused by name."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from visplay.config import load_config
from visplay.world.embedded import ensure_base_model
from visplay.world.shipped_base import BASE_MANIFEST, recipe, verify

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "models" / "tiny-base"
TINY = REPO / "configs" / "tiny-cpu.yaml"


def test_the_shipped_files_match_the_manifest():
    assert verify(SHIPPED) == []
    manifest = json.loads((SHIPPED / BASE_MANIFEST).read_text())
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= set(manifest["files"])
    assert manifest["command"][:2] == ["python", "jobs/bootstrap.py"]
    assert manifest["losses"][-1][0] == manifest["recipe"]["bootstrap_steps"] - 1  # the curve's last step
    assert manifest["heldout"]["eval_synthetic"] >= 0 and manifest["wall_s"] > 0


def test_the_embedded_default_starts_from_the_shipped_base_built_by_its_own_recipe():
    cfg = load_config(TINY)
    assert Path(cfg.models.base).resolve() == SHIPPED
    # A changed models.tiny or bootstrap_* in the config must come with a rebuilt, reshipped base.
    assert json.loads((SHIPPED / BASE_MANIFEST).read_text())["recipe"] == recipe(cfg)


def test_a_changed_shipped_file_is_named(tmp_path):
    copy = tmp_path / "tiny-base"
    shutil.copytree(SHIPPED, copy)
    with (copy / "config.json").open("a") as f:
        f.write(" ")
    (copy / "extra.txt").write_text("x")
    (copy / "tokenizer.json").unlink()
    missing, extra, changed = verify(copy)
    assert (missing, extra) == ("tokenizer.json: missing", "extra.txt: not in the manifest")
    assert changed.startswith("config.json: sha256 ")
    cfg = load_config(TINY, [f"models.base={copy}"])
    with pytest.raises(
        ValueError, match=r"models.base .*tiny-base: the files differ from its visplay_base.json"
    ):
        ensure_base_model(cfg)
