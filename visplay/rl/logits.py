"""Per-token quantities derived from model logits: sampled-token log-probs and policy entropy.

Both work on the response part of a causal LM's output, ``logits [B, T, V]`` aligned so that
``logits[b, t]`` is the distribution that produced ``tokens[b, t]``. They loop over the batch rows so that
peak memory stays at one row's ``[T, V]`` temporary instead of a full ``[B, T, V]`` copy.
"""

from __future__ import annotations

import torch

__all__ = ["entropy_from_logits", "token_logprobs"]


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Log-probability of each chosen token: ``log_softmax(logits)[..., tokens]``.

    For float32/float64 logits this is ``logits[token] - logsumexp(logits)`` with the logsumexp taken one
    batch row at a time, so no ``[B, T, V]`` log-softmax is ever materialised. For half precision
    (bf16/fp16), where that subtraction loses accuracy, each row goes through ``log_softmax`` instead
    (the approach of verl's ``logprobs_from_logits_v2`` and TRL's ``selective_log_softmax``).

    Args:
        logits: ``[B, T, V]`` unnormalised scores (any leading shape ``[B, ...]`` works).
        tokens: ``[B, T]`` integer token ids in ``[0, V)``.

    Returns:
        ``[B, T]`` tensor of log-probs in the dtype of ``logits``; differentiable w.r.t. ``logits``.
    """
    if logits.shape[:-1] != tokens.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and tokens {tuple(tokens.shape)} do not align")
    index = tokens.long().unsqueeze(-1)
    if logits.dtype in (torch.float32, torch.float64):
        chosen = torch.gather(logits, dim=-1, index=index).squeeze(-1)
        if logits.shape[0] == 0:
            return chosen
        log_norm = torch.stack([torch.logsumexp(row, dim=-1) for row in logits])
        return chosen - log_norm
    rows = [
        torch.gather(torch.log_softmax(row, dim=-1), dim=-1, index=row_index).squeeze(-1)
        for row, row_index in zip(logits, index, strict=True)
    ]
    return torch.stack(rows) if rows else logits.new_zeros(tokens.shape)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the softmax distribution at each position (verl's ``entropy_from_logits``).

    ``H = logsumexp(z) - sum(softmax(z) * z)``, which equals ``-sum(p * log p)`` without ever taking the
    log of a (possibly underflowed) probability.

    Args:
        logits: ``[B, T, V]`` unnormalised scores (any leading shape ``[B, ...]`` works).

    Returns:
        ``[B, T]`` entropies in nats, in the dtype of ``logits``; differentiable w.r.t. ``logits``.
    """
    if logits.shape[0] == 0:
        return logits.new_zeros(logits.shape[:-1])
    rows = [
        torch.logsumexp(row, dim=-1) - torch.sum(torch.softmax(row, dim=-1) * row, dim=-1) for row in logits
    ]
    return torch.stack(rows)
