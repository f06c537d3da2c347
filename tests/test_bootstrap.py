"""The labeled warm-up that stands in for an instruction-tuned checkpoint.

Fast tests check the pure parts: target texts, tokenization with exact label masking, right padding.
Slow tests train: the session's ``bootstrapped_model`` (conftest: default steps on 48 labeled scenes) must
have a falling loss, a complete checkpoint directory and write parseable questions and ``\\boxed{}``
answers for held-out images; the CLI runs a short warm-up twice and gets the same weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from visplay.checkpoints import model_version
from visplay.cli import main as cli_main
from visplay.config import TinyModelConfig
from visplay.prompts import IM_END, questioner_prompt, reasoner_prompt
from visplay.rewards import extract_boxed, parse_questioner_output
from visplay.world import bootstrap
from visplay.world.bootstrap import (
    IGNORE_INDEX,
    MANIFEST,
    build_example,
    collate,
    questioner_target,
    reasoner_target,
    warm_up,
)
from visplay.world.corpus import make_corpus, read_ground_truth
from visplay.world.tiny_model import MANIFEST as TINY_MANIFEST
from visplay.world.tiny_model import build_processor, image_token_count

SPEC = TinyModelConfig()


@pytest.fixture(scope="module")
def labeled(tmp_path_factory) -> Path:
    """Six labeled scenes (two of each kind)."""
    return make_corpus(tmp_path_factory.mktemp("labeled"), n=6, seed=7, split="bootstrap").out_dir


@pytest.fixture(scope="module")
def processor():
    """The tiny model's processor, without building the weights (a small vocabulary keeps it fast)."""
    from visplay.world.tokenizer import train_tokenizer

    return build_processor(SPEC, train_tokenizer(512, SPEC.seed, SPEC.max_position_embeddings))


def first_scene(corpus: Path) -> tuple[Image.Image, dict]:
    record = read_ground_truth(corpus)[0]
    return Image.open(corpus / record["file"]).convert("RGB"), record


# ---------------------------------------------------------------- fast: targets, examples, batches


def test_targets_parse_back_to_the_ground_truth(labeled: Path) -> None:
    for record in read_ground_truth(labeled):
        for qa in record["qa"]:
            text = questioner_target(qa)
            assert text.startswith(f"<type>{qa['qtype']}</type><question>") and text.endswith(IM_END)
            parsed = parse_questioner_output(text)
            assert parsed.ok, text
            assert (parsed.qtype, parsed.question, parsed.answer) == (
                qa["qtype"],
                qa["question"],
                qa["answer"],
            )

            answer = reasoner_target(qa)
            assert answer.endswith(f"The answer is \\boxed{{{qa['answer']}}}.{IM_END}")
            assert extract_boxed(answer) == qa["answer"] and len(answer) < 100


@pytest.mark.parametrize("role", ["questioner", "reasoner"])
def test_example_unmasks_exactly_the_target_tokens(processor, labeled: Path, role: str) -> None:
    image, record = first_scene(labeled)
    qa = record["qa"][0]
    if role == "questioner":
        prompt, target = questioner_prompt(), questioner_target(qa)
    else:
        prompt, target = reasoner_prompt(qa["question"]), reasoner_target(qa)
    example = build_example(processor, image, prompt, target)

    prompt_ids = processor(text=[prompt], images=[image], return_tensors="pt")["input_ids"][0]
    target_ids = processor.tokenizer.encode(target, add_special_tokens=False)
    n = len(prompt_ids)
    assert torch.equal(example.input_ids[:n], prompt_ids)  # the prompt exactly as a generator sees it
    assert example.input_ids[n:].tolist() == target_ids
    assert (example.labels[:n] == IGNORE_INDEX).all()
    assert example.labels[n:].tolist() == target_ids  # every target token counts, nothing else
    assert processor.tokenizer.decode(example.labels[example.labels != IGNORE_INDEX]) == target

    image_pads = example.input_ids == processor.image_token_id
    assert int(image_pads.sum()) == image_token_count(SPEC) == 16
    assert torch.equal(example.mm_token_type_ids.bool(), image_pads)
    assert example.pixel_values.shape == (64, 3 * 2 * 14 * 14)
    assert example.image_grid_thw.tolist() == [1, 8, 8]


