"""The training plane: GRPO on Ray Train + DeepSpeed (the worker loop, policy log-probs, the two roles'
tasks) and when to push weights into the rollout engines (``sync``); the engines themselves and how weights
reach them live in :mod:`visplay.engine`.

Submodules are imported explicitly (``from visplay.train.trainer import train_phase``); this package
imports nothing heavy on its own.
"""
