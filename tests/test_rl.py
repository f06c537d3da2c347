"""Exact-value tests for visplay.rl (pure GRPO math). Expected numbers are derived by hand in comments.

Hand-checked cases run in float64 and compare to ~1e-12; the randomised cases compare against slow,
explicit Python-loop references written here (not reusing any library code) to 1e-6.
"""

from __future__ import annotations

import math
import random

import pytest
import torch

from visplay.rl import (
    PolicyLossMetrics,
    agg_loss,
    entropy_from_logits,
    group_advantages,
    kl_penalty,
    masked_mean,
    policy_loss,
    token_logprobs,
    zero_variance_groups,
)

F64 = torch.float64
EPS = 1e-6


def close(actual: torch.Tensor, expected, atol: float = 1e-12) -> None:
    """Assert ``actual`` equals ``expected`` (number or nested list) to ``atol`` (rtol 0)."""
    # (torch.testing.assert_close costs ~7 s of imports on its first call, so compare by hand.)
    expected_t = torch.as_tensor(expected, dtype=actual.dtype)
    assert actual.shape == expected_t.shape, f"shape {tuple(actual.shape)} != {tuple(expected_t.shape)}"
    assert torch.allclose(actual, expected_t, atol=atol, rtol=0), (
        f"{actual.tolist()} != {expected_t.tolist()}"
    )


# --------------------------------------------------------------------------------------- group_advantages


def test_group_advantages_single_group_binary_rewards():
    # rewards [1, 0, 1, 0], one group:
    #   mean = 2/4 = 0.5; deviations = [+.5, -.5, +.5, -.5]; sum of squares = 4 * 0.25 = 1
    #   unbiased var = 1 / (4 - 1) = 1/3; std = sqrt(1/3) = 0.5773502691896257
    #   advantage = +-0.5 / (0.5773502691896257 + 1e-6) = +-0.8660239037870368  (0.866025... without eps)
    adv = group_advantages(torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=F64), torch.tensor([0, 0, 0, 0]))
    a = 0.8660239037870368
    close(adv, [a, -a, a, -a])


def test_group_advantages_scale_none_only_centres():
    # Dr. GRPO: same rewards, no division -> r - 0.5
    adv = group_advantages(torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=F64), [0, 0, 0, 0], scale="none")
    close(adv, [0.5, -0.5, 0.5, -0.5])


def test_group_advantages_two_interleaved_noncontiguous_groups():
    # ids [7, 3, 7, 3, 7, 3], rewards [1, 2, 0, 4, 2, 6]
    # group 7: [1, 0, 2]: mean 1, deviations [0, -1, 1], sum sq 2, var 2/2 = 1, std 1
    #          -> [0, -1/(1+eps), 1/(1+eps)] = [0, -0.9999990000010001, 0.9999990000010001]
    # group 3: [2, 4, 6]: mean 4, deviations [-2, 0, 2], sum sq 8, var 8/2 = 4, std 2
    #          -> [-2/(2+eps), 0, 2/(2+eps)] = [-0.99999950000025, 0, 0.99999950000025]
    rewards = torch.tensor([1.0, 2.0, 0.0, 4.0, 2.0, 6.0], dtype=F64)
    adv = group_advantages(rewards, torch.tensor([7, 3, 7, 3, 7, 3]))
    g7, g3 = 0.9999990000010001, 0.99999950000025
    close(adv, [0.0, -g3, -g7, 0.0, g7, g3])
    # same ids as a plain Python list
    close(group_advantages(rewards, [7, 3, 7, 3, 7, 3]), [0.0, -g3, -g7, 0.0, g7, g3])


def test_group_advantages_all_equal_group_is_exactly_zero():
    # group 0 = [0.1, 0.1, 0.1]: in float64 sum/3 = 0.10000000000000002 != 0.1, so a naive
    # (r - mean) / (std + eps) would give ~-2e-11, not 0. The all-equal rule must give exactly 0.
    # group 1 = [0, 1]: mean .5, var (.25 + .25) / 1 = .5, std 0.7071067811865476
    #          -> +-0.5 / (0.7071067811865476 + 1e-6)
    rewards = torch.tensor([0.1, 0.0, 0.1, 1.0, 0.1], dtype=F64)
    adv = group_advantages(rewards, [0, 1, 0, 1, 0])
    b = 0.5 / (math.sqrt(0.5) + EPS)
    close(adv, [0.0, -b, 0.0, b, 0.0])
    assert torch.equal(adv[[0, 2, 4]], torch.zeros(3, dtype=F64))
    assert torch.equal(
        group_advantages(rewards, [0, 1, 0, 1, 0], scale="none")[[0, 2, 4]], torch.zeros(3, dtype=F64)
    )


