"""Weight sync is real: weights pushed into a running rollout engine change what it computes, exactly.

The reference is a transformers forward pass of the same weights. The session's warm rollout actor (one vLLM
engine, fp32, the ``rollout_engine`` of configs/tiny-cpu.yaml, holding the bootstrapped tiny model) serves the
whole module and gets the bootstrapped weights back at the end:

1. before any push, the engine's log-probs of a fixed completion (given a fixed prompt and image) equal
   those of the bootstrapped model in transformers;
2. after pushing other weights (the random tiny model; ``[ray.put(state_dict)]``, transformers runtime names),
   they equal the *perturbed* transformers model's and are far from the old ones; the version changed and
   the actor and engine processes are the same (no restart);
3. greedy generation after the push follows the perturbed model (so the prefix and encoder caches, filled
   by a generation with the same prompt and image before the push, were invalidated); sampling is seeded
   and stays in the vocabulary;
4. a partial push is refused and changes nothing;
5. the broadcast path (this test process as trainer rank 0, gloo): broadcasting the original weights makes
   the engine match the original model again, broadcasting the perturbed ones matches the perturbed model
   (one group, two pushes), still without a restart; a partial broadcast is refused before anything is sent;
6. pushing the original weights (as a plain dict) restores the original log-probs. These tests run last in
   the file because they leave the engine restored.

Fast tests (no engine) cover the name mapping, the file writer and the broadcast receive/drain protocol.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hf_logprobs import hf_sequence_logprobs, hf_token_logprobs, max_abs_diff
from PIL import Image, ImageDraw

from visplay.config import SamplingConfig, load_config
from visplay.engine.broadcast import BroadcastSender, free_port, open_group
from visplay.engine.rollout import ProcessIds, Rollout, RolloutRequest
from visplay.engine.weight_names import (
    WeightSyncError,
    check_push_shapes,
    checkpoint_weight_shapes,
    to_checkpoint_names,
)
from visplay.engine.weight_sync import write_weights_file
from visplay.prompts import questioner_prompt

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny-cpu.yaml"
TOLERANCE = 1e-3
"""Max abs difference of per-token log-probs between vLLM and transformers, fp32 (observed: ~1e-6)."""
CLEARLY_DIFFERENT = 50 * TOLERANCE
"""A push must move the engine's log-probs by at least this much (observed: ~1)."""
COMPLETION_TEXT = (
    "<type>numerical</type><question>How many red squares are there?</question><answer>1</answer>"
)


# ------------------------------------------------------------------------------------------ fast tests


def test_runtime_names_map_to_checkpoint_names() -> None:
    t = torch.zeros(1)
    runtime = {"model.language_model.layers.0.mlp.up_proj.weight": t, "model.visual.blocks.0.norm1.weight": t}
    runtime["lm_head.weight"] = t
    mapped = to_checkpoint_names(runtime)
    assert sorted(mapped) == [
        "lm_head.weight",
        "model.layers.0.mlp.up_proj.weight",
        "visual.blocks.0.norm1.weight",
    ]
    assert to_checkpoint_names(mapped) == mapped  # idempotent: checkpoint names pass unchanged
    with pytest.raises(WeightSyncError, match="both spellings"):
        to_checkpoint_names({"model.language_model.norm.weight": t, "model.norm.weight": t})


