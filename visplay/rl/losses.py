"""Per-token PPO/GRPO losses: masked means, KL estimators, the clipped policy loss and its aggregation.

Shapes: ``B`` sequences (rollouts) x ``T`` response positions. ``mask`` is 1 on response tokens that count
and 0 on padding. Formulas follow verl's ``verl/trainer/ppo/core_algos.py`` (``kl_penalty``,
``compute_policy_loss_vanilla``, ``agg_loss``); deviations are stated in the docstrings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

__all__ = ["LossAgg", "PolicyLossMetrics", "agg_loss", "kl_penalty", "masked_mean", "policy_loss"]

LossAgg = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"]

# verl clamps log-ratios to this range before exp() for numerical stability.
LOG_RATIO_CLAMP = 20.0
# verl clamps the k3 ("low_var_kl") estimate to [-KL_K3_CLAMP, KL_K3_CLAMP].
KL_K3_CLAMP = 10.0

_KL_ALIASES = {"k1": "k1", "kl": "k1", "k2": "k2", "mse": "k2", "k3": "k3", "low_var_kl": "k3"}


def _masked_sum(
    x: torch.Tensor, mask: torch.Tensor, dim: int | tuple[int, ...] | None = None
) -> torch.Tensor:
    """Sum of ``x * mask``; NaN/inf in masked-out positions cannot leak in (they are zeroed first)."""
    x = torch.where(mask.bool(), x, torch.zeros_like(x))
    return (x * mask).sum() if dim is None else (x * mask).sum(dim=dim)


def masked_mean(
    x: torch.Tensor, mask: torch.Tensor, dim: int | tuple[int, ...] | None = None
) -> torch.Tensor:
    """Mean of ``x`` over positions where ``mask`` is non-zero (verl's ``masked_mean``).

    ``sum(x * mask) / sum(mask)``; an all-zero mask gives 0 instead of NaN. (verl divides by
    ``sum(mask) + 1e-8`` for the same purpose; for a non-empty 0/1 mask that is the same number in float32,
    and ours is also exact in float64.) Values under a zero mask are ignored even if NaN.

    Args:
        x: tensor of any shape, e.g. ``[B, T]``.
        mask: 0/1 (bool, int or float) tensor broadcastable to ``x``.
        dim: dimension(s) to reduce; ``None`` reduces everything to a scalar.

    Returns:
        ``x`` reduced over ``dim`` (a 0-dim tensor when ``dim is None``).
    """
    mask = mask.to(x.dtype if x.dtype.is_floating_point else torch.float32).expand_as(x)
    count = mask.sum() if dim is None else mask.sum(dim=dim)
    return _masked_sum(x, mask, dim) / torch.where(count == 0, torch.ones_like(count), count)


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from sampled-token log-probs (Schulman's k1/k2/k3).

    With ``d = logp - ref_logp``:

    * ``"k1"`` (alias ``"kl"``): ``d``  (unbiased, high variance, can be negative).
    * ``"k2"`` (alias ``"mse"``): ``0.5 * d**2``.
    * ``"k3"`` (alias ``"low_var_kl"``): with ``l = clamp(ref_logp - logp, -20, 20)``,
      ``clamp(exp(l) - l - 1, -10, 10)`` - unbiased, low variance, always >= 0. Both clamps are verl's
      ``kl_penalty(..., "low_var_kl")`` exactly; they only act when the policies are far apart.

    Args:
        logp: log-probs of the sampled tokens under the current policy, ``[B, T]`` (any shape).
        ref_logp: the same tokens' log-probs under the reference policy, same shape.
        kind: one of ``"k1" | "k2" | "k3"`` or a verl alias ``"kl" | "mse" | "low_var_kl"``.

    Returns:
        Tensor with the shape of ``logp``: the per-token KL estimate (not masked, not reduced).

    Raises:
        ValueError: for an unknown ``kind``.
    """
    canonical = _KL_ALIASES.get(kind)
    if canonical is None:
        raise ValueError(f"unknown KL penalty kind {kind!r}; expected one of {sorted(_KL_ALIASES)}")
    if canonical == "k1":
        return logp - ref_logp
    if canonical == "k2":
        return 0.5 * (logp - ref_logp).square()
    log_ratio = torch.clamp(ref_logp - logp, min=-LOG_RATIO_CLAMP, max=LOG_RATIO_CLAMP)
    kl = torch.exp(log_ratio) - log_ratio - 1
    return torch.clamp(kl, min=-KL_K3_CLAMP, max=KL_K3_CLAMP)


def agg_loss(
    loss_mat: torch.Tensor, mask: torch.Tensor, agg: LossAgg = "token-mean", horizon: int | None = None
) -> torch.Tensor:
    """Reduce a per-token loss matrix to a scalar.

    * ``"token-mean"``: ``sum(loss * mask) / sum(mask)`` over the whole batch (every token weighs the same;
      DAPO). verl ``"token-mean"``; TRL ``"bnpo"``.
    * ``"seq-mean-token-mean"``: per-sequence token mean, then the mean over sequences that have at least
      one valid token (fully-masked rows are excluded, as in verl's current ``agg_loss``). Original GRPO;
      TRL ``"grpo"``.
    * ``"seq-mean-token-sum"``: per-sequence token sum, then the mean over non-empty sequences (verl).
    * ``"seq-mean-token-sum-norm"``: ``sum(loss * mask) / (B * horizon)`` with ``B = mask.shape[0]``
      (all rows) and ``horizon = mask.shape[-1]`` unless given - a constant normaliser, no length bias
      (Dr. GRPO; identical to TRL ``"dr_grpo"`` with ``horizon = max_completion_length``). NOTE: verl's
      ``agg_loss`` for this mode divides by ``horizon`` only (no ``B``), i.e. verl's value is ``B`` times
      ours; we divide by ``B`` so the loss scale does not grow with the batch size.

    Args:
        loss_mat: per-token losses ``[B, T]``.
        mask: 0/1 tensor ``[B, T]``.
        agg: aggregation mode (see above).
        horizon: constant token normaliser for ``"seq-mean-token-sum-norm"`` (verl ``loss_scale_factor``,
            TRL ``max_completion_length``); default ``T = mask.shape[-1]``. Ignored by the other modes.

    Returns:
        0-dim tensor.
    """
    mask = mask.to(loss_mat.dtype)
    if agg == "token-mean":
        return masked_mean(loss_mat, mask)
    if agg in ("seq-mean-token-mean", "seq-mean-token-sum"):
        seq_sum = _masked_sum(loss_mat, mask, dim=-1)
        n_tok = mask.sum(dim=-1)
        seq_loss = seq_sum / n_tok.clamp(min=1) if agg == "seq-mean-token-mean" else seq_sum
        return masked_mean(seq_loss, (n_tok > 0).to(loss_mat.dtype))
    if agg == "seq-mean-token-sum-norm":
        norm = mask.shape[-1] if horizon is None else horizon
        return _masked_sum(loss_mat, mask) / (mask.shape[0] * norm)
    raise ValueError(
        f"unknown loss aggregation {agg!r}; expected 'token-mean', 'seq-mean-token-mean', "
        "'seq-mean-token-sum' or 'seq-mean-token-sum-norm'"
    )


@dataclass(frozen=True)
class PolicyLossMetrics:
    """Diagnostics of one ``policy_loss`` call; each field is a detached 0-dim tensor (``.item()`` it).

    Attributes:
        clip_frac: share of valid tokens where the clipped PPO term was the active (larger) one, i.e.
            ``pg2 > pg1`` (verl ``pg_clipfrac``).
        clip_frac_lower: share of valid tokens where the dual clip bound was active: ``A < 0`` and the
            PPO loss exceeded ``-A * c`` (verl ``pg_clipfrac_lower``); 0 when dual clip is off.
        approx_kl: masked mean of ``old_logp - logp`` (clamped log-ratio), a k1 estimate of
            KL(pi_old || pi) (verl ``ppo_kl``).
    """

    clip_frac: torch.Tensor
    clip_frac_lower: torch.Tensor
    approx_kl: torch.Tensor


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.28,
    dual_clip: float | None = None,
    agg: LossAgg = "token-mean",
    horizon: int | None = None,
) -> tuple[torch.Tensor, PolicyLossMetrics]:
    """PPO-clip policy-gradient loss with clip-higher (DAPO) and optional dual clip (verl vanilla loss).

    Per token, with ``A`` the advantage::

        log_ratio = clamp(logp - old_logp, -20, 20)          # verl's stability clamp
        ratio     = exp(log_ratio)
        pg1       = -A * ratio
        pg2       = -A * clamp(ratio, 1 - clip_low, 1 + clip_high)
        loss      = max(pg1, pg2)
        if dual_clip is not None and A < 0:  loss = min(loss, -A * dual_clip)

    then ``agg_loss(loss, mask, agg, horizon)``. Gradients flow only through ``logp``, and only where the
    unclipped term ``pg1`` is the active one.

    Args:
        logp: current-policy log-probs of the sampled tokens ``[B, T]`` (requires grad for training).
        old_logp: behaviour-policy log-probs ``[B, T]`` (treated as constants).
        advantages: ``[B]`` (broadcast over tokens) or ``[B, T]``.
        mask: 0/1 tensor ``[B, T]`` of tokens that count.
        clip_low: lower clip range, ratio >= ``1 - clip_low``.
        clip_high: upper clip range, ratio <= ``1 + clip_high`` (clip-higher when > ``clip_low``).
        dual_clip: dual-clip constant ``c > 1`` (verl ``clip_ratio_c``) bounding the loss of negative-
            advantage tokens by ``-A * c``; ``None`` disables it (verl always applies it, default 3.0).
        agg: loss aggregation mode, see ``agg_loss``.
        horizon: constant normaliser for ``agg="seq-mean-token-sum-norm"``, see ``agg_loss``.

    Returns:
        ``(loss, metrics)``: a 0-dim loss tensor and a ``PolicyLossMetrics``.

    Raises:
        ValueError: on ``dual_clip <= 1`` or mismatched shapes.
    """
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"dual_clip must be > 1 (dual-clip PPO lower bound c), got {dual_clip}")
    if logp.shape != old_logp.shape or logp.shape != mask.shape or logp.dim() != 2:
        raise ValueError(
            f"logp, old_logp and mask must share shape [B, T]; got {tuple(logp.shape)}, "
            f"{tuple(old_logp.shape)}, {tuple(mask.shape)}"
        )
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(-1)
    if advantages.shape not in (logp.shape, (logp.shape[0], 1)):
        raise ValueError(f"advantages must be [B] or [B, T] with B, T = {tuple(logp.shape)}")
    advantages = advantages.detach().to(logp.dtype).expand_as(logp)
    mask = mask.to(logp.dtype)

    log_ratio = torch.clamp(logp - old_logp.detach(), min=-LOG_RATIO_CLAMP, max=LOG_RATIO_CLAMP)
    ratio = torch.exp(log_ratio)
    pg1 = -advantages * ratio
    pg2 = -advantages * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    loss_tok = torch.maximum(pg1, pg2)

    with torch.no_grad():
        clip_frac = masked_mean(torch.gt(pg2, pg1).to(logp.dtype), mask)
        approx_kl = masked_mean(-log_ratio, mask)
        clip_frac_lower = torch.zeros((), dtype=logp.dtype, device=logp.device)

    if dual_clip is not None:
        pg3 = -advantages * dual_clip
        negative = advantages < 0
        with torch.no_grad():
            clip_frac_lower = masked_mean((torch.gt(loss_tok, pg3) & negative).to(logp.dtype), mask)
        loss_tok = torch.where(negative, torch.minimum(loss_tok, pg3), loss_tok)

    loss = agg_loss(loss_tok, mask, agg, horizon)
    return loss, PolicyLossMetrics(
        clip_frac=clip_frac.detach(), clip_frac_lower=clip_frac_lower.detach(), approx_kl=approx_kl.detach()
    )