def test_group_advantages_singleton_group_follows_verl():
    # verl: singleton group -> mean 0, std 1 -> advantage r / (1 + eps); with scale="none" -> r.
    # 0.7 / (1 + 1e-6) = 0.6999993000007. The other group [1, 3]: mean 2, std sqrt(2) -> +-1/(sqrt2 + eps).
    rewards = torch.tensor([0.7, 1.0, 3.0], dtype=F64)
    adv = group_advantages(rewards, [5, 9, 9])
    c = 1.0 / (math.sqrt(2.0) + EPS)
    close(adv, [0.6999993000007, -c, c])
    close(group_advantages(rewards, [5, 9, 9], scale="none"), [0.7, -1.0, 1.0])


def test_group_advantages_dtype_detach_and_errors():
    rewards = torch.tensor([1.0, 0.0], requires_grad=True)
    adv = group_advantages(rewards, [0, 0])
    assert adv.dtype == torch.float32 and not adv.requires_grad
    # int rewards -> float32 result; [1, 0]: mean .5, std sqrt(.5) -> +-0.5/(0.70710678 + eps)
    close(group_advantages(torch.tensor([1, 0]), [0, 0]), [0.70710578, -0.70710578], atol=1e-6)
    with pytest.raises(ValueError, match="scale"):
        group_advantages(rewards, [0, 0], scale="batch")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shape"):
        group_advantages(rewards, [0, 0, 0])


def test_zero_variance_groups():
    # ids [0, 0, 1, 1, 2, 3, 3]; rewards [1, 1, 0, 1, 1, .5, .5]
    # group 0 [1, 1] all equal -> zero var; group 1 [0, 1] varies; group 2 singleton -> NOT zero var
    # (DAPO keeps singletons); group 3 [.5, .5] zero var.  -> 2 of 4 groups.
    mask, n_zero, n_groups = zero_variance_groups(
        torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0, 0.5, 0.5]), torch.tensor([0, 0, 1, 1, 2, 3, 3])
    )
    assert mask.tolist() == [True, True, False, False, False, True, True]
    assert (n_zero, n_groups) == (2, 4)


# --------------------------------------------------------------------------------------------- kl_penalty


def test_kl_penalty_k1_k2_k3_values():
    # logp = [-1, -2], ref = [-1.5, -1]  ->  d = logp - ref = [0.5, -1.0]
    logp = torch.tensor([[-1.0, -2.0]], dtype=F64)
    ref = torch.tensor([[-1.5, -1.0]], dtype=F64)
    # k1 = d
    close(kl_penalty(logp, ref, "k1"), [[0.5, -1.0]])
    # k2 = 0.5 d^2 = [0.5 * 0.25, 0.5 * 1] = [0.125, 0.5]
    close(kl_penalty(logp, ref, "k2"), [[0.125, 0.5]])
    # k3: l = ref - logp = [-0.5, 1.0]; exp(l) - l - 1:
    #   exp(-0.5) = 0.6065306597126334 -> 0.6065306597126334 + 0.5 - 1 = 0.10653065971263342
    #   exp(1)    = 2.718281828459045  -> 2.718281828459045 - 1 - 1   = 0.7182818284590451
    close(kl_penalty(logp, ref, "k3"), [[0.10653065971263342, 0.7182818284590451]])
    # verl aliases
    for alias, kind in (("kl", "k1"), ("mse", "k2"), ("low_var_kl", "k3")):
        assert torch.equal(kl_penalty(logp, ref, alias), kl_penalty(logp, ref, kind))


