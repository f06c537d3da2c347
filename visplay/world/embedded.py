"""The embedded default's inputs: build the tiny model and the synthetic corpus when a config asks for them.

A cluster config names real checkpoints and a real image folder; then nothing here builds anything,
and a missing path is an error that names it.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from visplay.checkpoints import model_version
from visplay.config import Config
from visplay.world.bootstrap import warm_up
from visplay.world.corpus import GROUND_TRUTH_FILENAME, check_world, make_corpus
from visplay.world.shipped_base import BASE_MANIFEST, verify
from visplay.world.tiny_model import build_tiny_model

log = logging.getLogger(__name__)


def ensure_base_model(cfg: Config) -> tuple[str, str]:
    """(checkpoint path, model version) of the base model, building the tiny one if allowed and missing."""
    path = Path(cfg.models.base)
    if (path / BASE_MANIFEST).is_file() and (problems := verify(path)):  # the shipped base, changed
        raise ValueError(
            f"models.base {path}: the files differ from its {BASE_MANIFEST}: {'; '.join(problems)}"
        )
    if (path / "config.json").is_file():
        return str(path), model_version(path)
    if not cfg.models.build_tiny_if_missing:
        raise FileNotFoundError(f"models.base: no HF checkpoint at {path} (config.json missing)")
    m = cfg.models
    if m.bootstrap_steps == 0:
        log.info("building the offline tiny Qwen2.5-VL at %s (seed %d)", path, m.tiny.seed)
        build_tiny_model(path, m.tiny)
        return str(path), model_version(path)
    random_dir = path.with_name(path.name + "-random")
    labeled = path.with_name(path.name + "-labeled-split")
    log.info(
        "building the tiny Qwen2.5-VL at %s and warming it up on %d labeled images",
        random_dir,
        m.bootstrap_images,
    )
    build_tiny_model(random_dir, m.tiny)
    if not (labeled / GROUND_TRUTH_FILENAME).is_file():
        shutil.rmtree(labeled, ignore_errors=True)  # an interrupted split is regenerated whole
        make_corpus(
            labeled, m.bootstrap_images, m.bootstrap_seed, split="bootstrap", kinds=cfg.corpus.synthetic_kinds
        )
    check_world(
        labeled / GROUND_TRUTH_FILENAME, cfg.corpus.synthetic_kinds, "models.base (its labeled split)"
    )
    warm_up(
        random_dir, labeled, path, steps=m.bootstrap_steps, lr=m.bootstrap_lr, seed=m.bootstrap_seed,
        questioner_share=m.bootstrap_questioner_share,
    )  # fmt: skip
    return str(path), model_version(path)


def ensure_corpus(cfg: Config) -> Path:
    """The corpus path, generating `corpus.synthetic_n` synthetic scenes of `corpus.synthetic_kinds` there if
    it is missing (a synthetic corpus found there must be of those kinds)."""
    path = Path(cfg.corpus.path)
    truth = path.parent / GROUND_TRUTH_FILENAME
    if path.exists():
        if path.name == "images" and truth.is_file():  # a synthetic corpus: of this config's world?
            check_world(truth, cfg.corpus.synthetic_kinds, "corpus.path")
        return path
    if cfg.corpus.synthetic_n == 0:
        raise FileNotFoundError(f"corpus.path: {path} does not exist (and corpus.synthetic_n is 0)")
    root = path.parent if path.name == "images" else path
    log.info(
        "generating %d synthetic scenes under %s (seed %d)",
        cfg.corpus.synthetic_n,
        root,
        cfg.corpus.synthetic_seed,
    )
    make_corpus(root, cfg.corpus.synthetic_n, cfg.corpus.synthetic_seed, kinds=cfg.corpus.synthetic_kinds)
    return path
