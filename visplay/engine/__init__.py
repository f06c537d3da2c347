"""vLLM engines: how one is built from config, and the Ray Data stage that serves both roles."""

from visplay.engine.llm import build_llm, sampling_params
from visplay.engine.stage import EngineStage

__all__ = ["EngineStage", "build_llm", "sampling_params"]