def test_kl_penalty_k3_clamps_like_verl():
    # ref - logp = 30 -> clamped to 20 -> exp(20) - 21 = 485165174.4 -> clamped to 10
    # ref - logp = -30 -> clamped to -20 -> exp(-20) + 20 - 1 = 19.000000002 -> clamped to 10
    # ref - logp = 2 (no clamp) -> exp(2) - 3 = 4.38905609893065
    logp = torch.tensor([[0.0, 30.0, 0.0]], dtype=F64)
    ref = torch.tensor([[30.0, 0.0, 2.0]], dtype=F64)
    close(kl_penalty(logp, ref, "k3"), [[10.0, 10.0, math.exp(2.0) - 3.0]])


def test_kl_penalty_unknown_kind():
    with pytest.raises(ValueError, match="'k4'"):
        kl_penalty(torch.zeros(1, 1), torch.zeros(1, 1), "k4")


# ---------------------------------------------------------------------------------------- masked_mean


def test_masked_mean_ignores_masked_nan_and_handles_empty():
    x = torch.tensor([[1.0, 2.0, float("nan")], [4.0, float("inf"), 6.0]], dtype=F64)
    m = torch.tensor([[1, 1, 0], [1, 0, 1]])
    close(masked_mean(x, m), (1 + 2 + 4 + 6) / 4)  # 13 / 4 = 3.25
    close(masked_mean(x, m, dim=-1), [1.5, 5.0])  # (1+2)/2, (4+6)/2
    close(masked_mean(x, torch.zeros_like(m)), 0.0)  # empty mask -> 0, not NaN


# ---------------------------------------------------------------------------------------- policy_loss


def _clip_case():
    """Two sequences x 3 tokens, clip_low .2 / clip_high .28 -> ratio clipped to [0.8, 1.28].

    row 0, A = +1, ratios [1.5, 1.1, 0.5]:
      t0: pg1 = -1.5, pg2 = -1.28 -> max -1.28  (upper clip active: pg2 > pg1)
      t1: pg1 = pg2 = -1.1       -> -1.1
      t2: pg1 = -0.5, pg2 = -0.8 -> -0.5       (ratio < 0.8 with A > 0: NOT clipped)
    row 1, A = -1, ratios [0.5, 1.2, 4.0]:
      t0: pg1 = 0.5, pg2 = 0.8   -> 0.8        (lower clip active)
      t1: pg1 = pg2 = 1.2        -> 1.2
      t2: pg1 = 4.0, pg2 = 1.28  -> 4.0        (ratio > 1.28 with A < 0: NOT clipped; dual clip c=3 -> 3.0)
    """
    ratios = torch.tensor([[1.5, 1.1, 0.5], [0.5, 1.2, 4.0]], dtype=F64)
    old = torch.tensor([[-1.0, -2.0, -0.5], [-3.0, -1.0, -4.0]], dtype=F64)
    logp = (old + ratios.log()).requires_grad_(True)
    return logp, old, torch.tensor([1.0, -1.0], dtype=F64), torch.ones(2, 3, dtype=F64)


def test_policy_loss_clip_active_values_and_metrics():
    logp, old, adv, mask = _clip_case()
    loss, metrics = policy_loss(logp, old, adv, mask)
    # token-mean: (-1.28 - 1.1 - 0.5 + 0.8 + 1.2 + 4.0) / 6 = 3.12 / 6 = 0.52
    close(loss, 0.52)
    assert isinstance(metrics, PolicyLossMetrics)
    close(metrics.clip_frac, 2 / 6)  # tokens (0,0) and (1,0)
    close(metrics.clip_frac_lower, 0.0)  # dual clip off
    # approx_kl = mean(old - logp) = -ln(1.5 * 1.1 * .5 * .5 * 1.2 * 4) / 6 = -ln(1.98) / 6
    close(metrics.approx_kl, -0.11384947411774064)
    assert not metrics.approx_kl.requires_grad and not metrics.clip_frac.requires_grad


def test_policy_loss_gradient_only_where_unclipped():
    logp, old, adv, mask = _clip_case()
    loss, _ = policy_loss(logp, old, adv, mask)
    loss.backward()
    # d(-A * ratio)/d logp = -A * ratio, divided by the 6 tokens of token-mean; clipped tokens -> 0.
    close(logp.grad, [[0.0, -1.1 / 6, -0.5 / 6], [0.0, 1.2 / 6, 4.0 / 6]])


