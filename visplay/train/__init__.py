"""The training plane: GRPO on Ray Train + DeepSpeed, and the rollout actors it samples from and syncs.

Submodules are imported explicitly (``from visplay.train.rollout import start_rollout_actors``); this
package imports nothing heavy on its own.
"""
