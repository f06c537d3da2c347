"""Group-relative (GRPO) outcome advantages and zero-variance group detection.

Every rollout of a prompt shares that prompt's *group id*; a rollout's advantage is its reward measured
against the other rollouts of the same prompt. All functions are vectorised over the batch with
``torch.unique`` + ``index_add_`` / ``scatter_reduce_``, so groups may be interleaved in any order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

__all__ = ["group_advantages", "zero_variance_groups"]

GroupIds = torch.Tensor | Sequence[int]


def _group_index(group_ids: GroupIds, n: int, device: torch.device) -> tuple[torch.Tensor, int]:
    """Map arbitrary group ids to dense indices ``0..G-1``.

    Args:
        group_ids: int tensor ``[B]`` or a sequence of ``B`` ints naming each sample's prompt group.
            Ids need not be contiguous, sorted or small.
        n: expected batch size ``B`` (length of the rewards).
        device: device of the returned index.

    Returns:
        ``(index [B] int64, G)`` where ``index[i]`` is the dense group number of sample ``i`` and ``G`` is
        the number of distinct groups.
    """
    ids = torch.as_tensor(group_ids, device=device)
    if ids.dim() != 1 or ids.shape[0] != n:
        raise ValueError(f"group_ids must have shape [{n}], got {tuple(ids.shape)}")
    if ids.dtype.is_floating_point or ids.dtype.is_complex:
        raise ValueError(f"group_ids must be integers, got dtype {ids.dtype}")
    uniq, index = torch.unique(ids, return_inverse=True)
    return index, int(uniq.numel())


def _group_stats(
    rewards: torch.Tensor, index: torch.Tensor, n_groups: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-group size, mean, unbiased std and "all rewards equal" flag, in the dtype of ``rewards``.

    The variance is two-pass (mean first, then the mean squared deviation), which stays accurate when the
    rewards of a group are close together.

    Args:
        rewards: float tensor ``[B]``.
        index: dense group index ``[B]`` (int64) from ``_group_index``.
        n_groups: number of groups ``G``.

    Returns:
        ``(count [G], mean [G], std [G], all_equal [G] bool)``. ``std`` is the unbiased (Bessel-corrected,
        ``torch.std`` default) standard deviation; it is NaN for singleton groups (``0 / 0``), which callers
        must override. ``all_equal`` is True when min == max, singletons included.
    """
    zeros = rewards.new_zeros(n_groups)
    count = zeros.index_add(0, index, torch.ones_like(rewards))
    mean = zeros.index_add(0, index, rewards) / count
    centred = rewards - mean[index]
    var = zeros.index_add(0, index, centred * centred) / (count - 1)
    g_min = zeros.scatter_reduce(0, index, rewards, reduce="amin", include_self=False)
    g_max = zeros.scatter_reduce(0, index, rewards, reduce="amax", include_self=False)
    return count, mean, var.sqrt(), g_min == g_max


@torch.no_grad()
def group_advantages(
    rewards: torch.Tensor,
    group_ids: GroupIds,
    eps: float = 1e-6,
    scale: Literal["group", "none"] = "group",
) -> torch.Tensor:
    """GRPO outcome advantage: each reward standardised within its prompt group.

    ``A_i = (r_i - mean_g) / (std_g + eps)`` for ``scale="group"`` (GRPO, as verl's
    ``compute_grpo_outcome_advantage`` with ``norm_adv_by_std_in_grpo=True``), or ``A_i = r_i - mean_g`` for
    ``scale="none"`` (Dr. GRPO, verl's ``norm_adv_by_std_in_grpo=False``). ``std_g`` is the *unbiased*
    standard deviation (``torch.std`` default, divisor ``n - 1``).

    Conventions:
        * A group of >= 2 samples whose rewards are all equal gets advantage exactly 0 (computed from
          min == max, so float round-off in the mean can never leak a non-zero value). verl can deviate
          here: e.g. eight float32 rewards of 0.1 give verl a mean/std off by ~8e-9, hence ~0.007 advantages.
        * A singleton group follows verl exactly: verl uses ``mean = 0, std = 1`` for it, so its advantage
          is ``r / (1 + eps)`` with ``scale="group"`` and ``r`` with ``scale="none"`` - *not* 0. Use
          ``zero_variance_groups`` / group sizes >= 2 if singletons should not train.
        * The math runs in the rewards' dtype (float32 for int/bool rewards), like verl, TRL and OpenRLHF;
          pass float64 rewards for more precision when rewards within a group are nearly tied.
        * The result is detached (advantages are constants for the policy gradient).

    Args:
        rewards: float tensor ``[B]``, one scalar outcome reward per sample.
        group_ids: int tensor ``[B]`` or sequence of ``B`` ints naming each sample's prompt group.
        eps: added to the group std before dividing (verl/ours: 1e-6; TRL uses 1e-4, OpenRLHF 1e-9).
        scale: ``"group"`` divides by ``std + eps``; ``"none"`` only centres.

    Returns:
        Tensor ``[B]`` of advantages, same device as ``rewards``.
    """
    if scale not in ("group", "none"):
        raise ValueError(f"unknown advantage scale {scale!r}; expected 'group' or 'none'")
    if rewards.dim() != 1:
        raise ValueError(f"rewards must have shape [B], got {tuple(rewards.shape)}")
    r = rewards.detach()
    r = r if r.dtype.is_floating_point else r.to(torch.float32)
    index, n_groups = _group_index(group_ids, r.shape[0], r.device)
    count, mean, std, all_equal = _group_stats(r, index, n_groups)

    singleton = count == 1
    mean = torch.where(singleton, torch.zeros_like(mean), mean)
    std = torch.where(singleton, torch.ones_like(std), std)

    adv = r - mean[index]
    if scale == "group":
        adv = adv / (std[index] + eps)
    zero_var = (all_equal & ~singleton)[index]
    adv = torch.where(zero_var, torch.zeros_like(adv), adv)
    return adv


@torch.no_grad()
def zero_variance_groups(rewards: torch.Tensor, group_ids: GroupIds) -> tuple[torch.Tensor, int, int]:
    """Find prompt groups whose rewards are all equal (no GRPO learning signal).

    A group is "zero-variance" when it has >= 2 samples and all their rewards are exactly equal. Singleton
    groups are *not* zero-variance, matching DAPO dynamic sampling in verl, which keeps a prompt when
    ``std > 0 or len(group) == 1``. DAPO-style filtering keeps ``~mask``; the "zero-variance group share"
    metric is ``n_groups_zero_var / n_groups``.

    Args:
        rewards: float tensor ``[B]``.
        group_ids: int tensor ``[B]`` or sequence of ``B`` ints naming each sample's prompt group.

    Returns:
        ``(mask, n_groups_zero_var, n_groups)``: ``mask`` is a bool tensor ``[B]``, True for samples that
        belong to a zero-variance group; the two ints count zero-variance groups and all groups.
    """
    if rewards.dim() != 1:
        raise ValueError(f"rewards must have shape [B], got {tuple(rewards.shape)}")
    r = rewards.detach()
    r = r if r.dtype.is_floating_point else r.to(torch.float32)
    index, n_groups = _group_index(group_ids, r.shape[0], r.device)
    count, _, _, all_equal = _group_stats(r, index, n_groups)
    group_zero_var = all_equal & (count >= 2)
    return group_zero_var[index], int(group_zero_var.sum().item()), n_groups