def test_policy_loss_dual_clip():
    logp, old, adv, mask = _clip_case()
    loss, metrics = policy_loss(logp, old, adv, mask, dual_clip=3.0)
    # token (1,2): min(4.0, -A * c = 3.0) = 3.0 -> sum 3.12 - 1.0 = 2.12 -> 2.12 / 6 = 0.35333...
    close(loss, 2.12 / 6)
    close(metrics.clip_frac_lower, 1 / 6)
    close(metrics.clip_frac, 2 / 6)
    loss.backward()
    # the dual-clipped token is now a constant -3.0 * -1 -> zero gradient there too
    close(logp.grad, [[0.0, -1.1 / 6, -0.5 / 6], [0.0, 1.2 / 6, 0.0]])
    for bad in (1.0, 0.5):
        with pytest.raises(ValueError, match="dual_clip"):
            policy_loss(logp, old, adv, mask, dual_clip=bad)


# Ragged per-token loss matrix for the aggregation tests; masked slots hold junk (100, NaN) on purpose.
RAGGED_LOSS = [[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 100.0, float("nan")], [7.0, 100.0, 100.0, 100.0]]
RAGGED_MASK = [[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]]
# token-mean               : (1+2+3+4+5+6+7) / 7 = 28 / 7 = 4
# seq-mean-token-mean      : row means 10/4 = 2.5, 11/2 = 5.5, 7/1 = 7 -> (2.5 + 5.5 + 7) / 3 = 5
# seq-mean-token-sum       : row sums 10, 11, 7 -> 28 / 3
# seq-mean-token-sum-norm  : 28 / (B * T) = 28 / (3 * 4) = 2.3333...; horizon 8 -> 28 / 24
RAGGED_EXPECTED = {
    "token-mean": 4.0,
    "seq-mean-token-mean": 5.0,
    "seq-mean-token-sum": 28 / 3,
    "seq-mean-token-sum-norm": 28 / 12,
}


@pytest.mark.parametrize("agg", sorted(RAGGED_EXPECTED))
def test_agg_loss_ragged(agg):
    loss = torch.tensor(RAGGED_LOSS, dtype=F64)
    mask = torch.tensor(RAGGED_MASK)
    close(agg_loss(loss, mask, agg), RAGGED_EXPECTED[agg])


def test_agg_loss_fully_masked_row_and_horizon():
    # add a 4th, fully padded row: token means ignore it; seq means exclude it (verl); the Dr. GRPO
    # normaliser counts it: 28 / (4 * 4) = 1.75.
    loss = torch.tensor([*RAGGED_LOSS, [9.0, 9.0, 9.0, 9.0]], dtype=F64)
    mask = torch.tensor([*RAGGED_MASK, [0, 0, 0, 0]])
    close(agg_loss(loss, mask, "token-mean"), 4.0)
    close(agg_loss(loss, mask, "seq-mean-token-mean"), 5.0)
    close(agg_loss(loss, mask, "seq-mean-token-sum"), 28 / 3)
    close(agg_loss(loss, mask, "seq-mean-token-sum-norm"), 1.75)
    close(agg_loss(loss[:3], mask[:3], "seq-mean-token-sum-norm", horizon=8), 28 / 24)
    with pytest.raises(ValueError, match="'seq-sum'"):
        agg_loss(loss, mask, "seq-sum")  # type: ignore[arg-type]


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_policy_loss_aggregation_ragged(agg):
    # logp == old_logp -> ratio 1 (inside the clip range) -> loss_tok = -A. With per-token A = -L the
    # token losses are exactly RAGGED_LOSS, so the aggregates are the hand-computed RAGGED_EXPECTED.
    loss_mat = torch.tensor(RAGGED_LOSS, dtype=F64).nan_to_num(0.0)
    logp = torch.zeros(3, 4, dtype=F64)
    loss, metrics = policy_loss(logp, logp.clone(), -loss_mat, torch.tensor(RAGGED_MASK), agg=agg)
    close(loss, RAGGED_EXPECTED[agg])
    close(metrics.clip_frac, 0.0)
    close(metrics.approx_kl, 0.0)


