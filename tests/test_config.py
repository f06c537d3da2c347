"""The config schema: every YAML in configs/ loads, overrides apply, bad values name their field."""

from pathlib import Path

import pytest
import yaml

from visplay.config import (
    Config,
    ConfigError,
    load_config,
    parse_override,
    reference_rows,
    save_config,
    with_absolute_paths,
)

CONFIGS = sorted(Path(__file__).resolve().parents[1].joinpath("configs").glob("*.yaml"))


def test_configs_folder_holds_exactly_the_documented_configs():
    """Every config is one row of README's table of which config fits which hardware (and no other)."""
    names = {p.name for p in CONFIGS}
    assert names == {"tiny-cpu.yaml", "qwen2.5-vl-7b-1node.yaml", "qwen2.5-vl-7b-gpu.yaml"}
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    cluster = readme.split("## Running on a GPU cluster", 1)[1].split("\n## ", 1)[0]
    rows = {line.split("`")[1] for line in cluster.splitlines() if line.startswith("| `configs/")}
    assert rows == {f"configs/{name}" for name in names}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_loads_and_round_trips(path, tmp_path):
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    # The resolved config written next to a run's outputs loads back to the same object.
    saved = save_config(cfg, tmp_path / "config.yaml")
    assert load_config(saved) == cfg


def test_yaml_values_override_schema_defaults():
    cfg = load_config(Path(CONFIGS[0]).parent / "tiny-cpu.yaml")
    assert cfg.corpus.synthetic_n == 32  # the YAML says 32; the schema default is 64
    assert cfg.generation.reasoner_sampling.max_tokens == 64  # YAML; schema default is 96
    assert cfg.generation.p_low == 0.3


def test_dotted_overrides_parse_yaml_scalars():
    cfg = load_config(
        None,
        [
            "generation.answers_per_question=4",
            "questioner_grpo.lr=3e-6",  # YAML 1.1 reads 3e-6 as a string; we coerce it to a float
            "ray.address=null",
            "models.tiny.seed=7",
            "name=exp one",
        ],
    )
    assert cfg.generation.answers_per_question == 4
    assert cfg.questioner_grpo.lr == pytest.approx(3e-6)
    assert cfg.ray.address is None
    assert cfg.models.tiny.seed == 7
    assert cfg.name == "exp one"
    assert parse_override("a.b=[1, 2]") == ("a.b", [1, 2])


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("generation.p_low=1.5", "generation.p_low"),  # above the [0, 1] bound
        ("generation.answers_per_question=0", "generation.answers_per_question"),
        ("questioner_grpo.kl_kind=k9", "questioner_grpo.kl_kind"),  # not one of k1/k2/k3
        ("reasoner_grpo.dual_clip=0.5", "reasoner_grpo.dual_clip"),  # dual clip needs c > 1
        (
            "generation.reasoner_engine.gpu_memory_utilization=2",
            "generation.reasoner_engine.gpu_memory_utilization",
        ),
        ("corpus.typo_field=1", "corpus.typo_field"),  # unknown keys are errors, not ignored
        ("models.tiny.num_heads=4", "models.tiny"),  # head_dim 128/4 = 32 < 64: vLLM CPU refuses it
    ],
)
def test_bad_value_error_names_the_field(override, field):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert f"  {field}:" in str(err.value)


def test_cross_field_rule_names_the_section():
    with pytest.raises(ConfigError, match=r"generation: .*p_low must be <= p_high"):
        load_config(None, ["generation.p_low=0.9", "generation.p_high=0.2"])


def test_bad_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"seed": "not-a-number"}))
    with pytest.raises(ConfigError, match=r"bad\.yaml.*\n  seed:"):
        load_config(bad)
    with pytest.raises(ConfigError, match="section.field=value"):
        load_config(None, ["no_equals_sign"])