def test_weights_file_casts_floats_to_the_engine_dtype_and_unties_shared_tensors(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    embed = torch.randn(4, 3)
    state = {"embed.weight": embed, "lm_head.weight": embed, "steps": torch.tensor([3])}  # tied + int buffer
    write_weights_file(state, tmp_path / "same.safetensors", torch.float32)  # no cast: storage stays shared
    back = load_file(tmp_path / "same.safetensors")
    assert torch.equal(back["embed.weight"], embed) and torch.equal(back["lm_head.weight"], embed)
    write_weights_file(state, tmp_path / "bf16.safetensors", torch.bfloat16)
    back = load_file(tmp_path / "bf16.safetensors")
    assert back["embed.weight"].dtype == back["lm_head.weight"].dtype == torch.bfloat16
    assert torch.equal(back["lm_head.weight"], embed.to(torch.bfloat16))
    assert back["steps"].dtype == torch.int64 and back["steps"].tolist() == [3]  # integers are never cast


RECEIVER = """
import json, os, sys, torch
from visplay.engine.broadcast import TensorSpec, open_group, receive_and_load

group = open_group("127.0.0.1", int(sys.argv[1]), 1, 2, "gloo", 120)
specs = [TensorSpec("a", (2, 3), "float32"), TensorSpec("b", (4,), "bfloat16"), TensorSpec("c", (1,), "int64")]
seen = []

def load(weights):  # an engine that takes one tensor, then fails
    seen.append(next(weights))
    raise ValueError("engine refused")

try:
    receive_and_load(group, specs, torch.device("cpu"), load)
except ValueError as err:
    print(json.dumps([seen[0][0], seen[0][1].tolist(), str(err)]), flush=True)
# Leave without the interpreter's teardown: gloo's threads, torn down at exit with the group still open,
# sometimes abort the process ("terminate called without an active exception") after the result is out.
os._exit(0)
"""
"""Rank 1 of a 2-rank gloo group in its own process (imports only torch and visplay.engine.broadcast)."""


def test_broadcast_receiver_takes_tensors_in_order_and_drains_what_it_did_not_load() -> None:
    """A receiver whose engine fails after the first tensor still takes the rest (so the sender's three
    broadcasts all complete instead of hanging), then raises the engine's error."""
    import json
    import subprocess
    import sys

    port = free_port()
    receiver = subprocess.Popen(
        [sys.executable, "-c", RECEIVER, str(port)], stdout=subprocess.PIPE, text=True
    )
    group = open_group("127.0.0.1", port, 0, 2, "gloo", 120)  # waits for the receiver to join
    sent = [torch.arange(6.0).reshape(2, 3), torch.ones(4, dtype=torch.bfloat16), torch.tensor([7])]
    for tensor in sent:
        group.broadcast(tensor, 0).wait()
    out, _ = receiver.communicate(timeout=120)
    assert receiver.returncode == 0
    assert json.loads(out) == ["a", [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]], "engine refused"]


def test_push_shape_check_names_missing_and_misshaped_weights() -> None:
    expected = {"a": (2, 3), "b": (4,)}
    assert check_push_shapes(expected, {"a": (2, 3), "b": (4,), "tied": (1,)}) == ("tied",)
    with pytest.raises(WeightSyncError, match=r"missing 1 of the engine's 2 weights, e.g. \['b'\]"):
        check_push_shapes(expected, {"a": (2, 3)})
    with pytest.raises(
        WeightSyncError, match=r"1 weights have the wrong shape, e.g. \['a: \(3, 2\) != \(2, 3\)'\]"
    ):
        check_push_shapes(expected, {"a": (3, 2), "b": (4,)})


# ------------------------------------------------------------------------------------------ fixtures