def test_policy_loss_broadcasts_sequence_advantages():
    # A = [1, -2, 3] per sequence, ratio 1 -> loss_tok = -A on each valid token:
    # row0 4 x (-1), row1 2 x (+2), row2 1 x (-3) -> token-mean (-4 + 4 - 3) / 7 = -3/7
    # seq-mean-token-mean: (-1 + 2 - 3) / 3 = -2/3
    logp = torch.zeros(3, 4, dtype=F64)
    adv = torch.tensor([1.0, -2.0, 3.0], dtype=F64)
    mask = torch.tensor(RAGGED_MASK)
    close(policy_loss(logp, logp, adv, mask)[0], -3 / 7)
    close(policy_loss(logp, logp, adv, mask, agg="seq-mean-token-mean")[0], -2 / 3)
    with pytest.raises(ValueError, match="advantages"):
        policy_loss(logp, logp, torch.zeros(4, dtype=F64), mask)


def test_policy_loss_log_ratio_clamp():
    # logp - old = 30 -> clamped to 20 (verl); A = -1 -> loss = exp(20); approx_kl = -20; no grad (clamped)
    logp = torch.tensor([[30.0]], dtype=F64, requires_grad=True)
    loss, metrics = policy_loss(
        logp, torch.zeros(1, 1, dtype=F64), torch.tensor([-1.0], dtype=F64), torch.ones(1, 1)
    )
    close(loss, math.exp(20.0), atol=1e-3)
    close(metrics.approx_kl, -20.0)
    loss.backward()
    close(logp.grad, [[0.0]])


# ------------------------------------------------------------------------- randomised loop references


def _ref_group_advantages(rewards: list[float], ids: list[int], eps: float, scale: str) -> list[float]:
    """verl's algorithm written out with Python loops (plus the all-equal -> 0 rule)."""
    groups: dict[int, list[float]] = {}
    for r, g in zip(rewards, ids, strict=True):
        groups.setdefault(g, []).append(r)
    out = []
    for r, g in zip(rewards, ids, strict=True):
        vals = groups[g]
        if len(vals) == 1:
            mean, std = 0.0, 1.0
        else:
            mean = sum(vals) / len(vals)
            std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
        if len(vals) > 1 and min(vals) == max(vals):
            out.append(0.0)
        else:
            out.append((r - mean) / (std + eps) if scale == "group" else r - mean)
    return out


def test_group_advantages_random_vs_loop_reference():
    rng = random.Random(0)
    for trial in range(20):
        n = rng.randint(1, 40)
        ids = [rng.choice([3, 11, 42, 7, 1000 + trial]) for _ in range(n)]
        binary = trial % 2 == 0
        rewards = [float(rng.randint(0, 1)) if binary else rng.uniform(-2, 2) for _ in range(n)]
        for scale in ("group", "none"):
            got = group_advantages(torch.tensor(rewards, dtype=torch.float32), torch.tensor(ids), scale=scale)
            close(got, _ref_group_advantages(rewards, ids, EPS, scale), atol=1e-6)
        # zero-variance mask agrees with the reference definition
        mask, n_zero, n_groups = zero_variance_groups(torch.tensor(rewards), ids)
        group_values = {g: {r for r, i in zip(rewards, ids, strict=True) if i == g} for g in set(ids)}
        zv = {g for g, values in group_values.items() if ids.count(g) > 1 and len(values) == 1}
        assert mask.tolist() == [g in zv for g in ids]
        assert (n_zero, n_groups) == (len(zv), len(set(ids)))


