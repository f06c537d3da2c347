"""The offline tiny Qwen2.5-VL: a complete, deterministic checkpoint that transformers and vLLM both run.

Acceptance: build the tiny model, generate from an image prompt in transformers and in a real vLLM engine,
check the generated ids are in the vocabulary and that a different image changes the vision tokens.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from visplay.checkpoints import MANIFEST, model_version, weights_sha256
from visplay.cli import main as cli_main
from visplay.config import TinyModelConfig
from visplay.world import tiny_model
from visplay.world.tiny_model import RENDERED_IMAGE, build_tiny_model, image_token_count
from visplay.world.tokenizer import SPECIAL_TOKENS

SPEC = TinyModelConfig()
IMAGE_TOKENS = (SPEC.image_size // 28) ** 2  # 16 for 112 x 112
QUESTION = "How many red squares are there at the top left?"


def scene(colour: str, shape: str, size: int = 112) -> Image.Image:
    """A white square picture with one filled shape in the middle."""
    image = Image.new("RGB", (size, size), "white")
    box = [size // 4, size // 4, 3 * size // 4, 3 * size // 4]
    draw = ImageDraw.Draw(image)
    (draw.rectangle if shape == "square" else draw.ellipse)(box, fill=colour)
    return image


RED_SQUARE, BLUE_CIRCLE = scene("red", "square"), scene("blue", "circle")


def render(processor) -> str:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", SPEC)


@pytest.fixture(scope="module")
def hf(model_dir):
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    processor = AutoProcessor.from_pretrained(model_dir)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir).eval()
    return processor, model


# ---------------------------------------------------------------- the directory, tokenizer and processor


def test_directory_is_complete_and_named_by_content(model_dir: Path) -> None:
    names = {p.name for p in model_dir.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", MANIFEST} <= names
    assert "chat_template.jinja" in names and "processor_config.json" in names
    assert [p.name for p in model_dir.parent.iterdir()] == ["model"]  # no temporary directory left behind
    manifest = json.loads((model_dir / MANIFEST).read_text())
    assert manifest["spec"] == SPEC.model_dump()
    assert manifest["content_id"] == weights_sha256(model_dir) == model_version(model_dir)
    assert manifest["image_tokens_per_image"] == image_token_count(SPEC) == IMAGE_TOKENS == 16
    config = json.loads((model_dir / "config.json").read_text())
    assert config["dtype"] == "float32" and config["text_config"]["vocab_size"] == SPEC.vocab_size
    assert (
        sum(config["text_config"]["rope_parameters"]["mrope_section"])
        == SPEC.hidden_size // SPEC.num_heads // 2
    )


def test_model_version_of_a_checkpoint_without_manifest(model_dir: Path, tmp_path: Path) -> None:
    shutil.copy(model_dir / "model.safetensors", tmp_path / "model.safetensors")
    assert model_version(tmp_path) == model_version(model_dir)
    (tmp_path / "model.safetensors").write_bytes(b"other weights")
    assert model_version(tmp_path) != model_version(model_dir)
    with pytest.raises(FileNotFoundError):
        model_version(tmp_path / "missing")


def test_tokenizer_fills_the_vocabulary_and_knows_the_world(hf) -> None:
    tokenizer = hf[0].tokenizer
    assert len(tokenizer) == SPEC.vocab_size
    special_ids = tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS)
    assert special_ids == list(range(SPEC.vocab_size - len(SPECIAL_TOKENS), SPEC.vocab_size))
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    for word in [" circle", " square", " triangle", " yellow", " tallest", " left", " bottom", " step"]:
        assert len(tokenizer.encode(word)) == 1, word
    text = "<type>numerical</type><question>Which bar is the tallest?</question> \\boxed{42} été"
    assert tokenizer.decode(tokenizer.encode(text)) == text  # byte-level: any text round-trips


def test_chat_template_renders_images_as_vision_pads(hf) -> None:
    processor = hf[0]
    text = render(processor)
    assert text.endswith(f"{RENDERED_IMAGE}{QUESTION}<|im_end|>\n<|im_start|>assistant\n")
    assert text.startswith("<|im_start|>system\n")


@pytest.mark.parametrize("side", [30, 97, 112, 127, 500, 1000])
def test_every_square_image_becomes_image_size(hf, side: int) -> None:
    inputs = hf[0](text=[render(hf[0])], images=[scene("green", "circle", side)], return_tensors="pt")
    patches = SPEC.image_size // 14
    assert inputs["image_grid_thw"].tolist() == [[1, patches, patches]]
    assert int((inputs["input_ids"] == hf[0].image_token_id).sum()) == IMAGE_TOKENS


@pytest.mark.parametrize(("image_size", "tokens"), [(28, 1), (56, 4), (100, 16), (224, 64)])
def test_other_image_sizes_round_to_multiples_of_28(hf, image_size: int, tokens: int) -> None:
    spec = SPEC.model_copy(update={"image_size": image_size})
    processor = tiny_model.build_processor(spec, hf[0].tokenizer)
    assert image_token_count(spec) == tokens
    for side in (20, image_size, 3 * image_size):
        inputs = processor(text=[render(processor)], images=[scene("red", "star", side)], return_tensors="pt")
        assert int((inputs["input_ids"] == processor.image_token_id).sum()) == tokens, side


# ---------------------------------------------------------------- transformers


def test_transformers_generates_in_vocabulary_and_sees_the_image(hf) -> None:
    processor, model = hf
    prompt = render(processor)
    red = processor(text=[prompt], images=[RED_SQUARE], return_tensors="pt")
    blue = processor(text=[prompt], images=[BLUE_CIRCLE], return_tensors="pt")
    assert int((red["input_ids"] == model.config.image_token_id).sum()) == IMAGE_TOKENS
    assert torch.equal(red["input_ids"], blue["input_ids"])  # same text, same placeholders ...
    assert not torch.equal(red["pixel_values"], blue["pixel_values"])  # ... different pixels

    with torch.no_grad():
        out = model.generate(**red, max_new_tokens=8, do_sample=False)
        new = out[0, red["input_ids"].shape[1] :]
        assert 1 <= len(new) <= 8 and int(new.max()) < SPEC.vocab_size and int(new.min()) >= 0

        # The "vision tokens": what the vision tower puts in place of the 16 <|image_pad|> embeddings.
        red_vis = model.get_image_features(red["pixel_values"], red["image_grid_thw"]).pooler_output[0]
        blue_vis = model.get_image_features(blue["pixel_values"], blue["image_grid_thw"]).pooler_output[0]
        again = model.get_image_features(red["pixel_values"], red["image_grid_thw"]).pooler_output[0]
    assert red_vis.shape == (IMAGE_TOKENS, SPEC.hidden_size)
    assert torch.equal(red_vis, again)
    assert (red_vis - blue_vis).abs().max() > 1e-3


# ---------------------------------------------------------------- building: determinism, atomicity, CLI


def test_same_seed_same_bytes_other_seed_other_weights(model_dir: Path, tmp_path: Path) -> None:
    again = build_tiny_model(tmp_path / "again", SPEC)
    for name in ["model.safetensors", "tokenizer.json", "config.json", MANIFEST]:
        assert (again / name).read_bytes() == (model_dir / name).read_bytes(), name
    other = build_tiny_model(tmp_path / "other", SPEC.model_copy(update={"seed": 1}))
    assert model_version(other) != model_version(model_dir)


def test_existing_directory_is_reused_or_refused(model_dir: Path, tmp_path: Path) -> None:
    before = (model_dir / MANIFEST).stat().st_mtime_ns
    assert build_tiny_model(model_dir, SPEC) == model_dir
    assert (model_dir / MANIFEST).stat().st_mtime_ns == before  # reused, not rebuilt
    with pytest.raises(FileExistsError):
        build_tiny_model(model_dir, SPEC.model_copy(update={"seed": 5}))
    (tmp_path / "not-a-model").mkdir()
    with pytest.raises(FileExistsError):
        build_tiny_model(tmp_path / "not-a-model", SPEC)


def test_failed_build_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def write_half_then_fail(out: Path, spec: TinyModelConfig) -> None:
        (out / "config.json").write_text("{}")
        raise RuntimeError("disk full")

    monkeypatch.setattr(tiny_model, "_write_model", write_half_then_fail)
    with pytest.raises(RuntimeError, match="disk full"):
        build_tiny_model(tmp_path / "model", SPEC)
    assert list(tmp_path.iterdir()) == []


def test_cli_make_tiny_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["make-tiny-model", str(tmp_path / "m"), "--seed", "3"]) == 0
    path, version = capsys.readouterr().out.strip().split("\t")
    assert Path(path) == tmp_path / "m" and version == model_version(path)
    assert json.loads((tmp_path / "m" / MANIFEST).read_text())["spec"]["seed"] == 3
    assert cli_main(["make-tiny-model", str(tmp_path / "m"), "--seed", "4"]) == 1  # exists, other seed
    assert "is not a tiny model built from" in capsys.readouterr().err


# ---------------------------------------------------------------- vLLM


@pytest.fixture(scope="module")
def engine(model_dir):
    """A vLLM engine in this process (visplay.engine.build_llm, in_process: no engine child processes)."""
    from visplay.config import EngineConfig
    from visplay.engine.llm import build_llm

    cfg = EngineConfig(
        dtype="float32",  # vLLM's "auto" would downcast the fp32 checkpoint to bf16
        kv_cache_memory_bytes=64 << 20,  # on CPU, gpu_memory_utilization=0.1 can leave a negative KV budget
        enforce_eager=True,
        max_model_len=512,
        max_num_seqs=8,
        in_process=True,
    )
    llm = build_llm(model_dir, cfg, seed=0)
    yield llm
    llm.llm_engine.engine_core.shutdown()  # free the engine's memory now, not at interpreter exit


@pytest.mark.slow
def test_vllm_generates_in_vocabulary_and_sees_the_image(engine, hf) -> None:
    from vllm import SamplingParams

    processor, model = hf
    prompt = render(processor)
    requests = [
        {"prompt": prompt, "multi_modal_data": {"image": image}} for image in (RED_SQUARE, BLUE_CIRCLE)
    ]

    outs = engine.generate(requests, SamplingParams(n=2, max_tokens=8, seed=0), use_tqdm=False)
    for out in outs:
        assert len(out.outputs) == 2
        assert out.prompt_token_ids.count(model.config.image_token_id) == IMAGE_TOKENS
        for completion in out.outputs:
            assert 1 <= len(completion.token_ids) <= 8
            assert all(0 <= t < SPEC.vocab_size for t in completion.token_ids)

    # Prompt log-probs: the text after the image depends on the image, and match transformers (fp32).
    scored = engine.generate(requests, SamplingParams(max_tokens=1, prompt_logprobs=0), use_tqdm=False)
    vllm_lp = []
    for out, image in zip(scored, (RED_SQUARE, BLUE_CIRCLE), strict=True):
        ids = out.prompt_token_ids
        vllm_lp.append(torch.tensor([out.prompt_logprobs[i][ids[i]].logprob for i in range(1, len(ids))]))
        inputs = processor(text=[prompt], images=[image], return_tensors="pt")
        assert inputs["input_ids"][0].tolist() == ids
        with torch.no_grad():
            logits = model(**inputs).logits[0, :-1].log_softmax(-1)
        hf_lp = logits.gather(-1, inputs["input_ids"][0, 1:, None])[:, 0]
        assert torch.allclose(vllm_lp[-1], hf_lp, atol=1e-4), (vllm_lp[-1] - hf_lp).abs().max()
    # Entry i of a log-prob vector scores prompt token i + 1: from index(<|vision_end|>) on, the text after the image.
    text_after_image = slice(ids.index(model.config.vision_end_token_id), None)
    assert (vllm_lp[0][text_after_image] - vllm_lp[1][text_after_image]).abs().max() > 1e-4

    # Greedy decoding (positions of the text after the image included) agrees token for token.
    greedy = engine.generate(requests[:1], SamplingParams(max_tokens=8, temperature=0), use_tqdm=False)
    inputs = processor(text=[prompt], images=[RED_SQUARE], return_tensors="pt")
    with torch.no_grad():
        hf_ids = model.generate(**inputs, max_new_tokens=8, do_sample=False)[
            0, inputs["input_ids"].shape[1] :
        ]
    assert list(greedy[0].outputs[0].token_ids) == hf_ids.tolist()
