"""Phase records: a rerun with changed settings stops exactly the phases that read them (and those after),
names the fields before any work, or redoes them on request; a moved run directory resumes and serves."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from visplay import loop
from visplay.checkpoints import Checkpoint
from visplay.config import load_config, with_absolute_paths
from visplay.phases import ChangedSettings, Phase

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "tiny-cpu.yaml"


def _cfg(out_dir: Path, *overrides: str):
    """The config as a job holds it (paths made absolute)."""
    return with_absolute_paths(
        load_config(CONFIG, [f"out_dir={out_dir}", "corpus.path=/data/corpus", *overrides])
    )


def _finish_iteration_one(cfg) -> None:
    """Record iteration 0's evaluation and iteration 1's four phases as finished with ``cfg``'s settings."""
    for phase in loop.run_phases(cfg):
        phase.begin(loop.phase_settings(cfg, phase.name), {"policy": "v0"})
        phase.complete({"version": "v1"})


def test_a_changed_field_stops_the_phase_that_reads_it_and_not_the_others(tmp_path):
    cfg = _cfg(tmp_path)
    _finish_iteration_one(cfg)
    assert loop.check_phases(cfg) == []  # the same settings: everything is reused

    # Fields no phase reads (serving, engine batch sizes, Ray): nothing stops.
    same = _cfg(
        tmp_path, "serve.max_tokens=32", "generation.questioner_engine.batch_size=8", "ray.num_cpus=2",
        "questioner_grpo.save_every=3", "reasoner_grpo.weight_sync=broadcast",
    )  # fmt: skip
    assert loop.check_phases(same) == []

    # p_low is read by generate only: iter_1/generate is the first phase that stops, named with the field.
    changed = _cfg(tmp_path, "generation.p_low=0.4")
    with pytest.raises(ChangedSettings, match=r"iter_1/generate .*generation\.p_low: 0\.3 -> 0\.4") as err:
        loop.check_phases(changed)
    assert err.value.phase.label == "iter_1/generate"
    assert err.value.changes == {"generation.p_low": (0.3, 0.4)}

    # The questioner's learning rate is read by train_questioner only, the first phase of iteration 1.
    with pytest.raises(ChangedSettings) as err:
        loop.check_phases(_cfg(tmp_path, "questioner_grpo.lr=0.001"))
    assert err.value.phase.label == "iter_1/train_questioner"
    assert err.value.changes == {"questioner_grpo.lr": (1.0e-4, 0.001)}

    # eval.max_tokens: the base model's evaluation (iteration 0) is the first phase that reads it.
    with pytest.raises(ChangedSettings) as err:
        loop.check_phases(_cfg(tmp_path, "eval.max_tokens=32"))
    assert err.value.phase.label == "iter_0/evaluate"

    # --rerun-changed: generate and every phase after it are removed; the phases before it stay finished.
    redo = loop.check_phases(changed, rerun_changed=True)
    assert [p.label for p in redo] == ["iter_1/generate", "iter_1/train_reasoner", "iter_1/evaluate"]
    assert [p.label for p in loop.run_phases(cfg) if p.done() is not None] == [
        "iter_0/evaluate", "iter_1/train_questioner",
    ]  # fmt: skip
    assert loop.check_phases(changed) == []


def test_a_phase_finished_on_other_inputs_is_not_reused(tmp_path):
    phase = Phase(tmp_path, 1, "generate")
    phase.begin({"seed": 0}, {"questioner": "q1", "reasoner": "r0"})
    assert phase.done({"seed": 0}, {"questioner": "q1", "reasoner": "r0"}) is None  # begun, not finished
    phase.complete({"kept": 3})
    assert phase.done({"seed": 0}, {"questioner": "q1", "reasoner": "r0"}) == {"kept": 3}
    with pytest.raises(ChangedSettings, match="input questioner: 'q1' -> 'q2'"):
        phase.done({"seed": 0}, {"questioner": "q2", "reasoner": "r0"})


def test_the_evolve_job_refuses_a_changed_rerun_before_writing_anything(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("evolve_job", ROOT / "jobs" / "evolve.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    cfg = _cfg(tmp_path)
    _finish_iteration_one(cfg)
    config_yaml = cfg.run_dir / "config.yaml"
    config_yaml.write_text("the config of the first run\n")
    argv = [
        "--config",
        str(CONFIG),
        f"out_dir={tmp_path}",
        "corpus.path=/data/corpus",
        "generation.p_high=0.9",
    ]
    with pytest.raises(ChangedSettings, match=r"generation\.p_high: 0\.8 -> 0\.9"):
        job.main(argv)
    assert config_yaml.read_text() == "the config of the first run\n"  # not overwritten


def test_a_moved_run_resumes_its_phases_and_serves_its_reasoner(tmp_path):
    from visplay.serve.app import resolve_model

    ran_at, moved_to = tmp_path / "ran", tmp_path / "moved"
    cfg = _cfg(ran_at, "iterations=1")
    phase = Phase(cfg.run_dir, 1, "train_reasoner")
    final = phase.dir / "final"
    final.mkdir(parents=True)
    (final / "config.json").write_text("{}")
    (final / "model.safetensors").write_bytes(b"weights")
    settings = loop.phase_settings(cfg, phase.name)
    phase.begin(settings, {"policy": "v0"})
    phase.complete({"checkpoint": phase.relative(final), "version": "v1", "steps": []})
    shutil.move(ran_at, moved_to)

    moved = _cfg(moved_to, "iterations=1")
    assert loop.check_phases(moved) == []  # the location is not a setting
    # A corpus kept inside out_dir (as the embedded default keeps it) moves with it: the same setting.
    inside = [
        loop.phase_settings(_cfg(d, f"corpus.path={d}/corpus"), "generate")["corpus.path"]
        for d in (ran_at, moved_to)
    ]
    assert inside == ["<out_dir>/corpus", "<out_dir>/corpus"]
    out = loop._grpo_phase(
        moved, 1, "reasoner", Checkpoint("/base", "v0"), moved.reasoner_grpo, moved.generation.reasoner_sampling,
        task=lambda: pytest.fail("a finished phase must not run"), skip="",
    )  # fmt: skip
    assert out["checkpoint"] == str(moved.run_dir / "iter_1" / "train_reasoner" / "final")
    served = resolve_model(moved)
    assert (served.checkpoint, served.iteration) == (out["checkpoint"], 1)