def _ref_policy_loss(logp, old, adv, mask, clip_low, clip_high, dual_clip, agg):
    """PPO-clip loss per token with explicit loops; returns (loss, clip_frac, clip_frac_lower, approx_kl)."""
    n_seq, n_tok = len(logp), len(logp[0])
    tok_loss = [[0.0] * n_tok for _ in range(n_seq)]
    n_valid = clipped = lower = kl_sum = 0.0
    for i in range(n_seq):
        for t in range(n_tok):
            a = adv[i][t]
            log_ratio = min(max(logp[i][t] - old[i][t], -20.0), 20.0)
            ratio = math.exp(log_ratio)
            pg1 = -a * ratio
            pg2 = -a * min(max(ratio, 1 - clip_low), 1 + clip_high)
            loss = max(pg1, pg2)
            is_lower = False
            if dual_clip is not None and a < 0:
                is_lower = loss > -a * dual_clip
                loss = min(loss, -a * dual_clip)
            tok_loss[i][t] = loss
            if mask[i][t]:
                n_valid += 1
                clipped += pg2 > pg1
                lower += is_lower
                kl_sum += -log_ratio
    seq_sums = [sum(tok_loss[i][t] for t in range(n_tok) if mask[i][t]) for i in range(n_seq)]
    seq_lens = [sum(mask[i]) for i in range(n_seq)]
    if agg == "token-mean":
        total = sum(seq_sums) / n_valid
    elif agg == "seq-mean-token-mean":
        means = [s / k for s, k in zip(seq_sums, seq_lens, strict=True) if k > 0]
        total = sum(means) / len(means)
    else:  # seq-mean-token-sum-norm
        total = sum(seq_sums) / (n_seq * n_tok)
    return total, clipped / n_valid, lower / n_valid, kl_sum / n_valid


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
@pytest.mark.parametrize("dual_clip", [None, 3.0])
def test_policy_loss_random_vs_loop_reference(agg, dual_clip):
    gen = torch.Generator().manual_seed(1)
    for per_token_adv in (False, True):
        n_seq, n_tok = 6, 9
        old = -torch.rand(n_seq, n_tok, generator=gen) * 3
        logp = old + torch.randn(n_seq, n_tok, generator=gen) * 0.6  # ratios well outside [0.8, 1.28] too
        adv = torch.randn(n_seq, n_tok if per_token_adv else 1, generator=gen).squeeze(-1) * 2
        lengths = torch.randint(1, n_tok + 1, (n_seq,), generator=gen)
        mask = (torch.arange(n_tok)[None, :] < lengths[:, None]).float()
        loss, m = policy_loss(logp, old, adv, mask, 0.2, 0.28, dual_clip, agg)
        adv_tok = (adv if per_token_adv else adv[:, None].expand(n_seq, n_tok)).tolist()
        ref = _ref_policy_loss(logp.tolist(), old.tolist(), adv_tok, mask.tolist(), 0.2, 0.28, dual_clip, agg)
        for got, want in zip((loss, m.clip_frac, m.clip_frac_lower, m.approx_kl), ref, strict=True):
            close(got, want, atol=1e-6)


def test_kl_penalty_random_vs_loop_reference():
    gen = torch.Generator().manual_seed(2)
    logp = -torch.rand(4, 7, generator=gen, dtype=F64) * 5
    ref = -torch.rand(4, 7, generator=gen, dtype=F64) * 5
    lp, rp = logp.tolist(), ref.tolist()
    for kind, fn in (
        ("k1", lambda a, b: a - b),
        ("k2", lambda a, b: 0.5 * (a - b) ** 2),
        ("k3", lambda a, b: min(max(math.exp(b - a) - (b - a) - 1, -10.0), 10.0)),
    ):
        want = [[fn(a, b) for a, b in zip(ra, rb, strict=True)] for ra, rb in zip(lp, rp, strict=True)]
        close(kl_penalty(logp, ref, kind), want, atol=1e-9)


# ------------------------------------------------------------------------------------------ logit helpers


def test_token_logprobs_and_entropy_small_example():
    # logits [0, ln 2, ln 5] -> softmax [1, 2, 5] / 8 = [.125, .25, .625]
    # log-prob of token 2 = ln(5/8) = -0.4700036292457356; of token 0 = ln(1/8) = -2.0794415416798357
    # entropy = -(.125 ln .125 + .25 ln .25 + .625 ln .625) = 0.9743401797...
    logits = torch.tensor([[[0.0, math.log(2.0), math.log(5.0)]] * 2], dtype=F64)  # [1, 2, 3]
    close(token_logprobs(logits, torch.tensor([[2, 0]])), [[math.log(5 / 8), math.log(1 / 8)]])
    h = -(0.125 * math.log(0.125) + 0.25 * math.log(0.25) + 0.625 * math.log(0.625))
    close(entropy_from_logits(logits), [[h, h]])


