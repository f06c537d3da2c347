"""The names and shapes a weight push must match: the engine's own checkpoint is the reference.

Both ends of weight sync check a push against these before any tensor reaches an engine (the object-store
path in :mod:`visplay.engine.weight_sync`, the broadcast path in :mod:`visplay.engine.broadcast`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from visplay.checkpoints import weight_files

if TYPE_CHECKING:
    import torch

CHECKPOINT_PREFIX_RENAMES: tuple[tuple[str, str], ...] = (
    ("model.language_model.", "model."),
    ("model.visual.", "visual."),
)
"""(runtime prefix, checkpoint prefix) pairs: transformers 5.x ``state_dict()`` names -> on-disk names of
Qwen2.5-VL checkpoints (what ``save_pretrained`` writes and what the engine was started from)."""


class WeightSyncError(ValueError):
    """A push was refused before touching the engine: a weight is missing or has the wrong shape."""


def to_checkpoint_names(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a transformers 5.x Qwen2.5-VL ``state_dict()`` to the checkpoint names ``save_pretrained`` writes.

    ``model.language_model.X`` -> ``model.X``, ``model.visual.X`` -> ``visual.X``; every other name (e.g.
    ``lm_head.weight``) and names that already are checkpoint names pass unchanged, so the function is
    idempotent. The tensors are not copied.

    Raises:
        WeightSyncError: if two input names map to the same checkpoint name (a mix of both spellings).
    """
    renamed: dict[str, torch.Tensor] = {}
    for name, tensor in state_dict.items():
        new = name
        for runtime, checkpoint in CHECKPOINT_PREFIX_RENAMES:
            if name.startswith(runtime):
                new = checkpoint + name[len(runtime) :]
                break
        if new in renamed:
            raise WeightSyncError(f"state dict has both spellings of {new!r} (runtime and checkpoint name)")
        renamed[new] = tensor
    return renamed


def checkpoint_weight_shapes(checkpoint: str | Path) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor stored in a checkpoint directory's safetensors files (reads only headers)."""
    from safetensors import safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    for file in weight_files(Path(checkpoint)):
        with safe_open(str(file), framework="pt", device="cpu") as handle:
            for name in handle.keys():  # noqa: SIM118 - safe_open handles are not iterable
                shapes[name] = tuple(handle.get_slice(name).get_shape())
    return shapes


def check_push_shapes(
    expected: Mapping[str, tuple[int, ...]], shapes: Mapping[str, tuple[int, ...]]
) -> tuple[str, ...]:
    """Check that ``shapes`` (checkpoint names) covers every ``expected`` weight with its shape.

    Returns:
        The names ``expected`` does not have, sorted (a push ignores them).

    Raises:
        WeightSyncError: naming the first few missing or mis-shaped weights.
    """
    missing = sorted(expected.keys() - shapes.keys())
    if missing:
        raise WeightSyncError(
            f"push is missing {len(missing)} of the engine's {len(expected)} weights, "
            f"e.g. {missing[:3]}; a partial push would corrupt fused layers"
        )
    wrong = [
        f"{name}: {tuple(shapes[name])} != {tuple(shape)}"
        for name, shape in sorted(expected.items())
        if tuple(shapes[name]) != tuple(shape)
    ]
    if wrong:
        raise WeightSyncError(f"{len(wrong)} weights have the wrong shape, e.g. {wrong[:3]}")
    return tuple(sorted(shapes.keys() - expected.keys()))