def test_every_field_is_documented():
    rows = reference_rows()
    undocumented = [name for name, _, desc in rows if not desc]
    assert not undocumented, f"fields without a docstring: {undocumented}"
    # A section whose default differs from its class defaults reports the section's default.
    defaults = {name: default for name, default, _ in rows}
    assert defaults["generation.questioner_sampling.max_tokens"] == "96"


def test_readme_config_reference_matches_the_schema():
    """README.md embeds `visplay config-reference`; regenerate it when a field changes."""
    from visplay.config import reference_markdown

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start, end = "<!-- config-reference:start -->\n", "<!-- config-reference:end -->"
    embedded = readme.split(start, 1)[1].split(end, 1)[0].strip()
    assert embedded == reference_markdown(), (
        "README config reference is stale: run `visplay config-reference`"
    )


def test_local_paths_become_absolute_for_workers_in_other_directories(tmp_path):
    cfg = load_config(
        CONFIGS[0].parent / "tiny-cpu.yaml", ["serve.checkpoint=ckpt/final", "corpus.path=s3://bucket/images"]
    )
    out = with_absolute_paths(cfg, base=tmp_path)
    assert out.out_dir == str(tmp_path / "runs")
    assert out.models.base == str(tmp_path / "models" / "tiny-base")  # the shipped base, relative in the yaml
    assert out.models.questioner is None  # unset stays unset
    assert out.serve.checkpoint == str(tmp_path / "ckpt" / "final")
    assert out.corpus.path == "s3://bucket/images"  # URIs are left alone
    assert with_absolute_paths(out, base="/elsewhere") == out  # absolute paths do not move


@pytest.mark.parametrize(
    "override, field",
    [("questioner_grpo.lr=inf", "questioner_grpo.lr"), ("rewards.invalid_penalty=nan", "rewards.invalid_penalty"),
     ("rewards.invalid_penalty=-inf", "rewards.invalid_penalty"), ("generation.p_low=nan", "generation.p_low")],
)  # fmt: skip
def test_nan_and_inf_are_refused_everywhere(override, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_config(None, [override])


@pytest.mark.parametrize("name", ["../../x", "/abs", "a/b", "..", ".hidden", ""])
def test_a_run_name_cannot_leave_out_dir(name):
    with pytest.raises(ConfigError, match="name"):
        load_config(None, [f"name={name}"])


def test_ensure_heldout_split_deletes_nothing_it_did_not_draw(tmp_path):
    from visplay.eval.run import ensure_heldout_split

    mistyped = tmp_path / "my_photos"
    mistyped.mkdir()
    (mistyped / "holiday.jpg").write_bytes(b"precious")
    cfg = load_config(None, [f"eval.synthetic_path={mistyped}", "eval.synthetic_n=2"])
    with pytest.raises(FileExistsError, match="my_photos"):
        ensure_heldout_split(cfg)
    assert (mistyped / "holiday.jpg").read_bytes() == b"precious"
    # A new folder: drawn beside it under a hidden name, renamed into place; a second call reuses it.
    cfg = load_config(None, [f"eval.synthetic_path={tmp_path / 'heldout'}", "eval.synthetic_n=2"])
    truth = ensure_heldout_split(cfg)
    assert truth.is_file() and not (tmp_path / ".heldout.partial").exists()
    assert ensure_heldout_split(cfg) == truth


def test_jobs_that_only_read_a_run_keep_its_config(tmp_path):
    from visplay.runtime import job_config_path

    cfg = load_config(None, [f"out_dir={tmp_path}", "name=run"])
    assert job_config_path(cfg, "evolve", reads_run=False) == tmp_path / "run" / "config.yaml"
    assert job_config_path(cfg, "serve", reads_run=True) == tmp_path / "run" / "serve.config.yaml"
    assert job_config_path(cfg, "generate questions", reads_run=False).name == "config.yaml"
    jobs = Path(__file__).resolve().parents[1] / "jobs"
    for job in ("serve", "evaluate"):  # the read-only jobs say so when they start
        assert "reads_run=True" in (jobs / f"{job}.py").read_text(), job
