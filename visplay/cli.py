"""The ``visplay`` command line.

Each subcommand is a ``cmd_*`` function taking the parsed arguments and returning an exit code, plus one
block in :func:`build_parser` that declares its arguments. Heavy imports (torch, transformers) happen
inside the ``cmd_*`` functions so that ``visplay --help`` stays fast.

    visplay make-tiny-model runs/tiny-model --seed 0
"""

from __future__ import annotations

import argparse
import sys


def cmd_make_tiny_model(args: argparse.Namespace) -> int:
    """Build the offline tiny Qwen2.5-VL and print its path and content id."""
    from visplay.checkpoints import model_version
    from visplay.config import TinyModelConfig
    from visplay.world.tiny_model import build_tiny_model

    try:
        path = build_tiny_model(args.out_dir, TinyModelConfig(seed=args.seed))
    except FileExistsError as err:
        print(f"visplay make-tiny-model: {err}", file=sys.stderr)
        return 1
    print(f"{path}\t{model_version(path)}")
    return 0


def cmd_make_corpus(args: argparse.Namespace) -> int:
    """Generate the synthetic scene corpus (images/ + ground_truth.jsonl) and print a summary."""
    from visplay.world.corpus import make_corpus

    try:
        summary = make_corpus(args.out_dir, args.n, args.seed, split=args.split)
    except FileExistsError as err:
        print(f"visplay make-corpus: {err}", file=sys.stderr)
        return 1
    print(
        f"{summary.images_dir}\t{summary.n} images {dict(summary.by_kind)}\tground truth {summary.ground_truth}"
    )
    return 0


def cmd_config_reference(args: argparse.Namespace) -> int:
    """Print the config reference (every field, its default and its docstring) as a markdown table."""
    from visplay.config import reference_markdown

    print(reference_markdown())
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    """Print the resource plan of the loop job and the Serve job; with ``--offer`` or ``ray.cluster_config``,
    check it against that machine or cluster (exit 1 when it cannot fit)."""
    from pathlib import Path

    import yaml

    from visplay.config import ConfigError, load_config
    from visplay.resource_plan import (
        DoesNotFit,
        Offer,
        check_fit,
        cluster_yaml_offer,
        evolve_plan,
        format_plan,
        parse_resources,
        serve_plan,
    )

    try:
        cfg = load_config(args.config, args.overrides)
        offers = []
        if args.offer:
            machine = parse_resources(args.offer)
            offers.append(Offer(machine, (machine,), "the node of --offer"))
        path = Path(cfg.ray.cluster_config) if cfg.ray.cluster_config is not None else None
        if path is not None and path.is_file():
            offers.append(cluster_yaml_offer(yaml.safe_load(path.read_text()), f"{path} at its largest"))
        elif path is not None:
            print(f"visplay plan: ray.cluster_config {path} is not a file here: not checked", file=sys.stderr)
    except (ConfigError, ValueError) as err:
        print(f"visplay plan: {err}", file=sys.stderr)
        return 2
    plans = [
        p for job, p in (("evolve", evolve_plan(cfg)), ("serve", serve_plan(cfg))) if args.job in (job, "all")
    ]
    status = 0
    for plan in plans:
        print(format_plan(plan))
        for offer in offers:
            try:
                check_fit(plan, offer)
                print(f"  fits {offer.source}")
            except DoesNotFit as err:
                print(f"  DOES NOT FIT: {err}")
                status = 1
        print()
    return status


def cmd_bootstrap(args: argparse.Namespace) -> int:
    """Warm up a base checkpoint on a LABELED corpus (stand-in for instruction tuning); print path and version."""
    import logging

    from visplay.world.bootstrap import DEFAULT_STEPS, warm_up

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    steps = DEFAULT_STEPS if args.steps is None else args.steps
    try:
        summary = warm_up(
            args.base_dir,
            args.corpus_dir,
            args.out_dir,
            steps=steps,
            seed=args.seed,
            num_threads=args.threads or None,
        )
    except FileExistsError as err:
        print(f"visplay bootstrap: {err}", file=sys.stderr)
        return 1
    print(
        f"{summary.out_dir}\t{summary.model_version}\tloss {summary.final_loss:.4f}\t{summary.seconds:.0f} s"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="visplay", description="VisPlay self-evolving VLM RL on Ray.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("make-tiny-model", help="build the offline tiny Qwen2.5-VL checkpoint from a seed")
    p.add_argument(
        "out_dir", help="directory to create (an existing one is reused only if built from the same spec)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the tokenizer corpus and the random weights")
    p.set_defaults(func=cmd_make_tiny_model)

    p = sub.add_parser("make-corpus", help="generate synthetic scenes with a separate ground-truth file")
    p.add_argument("out_dir", help="directory to fill: images under OUT_DIR/images, ground truth beside it")
    p.add_argument("--n", type=int, required=True, help="number of images")
    p.add_argument("--seed", type=int, default=1, help="generator seed")
    p.add_argument(
        "--split", default="train", help="split name (splits with different names never share images)"
    )
    p.set_defaults(func=cmd_make_corpus)

    p = sub.add_parser("config-reference", help="print the config reference table (markdown)")
    p.set_defaults(func=cmd_config_reference)

    p = sub.add_parser(
        "plan", help="print what each phase of the loop job and the Serve job asks Ray for, and check a fit"
    )
    p.add_argument("--config", default=None, help="YAML file in configs/ (default: schema defaults)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. rollout_engine.per_role=2")
    p.add_argument("--job", choices=["evolve", "serve", "all"], default="all", help="which job's plan")
    p.add_argument(
        "--offer",
        default=None,
        help="check the plan against one node with these resources, e.g. CPU=64,GPU=8 (ray.cluster_config, "
        "when set, is checked too)",
    )
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser(
        "bootstrap", help="supervised warm-up on a LABELED synthetic split (tiny-model stand-in)"
    )
    p.add_argument("base_dir", help="base checkpoint (e.g. from make-tiny-model)")
    p.add_argument("corpus_dir", help="labeled corpus directory holding ground_truth.jsonl (make-corpus)")
    p.add_argument("out_dir", help="directory to create for the warmed-up checkpoint (must not exist)")
    p.add_argument(
        "--steps", type=int, default=None, help="optimizer steps (default: bootstrap.DEFAULT_STEPS)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the data order and of torch")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads, 0 for torch's default (1 is fastest on a busy 2-core machine)",
    )
    p.set_defaults(func=cmd_bootstrap)

    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``visplay`` console script."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