def test_token_logprobs_and_entropy_random_vs_reference():
    gen = torch.Generator().manual_seed(3)
    logits = (torch.randn(3, 5, 50, generator=gen) * 4).requires_grad_(True)
    tokens = torch.randint(0, 50, (3, 5), generator=gen)
    got = token_logprobs(logits, tokens)
    want = torch.log_softmax(logits.detach().double(), -1).gather(-1, tokens[..., None]).squeeze(-1)
    close(got.double().detach(), want.tolist(), atol=1e-5)
    p = torch.softmax(logits.detach().double(), -1)
    close(entropy_from_logits(logits).double().detach(), (-(p * p.log()).sum(-1)).tolist(), atol=1e-5)
    # differentiable: d logp(token) / d logits = onehot - softmax; summed over the vocab that is 0
    got.sum().backward()
    assert logits.grad is not None
    close(logits.grad.sum(-1).double(), torch.zeros(3, 5, dtype=F64).tolist(), atol=1e-5)
    # bf16 path (row-wise log_softmax) agrees with float32 to bf16 precision
    bf16 = token_logprobs(logits.detach().bfloat16(), tokens)
    assert bf16.dtype == torch.bfloat16 and bf16.shape == (3, 5)
    assert torch.allclose(bf16.float(), want.float(), atol=0.15, rtol=0.02)
    with pytest.raises(ValueError, match="align"):
        token_logprobs(logits, tokens[:, :4])


# ---------------------------------------------------------------------------------------------------------
# PPO schedule: old log-probs before the updates, later mini-batches off-policy and clipped
# ---------------------------------------------------------------------------------------------------------
def _toy_schedule(batches, epochs, lr):
    """A two-token policy (logits theta, one position) trained by SGD through visplay.rl.ppo.run_updates."""
    from visplay.rl.ppo import run_updates

    theta = torch.zeros(2, requires_grad=True)
    optimizer = torch.optim.SGD([theta], lr=lr)

    def forward(batch):
        tokens, _ = batch
        return torch.log_softmax(theta, dim=0)[tokens].unsqueeze(1), None  # [b, 1]

    def loss(batch, current, old_logp):
        _, advantages = batch
        value, pg = policy_loss(current[0], old_logp, advantages, torch.ones_like(old_logp), 0.2, 0.28)
        return value, (value.item(), pg.clip_frac.item())

    def update(value):
        optimizer.zero_grad()
        value.backward()
        optimizer.step()

    return run_updates(batches, epochs, forward, loss, update), theta.detach()


def test_the_second_mini_batch_is_off_policy_and_clipped():
    # Two mini-batches of one sample each: token 0, advantage +1. Old log-prob (before any update) log 1/2.
    # Update 1 (on-policy): ratio 1, loss -1, nothing clipped; d(-ratio)/d theta = -(1 - p0, -p1) =
    # (-1/2, +1/2), so SGD with lr = ln 3 moves theta to (ln3/2, -ln3/2): p0 = e^{ln3}/(e^{ln3}+1) = 3/4.
    # Update 2: ratio = (3/4)/(1/2) = 1.5 > 1 + 0.28 → the clipped term -1.28 is active: loss -1.28,
    # clip_frac 1, no gradient (theta stays).
    sample = (torch.tensor([0]), torch.tensor([1.0]))
    figures, theta = _toy_schedule([sample, sample], epochs=1, lr=math.log(3))
    assert figures == [pytest.approx((-1.0, 0.0)), pytest.approx((-1.28, 1.0))]
    assert theta.tolist() == pytest.approx([math.log(3) / 2, -math.log(3) / 2], abs=1e-6)
    # A second epoch replays both against the same old log-probs: both clipped now.
    figures, _ = _toy_schedule([sample, sample], epochs=2, lr=math.log(3))
    assert [f[1] for f in figures] == [0.0, 1.0, 1.0, 1.0]
    # One update per step (the old behaviour): ratio 1, never clipped, whatever the step size.
    both = (torch.tensor([0, 0]), torch.tensor([1.0, 1.0]))
    figures, _ = _toy_schedule([both], epochs=1, lr=math.log(3))
    assert figures == [pytest.approx((-1.0, 0.0))]


def test_minibatch_count_and_even_split():
    from visplay.rl.ppo import minibatch_count, split_even

    assert minibatch_count(32, 2, 16) == 2  # 32 rollouts, 16 per update
    assert minibatch_count(32, 2, None) == 1
    assert minibatch_count(3, 2, 1) == 2  # a rank holds at most 2 of 3: no rank gets an empty mini-batch
    assert split_even([1, 2, 3, 4, 5], 2) == [[1, 2, 3], [4, 5]]
    assert split_even([1], 2) == [[1], []]
