"""Pure GRPO math on torch tensors: advantages, KL estimators, the clipped policy loss, logit helpers.

Nothing here touches Ray, vLLM, DeepSpeed or files, so every function is unit-testable on a CPU.
Conventions follow verl (``verl/trainer/ppo/core_algos.py``); see each docstring for the details.
"""

from visplay.rl.advantages import group_advantages, zero_variance_groups
from visplay.rl.logits import entropy_from_logits, token_logprobs
from visplay.rl.losses import LossAgg, PolicyLossMetrics, agg_loss, kl_penalty, masked_mean, policy_loss

__all__ = [
    "LossAgg",
    "PolicyLossMetrics",
    "agg_loss",
    "entropy_from_logits",
    "group_advantages",
    "kl_penalty",
    "masked_mean",
    "policy_loss",
    "token_logprobs",
    "zero_variance_groups",
]
