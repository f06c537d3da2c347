"""Every vLLM engine the project runs itself, and both ends of weight sync into them.

- ``llm``: one engine built from an :class:`~visplay.config.EngineConfig`;
- ``stage``: the Ray Data engine stage of the generation pass (its own pool, or running rollout actors);
- ``rollout``: the rollout actor that GRPO samples from and the generation pass can reuse;
- ``transports``: the trainer's end of a weight push, one class per method (object store, broadcast);
- ``weight_sync`` / ``broadcast``: the engine's end (the vLLM worker extension) and the collective group.
"""

from visplay.engine.llm import build_llm, sampling_params
from visplay.engine.stage import EngineStage

__all__ = ["EngineStage", "build_llm", "sampling_params"]