def _png(image: Image.Image) -> bytes:
    """PNG bytes of a picture."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def image() -> bytes:
    """A white 112 x 112 picture with a red square and a blue circle."""
    picture = Image.new("RGB", (112, 112), "white")
    draw = ImageDraw.Draw(picture)
    draw.rectangle([10, 10, 50, 50], fill="red")
    draw.ellipse([60, 60, 100, 100], fill="blue")
    return _png(picture)


@pytest.fixture(scope="module")
def hf(bootstrapped_model, tiny_model):
    """(processor, original fp32 model, "perturbed" model): the bootstrapped model, and the random tiny model
    it was warmed up from (same architecture and tokenizer, clearly other weights and other greedy choices;
    small noise on the bootstrapped weights moved the log-probs but left its greedy tokens unchanged)."""
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    processor = AutoProcessor.from_pretrained(bootstrapped_model)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(bootstrapped_model, dtype=torch.float32).eval()
    perturbed = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_model, dtype=torch.float32).eval()
    return processor, model, perturbed


@pytest.fixture(scope="module")
def completion(hf) -> list[int]:
    """A fixed completion: a well-formed questioner answer followed by <|im_end|>."""
    tokenizer = hf[0].tokenizer
    return tokenizer.encode(COMPLETION_TEXT, add_special_tokens=False) + [
        tokenizer.convert_tokens_to_ids("<|im_end|>")
    ]


@pytest.fixture(scope="module")
def actor(ray_local, bootstrapped_engine, bootstrapped_model):
    """The session's warm rollout actor (fp32 engine) holding the bootstrapped model; given back with those
    weights and their version (the tests below push other weights and labels into it)."""
    from visplay.checkpoints import model_version
    from visplay.engine.rollout import load_checkpoint_into

    assert load_config(CONFIG).rollout_engine.dtype == "float32"  # the exact comparisons need an fp32 engine
    version = model_version(bootstrapped_model)
    load_checkpoint_into([bootstrapped_engine], bootstrapped_model, version)
    yield bootstrapped_engine
    load_checkpoint_into([bootstrapped_engine], bootstrapped_model, version)


GREEDY = SamplingConfig(temperature=0.0, max_tokens=12)


@dataclass(frozen=True)
class SyncRun:
    """Everything measured around the one perturbed push."""

    hf_before: list[float]
    hf_after: list[float]
    engine_before: list[float]
    engine_after: list[float]
    version_before: str
    version_after: str
    pids_before: ProcessIds
    pids_after: ProcessIds
    push_seconds: float
    greedy_before: Rollout
    greedy_after: Rollout


@pytest.fixture(scope="module")
def sync_run(ray_local, actor, hf, image, completion) -> SyncRun:
    """Score, generate, push the perturbed weights through the object store, score and generate again."""
    processor, model, perturbed = hf
    prompt = questioner_prompt()
    request = RolloutRequest(prompt=prompt, image=image, seed=11)
    ray = ray_local
    version_before = ray.get(actor.version.remote())
    pids_before = ray.get(actor.pids.remote())
    engine_before = ray.get(actor.sequence_logprobs.remote(prompt, image, completion))
    (greedy_before,) = ray.get(actor.generate.remote([request], GREEDY, 1))  # fills prefix + encoder caches

    ref = ray.put(perturbed.state_dict())  # transformers runtime names, fp32
    push_seconds = ray.get(actor.push_weights.remote([ref], "perturbed-1"))

    run = SyncRun(
        hf_before=hf_sequence_logprobs(processor, model, prompt, image, completion),
        hf_after=hf_sequence_logprobs(processor, perturbed, prompt, image, completion),
        engine_before=engine_before,
        engine_after=ray.get(actor.sequence_logprobs.remote(prompt, image, completion)),
        version_before=version_before,
        version_after=ray.get(actor.version.remote()),
        pids_before=pids_before,
        pids_after=ray.get(actor.pids.remote()),
        push_seconds=push_seconds,
        greedy_before=greedy_before,
        greedy_after=ray.get(actor.generate.remote([request], GREEDY, 1))[0],
    )
    print(
        f"\nweight sync: |engine-hf| before {max_abs_diff(run.engine_before, run.hf_before):.2e}, "
        f"after {max_abs_diff(run.engine_after, run.hf_after):.2e}; "
        f"push moved the engine by {max_abs_diff(run.engine_after, run.engine_before):.3f}; "
        f"push took {push_seconds:.3f}s in the actor"
    )
    return run


# ------------------------------------------------------------------------------------------ slow tests


@pytest.mark.slow
def test_state_dict_names_are_the_checkpoint_names_after_mapping(hf, bootstrapped_model) -> None:
    _, model, _ = hf
    state = model.state_dict()
    on_disk = checkpoint_weight_shapes(bootstrapped_model)
    assert set(state) != set(on_disk)  # transformers 5 renames on save: the mapping is needed for the check
    mapped = to_checkpoint_names(state)
    assert {name: tuple(t.shape) for name, t in mapped.items()} == on_disk


@pytest.mark.slow
def test_engine_matches_transformers_before_the_push(sync_run: SyncRun) -> None:
    assert max_abs_diff(sync_run.engine_before, sync_run.hf_before) < TOLERANCE


@pytest.mark.slow
def test_push_makes_the_engine_compute_with_the_new_weights_without_a_restart(sync_run: SyncRun) -> None:
    assert max_abs_diff(sync_run.engine_after, sync_run.hf_after) < TOLERANCE
    assert max_abs_diff(sync_run.engine_after, sync_run.engine_before) > CLEARLY_DIFFERENT
    assert max_abs_diff(sync_run.hf_after, sync_run.hf_before) > CLEARLY_DIFFERENT
    assert sync_run.version_before != sync_run.version_after == "perturbed-1"
    assert sync_run.pids_after == sync_run.pids_before  # same actor process, same engine worker process
    assert sync_run.push_seconds > 0


@pytest.mark.slow
def test_generation_after_the_push_follows_the_new_weights(sync_run: SyncRun, hf, image) -> None:
    processor, model, perturbed = hf
    prompt = questioner_prompt()
    before, after = sync_run.greedy_before, sync_run.greedy_after
    assert before.version != after.version == "perturbed-1"
    # The expanded prompt ids are exactly what the transformers processor makes (the trainer relies on it).
    expected = processor(
        text=[prompt], images=[Image.open(io.BytesIO(image)).convert("RGB")], return_tensors="pt"
    )
    assert after.prompt_token_ids == before.prompt_token_ids == expected["input_ids"][0].tolist()

    (tokens,) = after.token_ids
    assert tokens and all(0 <= t < model.config.text_config.vocab_size for t in tokens)
    # Greedy: each generated token is the perturbed model's top choice (up to fp32 noise) ...
    table = hf_token_logprobs(processor, perturbed, prompt, image, tokens)
    chosen = table.gather(1, torch.tensor(tokens).unsqueeze(1)).squeeze(1)
    assert bool((chosen >= table.max(dim=1).values - TOLERANCE).all())
    # ... and not what the original weights would have chosen (stale caches would give the old tokens).
    old_table = hf_token_logprobs(processor, model, prompt, image, tokens)
    old_chosen = old_table.gather(1, torch.tensor(tokens).unsqueeze(1)).squeeze(1)
    assert bool((old_chosen < old_table.max(dim=1).values - TOLERANCE).any())


@pytest.mark.slow
def test_seeded_sampling_after_the_push_is_reproducible(ray_local, actor, sync_run: SyncRun, image) -> None:
    sampling = SamplingConfig(temperature=1.0, max_tokens=16)
    requests = [
        RolloutRequest(questioner_prompt(), image, seed=5),
        RolloutRequest(questioner_prompt(), image, seed=6),
    ]
    first = ray_local.get(actor.generate.remote(requests, sampling, 4))
    again = ray_local.get(actor.generate.remote(requests, sampling, 4))
    assert [r.token_ids for r in first] == [r.token_ids for r in again]
    assert first[0].token_ids != first[1].token_ids  # other seed, other samples
    assert all(len(r.texts) == len(r.token_ids) == 4 and r.version == "perturbed-1" for r in first)
    assert all(0 <= t < 2048 for r in first for ids in r.token_ids for t in ids)


@pytest.mark.slow
def test_partial_push_is_refused_and_changes_nothing(
    ray_local, actor, sync_run: SyncRun, hf, image, completion
) -> None:
    state = hf[1].state_dict()
    state.pop("model.language_model.layers.0.self_attn.k_proj.weight")
    with pytest.raises(WeightSyncError, match="missing 1 of"):
        ray_local.get(actor.push_weights.remote(state, "partial"))
    assert ray_local.get(actor.version.remote()) == "perturbed-1"
    now = ray_local.get(actor.sequence_logprobs.remote(questioner_prompt(), image, completion))
    assert max_abs_diff(now, sync_run.engine_after) < TOLERANCE


@pytest.mark.slow
def test_broadcast_push_changes_the_engine_exactly_without_a_restart(
    ray_local, actor, sync_run: SyncRun, hf, image, completion
) -> None:
    """The collective path: this test process is the trainer's rank 0, the engine worker joins over gloo."""
    processor, model, perturbed = hf
    sender = BroadcastSender([actor], "gloo", timeout_s=60)

    def engine_logprobs() -> list[float]:
        return ray_local.get(actor.sequence_logprobs.remote(questioner_prompt(), image, completion))

    seconds = sender.push(model.state_dict(), "broadcast-original")
    restored = engine_logprobs()
    assert ray_local.get(actor.version.remote()) == "broadcast-original" and seconds > 0
    assert max_abs_diff(restored, sync_run.hf_before) < TOLERANCE
    assert max_abs_diff(restored, sync_run.engine_after) > CLEARLY_DIFFERENT

    sender.push(perturbed.state_dict(), "broadcast-perturbed")  # the same group serves every push
    assert max_abs_diff(engine_logprobs(), sync_run.hf_after) < TOLERANCE

    state = model.state_dict()
    state.pop("model.language_model.norm.weight")
    with pytest.raises(WeightSyncError, match="missing 1 of"):
        sender.push(state, "broadcast-partial")  # refused by the sender: nothing was broadcast
    assert ray_local.get(actor.version.remote()) == "broadcast-perturbed"
    assert max_abs_diff(engine_logprobs(), sync_run.hf_after) < TOLERANCE
    assert ray_local.get(actor.pids.remote()) == sync_run.pids_before
    print(f"\nbroadcast push (gloo, 1 engine worker): {seconds:.3f}s")


