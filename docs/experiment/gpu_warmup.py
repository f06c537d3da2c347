"""A longer supervised warm-up of the shipped tiny base on a GPU: does the tiny VLM learn to see with steps?

The shipped base (models/tiny-base, 100 CPU steps of batch 8) answers each question form with one constant
(docs/experiment/NOTES.md). This probe continues its warm-up with the same examples and loss as
``visplay.world.bootstrap`` (both roles' targets, per-target-token cross-entropy), on many more labeled
scenes and steps than 2 CPU cores allow, and scores it as it goes: greedy ``\\boxed{}`` answers of the
Reasoner on a held-out split (transformers ``generate``), per skill, against the image-blind baseline (the
most common answer per skill). Needs torch, transformers, numpy and Pillow only (the GPU machine has no
Ray, vLLM or pydantic). The final checkpoint is written to ``--out``; its greedy accuracy through the
project's evaluation harness (vLLM) is measured afterwards with
``jobs/bootstrap.py --evaluate models.base=<out>``.

    python docs/experiment/gpu_warmup.py --out OUT --images 8000 --minutes 6 --batch 64 --lr 2e-3
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import random
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from visplay.prompts import reasoner_prompt  # noqa: E402
from visplay.rewards.parse import extract_boxed  # noqa: E402
from visplay.world import bootstrap as B  # noqa: E402
from visplay.world.corpus import KINDS, make_corpus, read_ground_truth  # noqa: E402


def shard_examples(job: tuple[str, str, int, int, tuple[str, ...]]) -> tuple[list, list]:
    """Draw one labeled shard (split ``bootstrap``) and build its examples (a worker process)."""
    import torch
    from transformers import AutoProcessor

    torch.multiprocessing.set_sharing_strategy("file_system")  # thousands of pixel tensors come back
    base, work, n, seed, kinds = job
    out = Path(work) / f"shard{seed}"
    make_corpus(out, n, seed=seed, split="bootstrap", kinds=kinds)
    return B.build_examples(AutoProcessor.from_pretrained(base), out)


def heldout(base: str, work: Path, n: int, kinds: tuple[str, ...]) -> list[tuple[object, dict]]:
    """(processor inputs, qa) of every QA pair of a held-out split (``heldout``, seed 3, as the eval's)."""
    from PIL import Image
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(base)
    out = work / "heldout"
    make_corpus(out, n, seed=3, split="heldout", kinds=kinds)
    items = []
    for record in read_ground_truth(out):
        with Image.open(out / record["file"]) as handle:
            image = handle.convert("RGB")
        for qa in record["qa"]:
            items.append(
                (processor(text=[reasoner_prompt(qa["question"])], images=[image], return_tensors="pt"), qa)
            )
    return items


def greedy_accuracy(model, processor, items, device) -> dict[str, float]:
    """Share of held-out questions whose greedy ``\\boxed{}`` answer equals the truth, per skill and in all."""
    import torch

    right, total = collections.Counter(), collections.Counter()
    model.eval()
    with torch.no_grad():
        for inputs, qa in items:
            inputs = {k: v.to(device) for k, v in inputs.items()}
            out = model.generate(**inputs, max_new_tokens=24, do_sample=False)
            text = processor.tokenizer.decode(
                out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True
            )
            ok = extract_boxed(text) == str(qa["answer"])
            right[qa["skill"]] += ok
            total[qa["skill"]] += 1
    model.train()
    scores = {s: right[s] / total[s] for s in sorted(total)}
    scores["all"] = sum(right.values()) / sum(total.values())
    return scores


def blind_baseline(items) -> dict[str, float]:
    """Accuracy of answering each skill's most common held-out answer whatever the image."""
    by_skill = collections.defaultdict(list)
    for _, qa in items:
        by_skill[qa["skill"]].append(str(qa["answer"]))
    return {s: collections.Counter(a).most_common(1)[0][1] / len(a) for s, a in by_skill.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", default=str(ROOT / "models" / "tiny-base"))
    parser.add_argument("--out", required=True)
    parser.add_argument("--work", default="/tmp/gpu_warmup")
    parser.add_argument("--images", type=int, default=8000, help="labeled training scenes")
    parser.add_argument("--heldout", type=int, default=96, help="held-out scenes")
    parser.add_argument("--minutes", type=float, default=6.0, help="training time budget")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--questioner-share", type=float, default=0.25)
    parser.add_argument("--eval-every", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=14)
    parser.add_argument("--tar", help="also pack --out into this tar file")
    parser.add_argument("--kinds", default=",".join(KINDS), help="scene kinds (the world), comma-separated")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (None: torch's default)")
    args = parser.parse_args()
    import torch
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    torch.multiprocessing.set_sharing_strategy("file_system")
    if args.threads:
        torch.set_num_threads(args.threads)
    kinds = tuple(args.kinds.split(","))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    per = -(-args.images // args.workers)
    jobs = [(args.base, str(work), per, 1000 + i, kinds) for i in range(args.workers)]
    questioner, reasoner = [], []
    with ProcessPoolExecutor(args.workers) as pool:
        for q, r in pool.map(shard_examples, jobs):
            questioner += q
            reasoner += r
    items = heldout(args.base, work, args.heldout, kinds)
    print(f"{len(questioner)} questioner + {len(reasoner)} reasoner examples, {len(items)} held-out "
          f"questions, built in {time.perf_counter() - t0:.0f} s", flush=True)  # fmt: skip
    blind = blind_baseline(items)
    print("image-blind baseline:", json.dumps({k: round(v, 3) for k, v in blind.items()}), flush=True)

    torch.manual_seed(0)
    processor = AutoProcessor.from_pretrained(args.base)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(args.base, dtype=torch.float32).to(device)
    start = greedy_accuracy(model, processor, items, device)
    print("step 0:", json.dumps({k: round(v, 3) for k, v in start.items()}), flush=True)
    rng = random.Random(0)
    streams = (B._shuffled_forever(questioner, rng), B._shuffled_forever(reasoner, rng))
    n_q, pad = round(args.questioner_share * args.batch), processor.tokenizer.pad_token_id
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.0)
    budget, began, step, history, curve = args.minutes * 60, time.perf_counter(), 0, [], []
    model.train()
    while time.perf_counter() - began < budget:
        step += 1
        progress = (time.perf_counter() - began) / budget  # cosine over the time budget after a short ramp
        for group in optimizer.param_groups:
            group["lr"] = args.lr * min(1.0, step / 200) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        parts = [[next(streams[0]) for _ in range(n_q)], [next(streams[1]) for _ in range(args.batch - n_q)]]
        subs = [{k: v.to(device) for k, v in B.collate(p, pad).items()} for p in parts if p]
        loss = B.batch_loss(model, subs)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        history.append(float(loss.detach()))
        if step % args.eval_every == 0:
            scores = greedy_accuracy(model, processor, items, device)
            curve.append(
                {
                    "step": step,
                    "seconds": round(time.perf_counter() - began),
                    "loss": sum(history[-50:]) / len(history[-50:]),
                    **scores,
                }
            )
            print(json.dumps(curve[-1]), flush=True)
    final = greedy_accuracy(model, processor, items, device)
    curve.append(
        {
            "step": step,
            "seconds": round(time.perf_counter() - began),
            "loss": sum(history[-50:]) / len(history[-50:]),
            **final,
        }
    )
    print("final:", json.dumps(curve[-1]), flush=True)
    out = Path(args.out)
    model.to("cpu").save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    (out / "visplay_gpu_warmup.json").write_text(json.dumps({
        "command": sys.argv, "args": vars(args), "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "examples": {"questioner": len(questioner), "reasoner": len(reasoner)}, "steps": step,
        "blind": blind, "start": start, "curve": curve,
    }, indent=1))  # fmt: skip
    if args.tar:  # one file back from the GPU machine
        import tarfile

        with tarfile.open(args.tar, "w") as tar:
            tar.add(out, arcname=out.name)


if __name__ == "__main__":
    main()