def test_collate_right_pads(processor, labeled: Path) -> None:
    image, record = first_scene(labeled)
    qa = record["qa"][0]
    long = build_example(processor, image, questioner_prompt(), questioner_target(qa))
    short = build_example(processor, image, reasoner_prompt(qa["question"]), reasoner_target(qa))
    batch = collate([short, long], pad_token_id=processor.tokenizer.pad_token_id)

    n_short, n_long = len(short.input_ids), len(long.input_ids)
    assert batch["input_ids"].shape == batch["labels"].shape == (2, n_long) and n_short < n_long
    assert batch["attention_mask"].sum(dim=1).tolist() == [n_short, n_long]
    assert (batch["input_ids"][0, n_short:] == processor.tokenizer.pad_token_id).all()
    assert (batch["labels"][0, n_short:] == IGNORE_INDEX).all()
    assert (batch["mm_token_type_ids"][0, n_short:] == 0).all()
    assert torch.equal(batch["labels"][1], long.labels)
    assert batch["pixel_values"].shape == (128, 3 * 2 * 14 * 14)
    assert batch["image_grid_thw"].tolist() == [[1, 8, 8], [1, 8, 8]]


def test_learning_rate_warms_up_then_decays() -> None:
    factors = [bootstrap._lr_factor(step, 100) for step in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[9:], factors[10:], strict=False))
    assert factors[-1] == pytest.approx(0.1, abs=0.01)


def test_bad_arguments_fail_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        warm_up(tmp_path / "base", tmp_path / "corpus", tmp_path / "out", steps=0)
    (tmp_path / "out").mkdir()
    with pytest.raises(FileExistsError):
        warm_up(tmp_path / "base", tmp_path / "corpus", tmp_path / "out", steps=1)


# ---------------------------------------------------------------- slow: training


@pytest.mark.slow
def test_warm_up_learns_the_formats(bootstrapped_model: Path, tiny_model: Path, tmp_path: Path) -> None:
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    names = {p.name for p in bootstrapped_model.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "processor_config.json", MANIFEST} <= names
    assert TINY_MANIFEST not in names  # that one names the random base's weights
    assert not [p for p in bootstrapped_model.parent.iterdir() if p.name.endswith(".tmp")]
    # Same architecture and float32 weights, so vLLM loads it like the base (save_pretrained only adds
    # an explicit "dtype" to the text and vision sub-configs).
    base, warm = (json.loads((d / "config.json").read_text()) for d in (tiny_model, bootstrapped_model))
    for sub in ("text_config", "vision_config"):
        assert warm[sub].pop("dtype", "float32") == "float32"
        base[sub].pop("dtype", None)
    assert warm == base

    manifest = json.loads((bootstrapped_model / MANIFEST).read_text())
    assert manifest["base_model_version"] == model_version(tiny_model)
    assert manifest["model_version"] == model_version(bootstrapped_model) != model_version(tiny_model)
    losses = [loss for _, loss in manifest["losses"]]
    assert manifest["final_loss"] < 0.2 * losses[0], losses

    # Held-out scenes (another split and seed): greedy generation follows both formats.
    heldout = make_corpus(tmp_path / "heldout", n=6, seed=11, split="heldout").out_dir
    processor = AutoProcessor.from_pretrained(bootstrapped_model)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(bootstrapped_model).eval()

    def generate(prompt: str, image: Image.Image) -> str:
        inputs = processor(text=[prompt], images=[image], return_tensors="pt")
        with torch.no_grad(), bootstrap._torch_threads(1):  # 1 thread: far faster on busy shared cores
            out = model.generate(**inputs, max_new_tokens=80, do_sample=False)
        return processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)

    parsed, boxed = [], []
    for record in read_ground_truth(heldout):
        image = Image.open(heldout / record["file"]).convert("RGB")
        parsed.append(parse_questioner_output(generate(questioner_prompt(), image)))
        boxed.append(extract_boxed(generate(reasoner_prompt(record["qa"][0]["question"]), image)))
    assert sum(p.ok for p in parsed) >= 4, parsed
    assert sum(b is not None for b in boxed) >= 5, boxed


@pytest.mark.slow
def test_cli_bootstrap_is_deterministic(
    tiny_model: Path, labeled: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["bootstrap", str(tiny_model), str(labeled)]
    assert cli_main([*args, str(tmp_path / "a"), "--steps", "3", "--seed", "5", "--threads", "1"]) == 0
    path, version, *_ = capsys.readouterr().out.strip().split("\t")
    assert Path(path) == tmp_path / "a" and version == model_version(path)
    manifest = json.loads((tmp_path / "a" / MANIFEST).read_text())
    assert (manifest["steps"], manifest["seed"], manifest["model_version"]) == (3, 5, version)

    assert cli_main([*args, str(tmp_path / "b"), "--steps", "3", "--seed", "5", "--threads", "1"]) == 0
    assert model_version(tmp_path / "b") == version  # same inputs and seed: same weights
    assert cli_main([*args, str(tmp_path / "a"), "--steps", "3"]) == 1  # never overwrites
    assert "exists" in capsys.readouterr().err