@pytest.mark.slow
def test_pushing_the_original_weights_restores_the_original_logprobs(
    ray_local, actor, sync_run: SyncRun, hf, image, completion
) -> None:
    """Runs last: leaves the engine with the original weights. Uses the plain-dict form of push_weights."""
    seconds = ray_local.get(actor.push_weights.remote(hf[1].state_dict(), "original-again"))
    assert seconds > 0 and ray_local.get(actor.version.remote()) == "original-again"
    restored = ray_local.get(actor.sequence_logprobs.remote(questioner_prompt(), image, completion))
    assert max_abs_diff(restored, sync_run.engine_before) < TOLERANCE
    assert ray_local.get(actor.pids.remote()) == sync_run.pids_before


@pytest.mark.slow
def test_a_frozen_engine_that_answers_with_other_weights_is_reloaded_from_its_checkpoint(
    ray_local, actor, hf, image, completion, bootstrapped_model, tiny_model
) -> None:
    # What a restarted actor looks like to its caller: the engine holds other weights under another
    # version (a real SIGKILL and restart is in tests/test_grpo_train.py). The frozen judge's caller
    # re-loads it from its checkpoint, asks again, and counts the re-load.
    from visplay.checkpoints import model_version
    from visplay.engine.rollout import generate_frozen, load_checkpoint_into

    processor, model, _ = hf
    load_checkpoint_into([actor], tiny_model, "a-restarted-engine")
    version = model_version(bootstrapped_model)
    request = RolloutRequest(prompt=questioner_prompt(), image=image, seed=3)
    rollouts, reloads = generate_frozen(actor, [request], GREEDY, 1, str(bootstrapped_model), version)
    assert reloads == 1 and [r.version for r in rollouts] == [version]
    engine = ray_local.get(actor.sequence_logprobs.remote(questioner_prompt(), image, completion))
    assert (
        max_abs_diff(engine, hf_sequence_logprobs(processor, model, questioner_prompt(), image, completion))
        < TOLERANCE
    )
