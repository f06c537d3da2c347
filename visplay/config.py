"""The typed schema of every setting, YAML loading, dotted overrides and validation.

One schema covers the whole system. Defaults live here and only here; YAML files in ``configs/``
override them, and ``a.b.c=value`` command-line overrides go last::

    cfg = load_config("configs/tiny-cpu.yaml", ["generation.answers_per_question=4"])

Every field carries a docstring (pydantic turns it into the field description), so
``visplay config-reference`` prints the reference table that README.md shows.
A bad value raises :class:`ConfigError` whose message names the dotted field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)


class _Section(BaseModel):
    """Base of every config section: unknown keys are errors, NaN and inf are refused in every float field,
    field docstrings become descriptions."""

    model_config = ConfigDict(
        extra="forbid", use_attribute_docstrings=True, validate_assignment=True, allow_inf_nan=False
    )


class TinyModelConfig(_Section):
    """Shape of the offline tiny Qwen2.5-VL that the embedded default builds from a seed."""

    seed: int = 0
    """Seed for the tokenizer training corpus order and the random weights."""
    vocab_size: int = Field(2048, ge=512)
    """Byte-level BPE vocabulary size, special tokens included."""
    hidden_size: int = Field(128, ge=32)
    """Text decoder hidden size."""
    num_layers: int = Field(2, ge=1)
    """Text decoder layers."""
    num_heads: int = Field(2, ge=1)
    """Attention heads; head_dim = hidden_size / num_heads must be 64 or more for vLLM's CPU attention."""
    num_kv_heads: int = Field(1, ge=1)
    """Key/value heads (grouped-query attention)."""
    intermediate_size: int = Field(256, ge=32)
    """Text MLP width."""
    vision_depth: int = Field(2, ge=1)
    """Vision transformer blocks."""
    vision_hidden_size: int = Field(64, ge=16)
    """Vision transformer width."""
    vision_heads: int = Field(1, ge=1)
    """Vision attention heads."""
    image_size: int = Field(112, ge=28)
    """Images are resized to image_size x image_size by the processor (multiples of 28 keep token counts exact)."""
    max_position_embeddings: int = Field(4096, ge=512)
    """Longest sequence the model accepts."""

    @model_validator(mode="after")
    def _check_heads(self) -> TinyModelConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError("hidden_size must be divisible by num_heads")
        if self.hidden_size // self.num_heads < 64:
            raise ValueError("hidden_size / num_heads (head_dim) must be >= 64 for vLLM's CPU attention")
        if self.num_heads % self.num_kv_heads:
            raise ValueError("num_heads must be divisible by num_kv_heads")
        return self


class CorpusConfig(_Section):
    """Where unlabeled images come from, and how bad files are recognised."""

    path: str = "runs/corpus/images"
    """A folder of images (jpg/png/webp, nested) or a parquet file/folder with an image-bytes column."""
    parquet_image_column: str = "image"
    """Column that holds encoded image bytes when `path` is parquet."""
    synthetic_n: int = Field(64, ge=0)
    """Synthetic scenes to generate at `path` when it does not exist (0: never generate)."""
    synthetic_seed: int = 1
    """Seed of the synthetic generator for the unlabeled training split."""
    synthetic_kinds: list[Literal["shapes", "count", "chart", "objects"]] = Field(
        default_factory=lambda: ["shapes", "count", "chart"], min_length=1
    )
    """The synthetic world: scene kinds of every split this config draws (the unlabeled corpus, the
    bootstrap's labeled split, the held-out split), cycling in this order. ``[objects]`` is the simple
    world of three skills (colour, shape, count of big shapes; visplay/world/corpus.py)."""
    max_pixels: int = Field(40_000_000, ge=1)
    """Images with more pixels are rejected as decompression bombs (reason too_many_pixels)."""
    max_file_bytes: int = Field(64 * 1024 * 1024, ge=1)
    """Files larger than this are rejected unread (reason too_many_pixels)."""
    limit: int | None = Field(None, ge=1)
    """Use at most this many images (after sorting by path); None uses all."""


class ModelsConfig(_Section):
    """Which checkpoints play the two roles."""

    base: str = "runs/tiny-model"
    """Base VLM checkpoint directory (HF format). The embedded default builds a tiny one here if missing."""
    build_tiny_if_missing: bool = True
    """Build the offline tiny Qwen2.5-VL at `base` when the directory does not exist."""
    tiny: TinyModelConfig = TinyModelConfig()
    """Shape of the tiny model (embedded default only)."""
    bootstrap_steps: int = Field(0, ge=0)
    """Labeled warm-up steps applied to a freshly built tiny model (0: keep it random). The stand-in for
    an instruction-tuned checkpoint; the only place labels are used (visplay/world/bootstrap.py)."""
    bootstrap_images: int = Field(96, ge=1)
    """Labeled synthetic images for the warm-up (a split disjoint from the unlabeled corpus)."""
    bootstrap_seed: int = 7
    """Seed of the labeled warm-up split and of the warm-up itself."""
    bootstrap_lr: float = Field(5e-3, gt=0)
    """Peak learning rate of the warm-up (linear ramp over 10% of the steps, then cosine decay to 10%)."""
    bootstrap_questioner_share: float = Field(0.5, ge=0, le=1)
    """Share of each warm-up batch that trains the Questioner's format; the rest trains the Reasoner's
    answers (the visual skill: more of the batch learns to see faster)."""
    questioner: str | None = None
    """Checkpoint the Questioner starts from in standalone jobs (None: `base`); the loop job sets its own."""
    reasoner: str | None = None
    """Checkpoint the Reasoner starts from in standalone jobs (None: `base`); the loop job sets its own."""


class EngineConfig(_Section):
    """One vLLM engine actor (a Ray Data `map_batches` stage or a rollout actor)."""

    num_gpus: float = Field(0.0, ge=0)
    """GPUs reserved per engine actor (0 on CPU; tensor_parallel_size on a GPU cluster)."""
    num_cpus: float = Field(1.0, gt=0)
    """CPUs reserved per engine actor."""
    tensor_parallel_size: int = Field(1, ge=1)
    """vLLM tensor parallelism inside one engine."""
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    """Share of accelerator memory for weights+KV cache (ignored when kv_cache_memory_bytes is set)."""
    kv_cache_memory_bytes: int | None = Field(None, ge=1 << 20)
    """Fixed KV-cache size in bytes (the CPU build: a share of RAM is fragile on small machines)."""
    max_model_len: int = Field(2048, ge=128)
    """Longest prompt+completion the engine schedules."""
    max_images_per_prompt: int = Field(1, ge=1)
    """Images one prompt may carry (vLLM's ``limit_mm_per_prompt``); generation sends one, evaluation up to
    7 (MMMU's ``image_1`` … ``image_7``: the eval engine sets it higher), serving takes its engine's value.
    Each extra image reserves encoder memory when the engine starts."""
    max_num_seqs: int = Field(64, ge=1)
    """Sequences scheduled together."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weights/activation dtype inside vLLM."""
    enforce_eager: bool = True
    """Skip graph capture/compilation (fast start; use False on GPUs for throughput)."""
    chunked_prefill: bool = True
    """vLLM chunked prefill. Off for the CPU build: vLLM 0.32 rewinds a seeded request's sampler when it drops
    the token of a partial prefill, which CPU generators cannot do ("CPU Generator does not use offset")."""
    in_process: bool = False
    """Run vLLM's engine core and its one worker inside the actor's process instead of two child processes
    (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, uniproc executor). On CPU this skips two Python+torch+vLLM
    start-ups, about two thirds of an engine's start time; needs tensor_parallel_size 1."""
    min_actors: int = Field(1, ge=1)
    """Smallest engine actor pool (autoscaling lower bound)."""
    max_actors: int = Field(1, ge=1)
    """Largest engine actor pool (autoscaling upper bound)."""
    batch_size: int = Field(8, ge=1)
    """Rows per `map_batches` call: the prompts one engine `generate` call gets. vLLM batches better with more
    (bench/generation.py, tiny model on CPU: a bare engine fed 8 prompts per call ran at 0.6-0.7 of one fed 64)."""
    max_restarts: int = Field(2, ge=0)
    """Times Ray restarts a crashed engine actor before the stage fails."""
    resources: dict[str, float] = {}
    """Custom Ray resources per engine actor, e.g. ``{engine_node: 1}`` to place engines on the
    ``gpu_engines`` group of cluster.yaml (the autoscaler then adds nodes of that group)."""

    @model_validator(mode="after")
    def _check_pool(self) -> EngineConfig:
        if self.max_actors < self.min_actors:
            raise ValueError("max_actors must be >= min_actors")
        if self.in_process and self.tensor_parallel_size > 1:
            raise ValueError("in_process needs tensor_parallel_size 1")
        return self


class RolloutEngineConfig(EngineConfig):
    """The rollout engines: vLLM actors that a job holds from start to end, a fixed number per role (GRPO
    samples from them and pushes weights into them; not an autoscaling pool)."""

    per_role: int = Field(1, ge=1)
    """Rollout engines per role (questioner, reasoner): jobs/evolve.py and jobs/experiment.py hold
    2 x per_role for the whole job, a standalone GRPO job per_role for its policy (and per_role for its
    frozen Reasoner). A GRPO step's prompts, the frozen Reasoner's answers and, with
    ``generation.reuse_rollout_engines``, generation and evaluation batches are spread over a role's engines."""
    min_actors: int = 1
    """Not used: rollout engines are not a pool (``per_role`` sets their number); must stay 1."""
    max_actors: int = 1
    """Not used: rollout engines are not a pool (``per_role`` sets their number); must stay 1."""

    @field_validator("min_actors", "max_actors")
    @classmethod
    def _not_a_pool(cls, value: int) -> int:
        if value != 1:
            raise ValueError(
                "rollout engines are not an autoscaling pool: set rollout_engine.per_role (engines per role) "
                "and leave min_actors/max_actors at 1"
            )
        return value


class SamplingConfig(_Section):
    """vLLM sampling for one role."""

    temperature: float = Field(1.0, ge=0)
    """Softmax temperature (0 is greedy)."""
    top_p: float = Field(1.0, gt=0, le=1)
    """Nucleus sampling mass."""
    max_tokens: int = Field(96, ge=1)
    """Longest completion."""


class GenerationConfig(_Section):
    """One question-generation pass: images -> questions -> answers -> votes -> filter."""

    questions_per_image: int = Field(2, ge=1)
    """k: questioner samples per image."""
    answers_per_question: int = Field(8, ge=1)
    """m: reasoner samples per question; their majority is the silver label."""
    questioner_sampling: SamplingConfig = SamplingConfig(temperature=1.0, max_tokens=96)
    """Sampling of the questioner."""
    reasoner_sampling: SamplingConfig = SamplingConfig(temperature=1.0, max_tokens=96)
    """Sampling of the reasoner."""
    questioner_engine: EngineConfig = EngineConfig()
    """Engine actors of the questioner stage."""
    reasoner_engine: EngineConfig = EngineConfig()
    """Engine actors of the reasoner stage."""
    p_low: float = Field(0.3, ge=0, le=1)
    """Keep questions whose agreement p is at least this."""
    p_high: float = Field(0.8, ge=0, le=1)
    """Keep questions whose agreement p is at most this."""
    max_questions_per_image: int = Field(4, ge=1)
    """Corpus-level cap of kept questions per image."""
    dedup_scope: Literal["corpus", "image"] = "corpus"
    """Drop a kept question whose normalised text repeats anywhere in the output ('corpus') or on its image."""
    score_batch_size: int = Field(16, ge=1)
    """Questions per scoring batch: the window of the BLEU diversity clusters."""
    shard_size: int = Field(1024, ge=1)
    """Offered items (files, or parquet rows in whole row groups) per shard: the unit a pass resumes by. A
    shard's part files are written as its rows finish and it is marked when all its items are on disk; a
    killed pass redoes only unmarked shards. 1,000-10,000 at 1M images (100-1,000 markers)."""
    decode_batch_size: int = Field(32, ge=1)
    """Items read and decoded per Ray Data task (one block): bounds the image bytes in flight per task."""
    reuse_rollout_engines: bool = False
    """In jobs/evolve.py, generate (and evaluate) with the job's warm rollout engines (``rollout_engine.per_role``
    per role) instead of starting engine pools; the embedded default sets it (an engine start costs about a
    minute on CPU), so does the one-node GPU config (no GPU left for pools); on a cluster the autoscaling
    pools of questioner_engine/reasoner_engine scale with the corpus."""
    oracle: bool = False
    """Skip the pass: the question set is the synthetic corpus's own labeled questions with their gold
    answers as silver labels (visplay/generation/oracle.py). The experiment's ``oracle`` arm, the ceiling of
    the label-free arms; an error on a corpus without ``ground_truth.jsonl``."""

    @model_validator(mode="after")
    def _check_band(self) -> GenerationConfig:
        if self.p_low > self.p_high:
            raise ValueError("p_low must be <= p_high")
        return self


class RewardConfig(_Section):
    """Questioner and reasoner rewards (see visplay.rewards)."""

    uncertainty_form: Literal["paper", "code"] = "paper"
    """'paper': 1 - 2|p - 1/2|; 'code': min(p, 1 - p)."""
    invalid_penalty: float = -1.0
    """Questioner reward for unparseable output."""
    clip_at_zero: bool = False
    """Clip the valid questioner reward (uncertainty - diversity) at 0."""
    bleu_distance_threshold: float = Field(0.5, gt=0, le=1)
    """Average-linkage cut on 1 - BLEU distances for the diversity clusters."""
    diversity_weight: float = Field(1.0, ge=0)
    """Multiplies the BLEU-cluster penalty in the Questioner's reward (0: no diversity penalty, an ablation)."""
    reasoner_format_weight: float = Field(0.1, ge=0, le=1)
    """Share of the reasoner reward paid for a well-formed \\boxed{} answer."""


class FileWeightSync(_Section):
    """Weights through the Ray object store and a shared-memory safetensors file per engine (one host per
    engine; works with any actor, a restarted one included)."""

    kind: Literal["file"] = "file"
    """This variant."""


class BroadcastWeightSync(_Section):
    """Trainer rank 0 broadcasts each tensor over the trainer's collective backend (gloo on CPU, NCCL GPU to
    GPU) to every engine worker: no CPU copy, no object store."""

    kind: Literal["broadcast"] = "broadcast"
    """This variant."""
    timeout_s: float = Field(300.0, gt=0)
    """Seconds any side waits for the others in a collective before failing."""


def _weight_sync_shorthand(value: Any) -> Any:
    """``"broadcast"`` -> ``{"kind": "broadcast"}`` (the one-word form of the command line and YAML)."""
    return {"kind": value} if isinstance(value, str) else value


WeightSyncConfig = Annotated[
    FileWeightSync | BroadcastWeightSync, Field(discriminator="kind"), BeforeValidator(_weight_sync_shorthand)
]
"""One of the weight-sync variants, chosen by ``kind``."""


class GRPOConfig(_Section):
    """GRPO updates on Ray Train + DeepSpeed for one role."""

    enabled: bool = True
    """Train this role in jobs/evolve.py (False: it keeps its starting weights every iteration; with
    ``questioner_grpo.enabled=false`` the questions come from the fixed base Questioner, a control)."""
    steps: int = Field(4, ge=1)
    """Optimizer steps per training phase."""
    prompts_per_step: int = Field(4, ge=1)
    """Prompts (images or questions) per step; each gets `group_size` rollouts."""
    group_size: int = Field(4, ge=2)
    """Rollouts per prompt (the GRPO group)."""
    lr: float = Field(1e-5, gt=0)
    """AdamW learning rate."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW weight decay."""
    kl_coef: float = Field(0.01, ge=0)
    """Coefficient of the KL-to-reference loss term (0 disables the reference model)."""
    kl_kind: Literal["k1", "k2", "k3"] = "k3"
    """KL estimator."""
    ppo_epochs: int = Field(1, ge=1)
    """Passes over a step's rollouts (``visplay.rl.ppo``). Every update after the step's first is off-policy,
    which is where the clip range acts."""
    mini_batch_size: int | None = Field(None, ge=1)
    """Rollouts per optimizer update, counted over all workers (None: the whole step in one update, ratio 1,
    the clip inactive). ``prompts_per_step x group_size / mini_batch_size`` updates per epoch (EasyR1: 4)."""
    clip_low: float = Field(0.2, gt=0, lt=1)
    """PPO lower clip (ratio >= 1 - clip_low)."""
    clip_high: float = Field(0.28, gt=0)
    """PPO upper clip, clip-higher (ratio <= 1 + clip_high)."""
    dual_clip: float | None = Field(None, gt=1)
    """Dual-clip constant c > 1 for negative advantages (None: off)."""
    loss_agg: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"] = "token-mean"
    """How per-token losses are aggregated."""
    advantage_scale: Literal["group", "none"] = "group"
    """'group': divide by group std (GRPO); 'none': only centre (Dr. GRPO)."""
    filter_zero_variance_groups: bool = True
    """Drop groups whose rewards are all equal (DAPO dynamic sampling)."""
    sync_every: int = Field(1, ge=1)
    """Push weights into the rollout engines every this many optimizer steps."""
    weight_sync: WeightSyncConfig = Field(default_factory=lambda: FileWeightSync())
    """How pushed weights reach the engines (visplay.engine.transports); ``weight_sync=broadcast`` is short
    for ``weight_sync.kind=broadcast``."""
    save_every: int = Field(2, ge=1)
    """Write resumable training state every this many steps."""
    keep_checkpoints: int = Field(2, ge=1)
    """Newest ``state/step_*`` training states kept per phase; older ones are removed once a newer one is
    durable and named in ``latest.json`` (a ZeRO-3 state of a 7B model is ~100 GB). ``final/`` always stays."""
    zero_stage: Literal[2, 3] = 2
    """DeepSpeed ZeRO stage."""
    offload_optimizer: bool = False
    """DeepSpeed optimizer CPU offload."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass."""
    bf16: bool = False
    """bf16 training (GPU); fp32 on CPU."""
    max_grad_norm: float = Field(1.0, gt=0)
    """Gradient clipping norm."""


class RayConfig(_Section):
    """Where and with what resources the job runs."""

    address: str | None = None
    """Ray cluster address; None starts a local Ray (the embedded default) or joins RAY_ADDRESS."""
    num_cpus: int | None = Field(None, ge=1)
    """CPUs for a local Ray (None: all)."""
    train_workers: int = Field(2, ge=1)
    """Ray Train workers per GRPO phase."""
    cpus_per_train_worker: float = Field(1.0, gt=0)
    """CPUs per Ray Train worker."""
    gpus_per_train_worker: float = Field(0.0, ge=0)
    """GPUs per Ray Train worker (0 on CPU)."""
    train_worker_resources: dict[str, float] = {}
    """Custom Ray resources per Ray Train worker, e.g. ``{trainer_node: 1}`` for cluster.yaml's
    ``gpu_trainers`` group."""
    collective_backend: Literal["gloo", "nccl"] = "gloo"
    """torch.distributed backend: gloo on CPU, nccl on GPUs."""
    cluster_config: str | None = None
    """The Ray cluster-launcher YAML the cluster was started from (e.g. ``cluster.yaml``): the fit check
    before a job starts anything counts its head node and worker node types up to their ``max_workers`` as
    what the cluster can grow to (None: only the resources the cluster has now; ``visplay plan``)."""
    fit_check: bool = True
    """Stop before anything starts when the job's resource plan (``visplay plan``) cannot fit the cluster,
    naming the phase, the actor and the missing resource (False: only log the comparison, e.g. on an
    autoscaling cluster whose limits no launcher YAML describes)."""


class ServeConfig(_Section):
    """The Reasoner behind an OpenAI-compatible API (Ray Serve LLM, ``jobs/serve.py``)."""

    checkpoint: str | None = None
    """HF checkpoint to serve; None: the Reasoner of the last finished iteration of this run, else the base."""
    model_name: str = "visplay-reasoner"
    """The ``model`` id clients send and responses carry (never the checkpoint's path)."""
    host: str = "127.0.0.1"
    """Address the HTTP proxy binds (0.0.0.0 to serve beyond this machine: set ``api_key_env`` too)."""
    port: int = Field(8000, ge=1, le=65535)
    """HTTP port."""
    api_key_env: str | None = None
    """Name of an environment variable of the launching process holding the API key; requests must then
    send ``Authorization: Bearer <key>`` (401 otherwise). None: no key (a warning when ``host`` is not
    loopback). Only the key's SHA-256 reaches the replicas."""
    engine: EngineConfig = EngineConfig()
    """The engine of each replica (``num_cpus``/``num_gpus``/``resources`` are the replica's bundle). The Ray
    Data fields (``batch_size``, ``min_actors``/``max_actors``, ``max_restarts``) and ``in_process`` do not
    apply: Ray Serve LLM runs vLLM's engine core in a child process of each replica (its executor: processes
    on CPU, Ray workers on GPU) and replaces a failed replica itself."""
    min_replicas: int = Field(1, ge=1)
    """Autoscaling lower bound (engine replicas and ingress replicas)."""
    max_replicas: int = Field(1, ge=1)
    """Autoscaling upper bound."""
    target_ongoing_requests: float = Field(8.0, gt=0)
    """Requests in flight per engine replica the autoscaler aims for."""
    max_ongoing_requests: int = Field(64, ge=1)
    """Requests one engine replica works on at once (vLLM batches them continuously)."""
    max_queued_requests: int = Field(64, ge=0)
    """Requests waiting for an engine replica beyond those in flight; more get 503 with ``Retry-After``."""
    request_timeout_s: float = Field(300.0, gt=0)
    """Seconds a request may wait for its (first) response before it gets 504."""
    retry_after_s: int = Field(5, ge=1)
    """``Retry-After`` of a 503 (queue full, engine being replaced)."""
    max_body_bytes: int = Field(24 << 20, ge=1024)
    """Largest request body (counted while it is read; larger: 413)."""
    max_image_bytes: int = Field(8 << 20, ge=1)
    """Largest decoded image accepted (larger: 413)."""
    max_image_pixels: int = Field(4_000_000, ge=1)
    """Largest image (width x height) accepted (larger: 413)."""
    max_tokens: int = Field(256, ge=1)
    """Upper bound and default of a request's ``max_tokens``."""
    max_n: int = Field(8, ge=1)
    """Upper bound of a request's ``n``."""
    add_reasoner_instruction: bool = True
    """Append the training-time "reason step by step ... \\boxed{}" instruction to the user's question."""

    @model_validator(mode="after")
    def _check_replicas(self) -> ServeConfig:
        if self.max_replicas < self.min_replicas:
            raise ValueError("max_replicas must be >= min_replicas")
        return self


BENCHMARK_NAMES = (
    "mmvet",
    "realworldqa",
    "visnumbench",
    "mathverse",
    "mathvision",
    "hallusionbench",
    "mathvista",
    "mmstar",
)
"""Benchmarks read from one file or folder without further settings (``visplay.eval.benchmarks.BENCHMARKS``
holds their classes, MMMU's too; README "Evaluation" lists the layouts each reads)."""


class _BenchmarkFileBase(_Section):
    path: str
    """The release as downloaded: a parquet/JSON/JSONL file or a folder (the layouts each benchmark reads
    are listed in README "Evaluation")."""
    limit: int | None = Field(None, ge=1)
    """Evaluate only the first `limit` examples (None: all)."""
    judge_prompt: str | None = None
    """The judge's prompt file for this benchmark (placeholders ``{question}``, ``{options}``, ``{answer}``,
    ``{prediction}``); None: the project's own prompt of the benchmark's kind (``visplay/eval/prompts/``).
    A user who needs a benchmark's official judge prompt points this at their copy."""


class BenchmarkFile(_BenchmarkFileBase):
    """One benchmark release read as it is (every benchmark but MMMU)."""

    name: Literal[BENCHMARK_NAMES]  # type: ignore[valid-type]
    """The benchmark: one of ``BENCHMARK_NAMES``."""
    split: str | None = None
    """The split where the release holds several side by side (MathVista's ``data/`` folder: ``testmini``
    or ``test``); None: the benchmark's default. A benchmark without splits refuses one."""


class MMMUFile(_BenchmarkFileBase):
    """MMMU: one subject's parquet, a subject folder or the repo root of subject folders, of one split."""

    name: Literal["mmmu"]
    """The benchmark."""
    split: Literal["dev", "validation", "test"] = "validation"
    """The split read where a folder holds several side by side (``test`` has no public answers)."""


AnyBenchmarkFile = Annotated[BenchmarkFile | MMMUFile, Field(discriminator="name")]
"""A benchmark entry of ``eval.benchmarks``, told apart by ``name``."""


class JudgeConfig(_Section):
    """An OpenAI-compatible LLM judge (this project's Serve endpoint, a local vLLM server or a hosted API)."""

    base_url: str
    """Endpoint root, e.g. ``http://127.0.0.1:8000/v1``."""
    model: str
    """Judge model name sent with every request (part of the cache key)."""
    api_key_env: str | None = None
    """Environment variable that holds the API key (None: no key); the key itself never goes in a config."""
    max_retries: int = Field(4, ge=0)
    """Retries of a request on connection errors, HTTP 429 and 5xx, with exponential backoff."""
    max_tokens: int = Field(16, ge=1)
    """Longest judge reply (a verdict is a word or a number); part of the cache key."""
    cache_path: str | None = None
    """Verdict cache (JSONL) keyed by everything that changes a verdict (endpoint, judge model, max_tokens,
    the full prompt); None: ``judge_cache.jsonl`` in the evaluation's output folder. Safe for several
    evaluations writing at once; re-scoring with a warm cache makes no requests."""


class EvalConfig(_Section):
    """Evaluation of Reasoner checkpoints (``jobs/evaluate.py``, and after each iteration of the loop)."""

    benchmarks: list[AnyBenchmarkFile] = []
    """Local benchmark files to evaluate on (none by default: nothing can be downloaded here)."""
    synthetic_n: int = Field(48, ge=0)
    """Scenes of the labeled held-out synthetic split, scored exactly (0: no synthetic benchmark)."""
    synthetic_seed: int = 3
    """Seed of the held-out split (split name ``heldout``: its images differ from bootstrap and train)."""
    synthetic_path: str = "runs/heldout"
    """Where the held-out split is generated when missing."""
    max_tokens: int = Field(128, ge=1)
    """Longest answer (greedy decoding, temperature 0)."""
    samples: int = Field(0, ge=0)
    """Also sample this many answers per held-out synthetic question at ``generation.reasoner_sampling``
    for sampled pass@1 and maj@k (visplay/eval/sampled.py; ``sampled.jsonl``); 0: greedy only."""
    engine: EngineConfig = EngineConfig(max_images_per_prompt=7)
    """Engine of the evaluation stage (the loop job answers with its warm Reasoner engine instead)."""
    judge: JudgeConfig | None = None
    """LLM judge; None: rule-based scores only."""
    during_evolve: bool = True
    """``jobs/evolve.py`` evaluates the base model once and every iteration's Reasoner."""


class ArmConfig(_Section):
    """One arm of the self-evolution experiment (jobs/experiment.py): the loop job with some settings changed."""

    name: str = Field(pattern=r"^[a-z0-9_]+$")
    """Short id: the arm's run directory and its row in the report."""
    description: str = ""
    """What the arm tests, one line for the report."""
    overrides: list[str] = []
    """Dotted overrides on top of the experiment's config, e.g. ``rewards.diversity_weight=0``."""


def _default_arms() -> list[ArmConfig]:
    return [
        ArmConfig(name="visplay", description="the full method: Questioner and Reasoner GRPO"),
        ArmConfig(
            name="fixed_questioner",
            description="control: no Questioner rewards; questions from the fixed bootstrap Questioner",
            overrides=["questioner_grpo.enabled=false"],
        ),
        ArmConfig(
            name="no_diversity",
            description="ablation: no diversity penalty in the Questioner reward",
            overrides=["rewards.diversity_weight=0"],
        ),
        ArmConfig(
            name="no_band",
            description="ablation: no difficulty band (every answered question with a silver label is kept)",
            overrides=["generation.p_low=0", "generation.p_high=1"],
        ),
        ArmConfig(
            name="oracle",
            description="ceiling: the same Reasoner GRPO on the corpus's labeled questions, gold answers as "
            "labels; no Questioner",
            overrides=["generation.oracle=true", "questioner_grpo.enabled=false"],
        ),
    ]


class ExperimentConfig(_Section):
    """jobs/experiment.py: every arm's self-evolution run from the shared base ``models.base``, per seed,
    then one report."""

    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    """One run per arm for each seed (the run's global seed: sampling, data order, GRPO). The report's
    confidence intervals are over these."""
    arms: list[ArmConfig] = Field(default_factory=_default_arms, min_length=1)
    """The runs compared. The base model with no further training (iteration 0) is always reported."""
    report_dir: str = "docs/experiment"
    """Where the report (README.md, accuracy.png, results.json) is written."""
    overrides: list[str] = []
    """Dotted overrides every run of the experiment applies before the command line's: the loop job's
    config is tuned for a quick demo, the experiment may train longer or score a larger held-out split."""
    quick: list[str] = []
    """Overrides ``--quick`` applies on top (with one seed and one iteration): tiny step counts for CI."""


class MLflowConfig(_Section):
    """Experiment tracking."""

    tracking_uri: str | None = None
    """MLflow tracking server URI; None uses a local SQLite store under the run directory."""
    experiment: str = "visplay"
    """Experiment name."""


class Config(_Section):
    """The whole system: one run of a job."""

    name: str = Field("tiny-cpu", pattern=r"^[^./\\][^/\\]*$")
    """Run name; outputs land in `out_dir`/`name` (one folder name: no ``/`` or ``\\``, no leading ``.``, so it
    cannot leave `out_dir`)."""
    out_dir: str = "runs"
    """Root of all outputs."""
    seed: int = 0
    """Global seed (python, numpy, torch, vLLM per-row seeds derive from it)."""
    iterations: int = Field(1, ge=1)
    """Self-evolution iterations."""
    verbose: bool = False
    """Show the frameworks' output (vLLM, Ray, Ray Train workers, DeepSpeed) on the console too; it always
    goes to ``<run>/logs/`` (visplay.console)."""
    models: ModelsConfig = ModelsConfig()
    """Checkpoints."""
    corpus: CorpusConfig = CorpusConfig()
    """Unlabeled image corpus."""
    generation: GenerationConfig = GenerationConfig()
    """Question generation pass."""
    rewards: RewardConfig = RewardConfig()
    """Reward shaping."""
    questioner_grpo: GRPOConfig = GRPOConfig()
    """GRPO of the questioner."""
    reasoner_grpo: GRPOConfig = GRPOConfig()
    """GRPO of the reasoner."""
    rollout_engine: RolloutEngineConfig = RolloutEngineConfig()
    """Engine of the rollout actors that GRPO trainers push weights into, and how many per role."""
    ray: RayConfig = RayConfig()
    """Ray resources."""
    mlflow: MLflowConfig = MLflowConfig()
    """Tracking."""
    serve: ServeConfig = ServeConfig()
    """Serving the evolved Reasoner."""
    eval: EvalConfig = EvalConfig()
    """Benchmarks and scoring of Reasoner checkpoints."""
    experiment: ExperimentConfig = ExperimentConfig()
    """The self-evolution experiment with controls and ablations (jobs/experiment.py)."""

    @property
    def run_dir(self) -> Path:
        """Directory that holds everything this run writes."""
        return Path(self.out_dir) / self.name


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the dotted field."""


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted}: '{key}' is a value, not a section")
        node = child
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``a.b.c=value`` into the dotted key and a YAML-parsed value (``1e-5`` -> float, ``null`` -> None)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like section.field=value")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"override '{text}' has an empty field name")
    value = yaml.safe_load(raw) if raw.strip() else ""
    if isinstance(value, str) and _looks_like_float(value):
        value = float(value)  # YAML 1.1 reads "1e-5" as a string
    return key.strip(), value


def _looks_like_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _format_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid config ({source}):"]
    for item in err.errors():
        field = ".".join(str(part) for part in item["loc"]) or "<root>"
        lines.append(f"  {field}: {item['msg']} (got {item.get('input')!r})")
    return "\n".join(lines)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML file (or nothing: all defaults), apply dotted overrides, validate.

    Raises ConfigError naming the file and the dotted field of every problem.
    """
    tree: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        if not Path(path).is_file():
            raise ConfigError(f"config file not found: {path}")
        loaded = yaml.safe_load(Path(path).read_text())
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping, got {type(loaded).__name__}")
        tree = loaded or {}
    for text in overrides or []:
        key, value = parse_override(text)
        _set_dotted(tree, key, value)
    try:
        return Config.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format_error(err, source)) from None


def with_overrides(cfg: Config, overrides: list[str]) -> Config:
    """A copy of `cfg` with dotted overrides applied (the same syntax as the command line), validated again."""
    tree = cfg.model_dump(mode="json")
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(tree, key, value)
    try:
        return Config.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format_error(err, "overrides")) from None


def save_config(cfg: Config, path: str | Path) -> Path:
    """Write the resolved config as YAML (every field, defaults included) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    return path


def reference_rows(model: type[BaseModel] = Config, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted field, default, description) for every leaf field, for the README's config reference."""
    rows: list[tuple[str, str, str]] = []
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            default = field.default
            sub_rows = reference_rows(annotation, f"{dotted}.")
            if isinstance(default, BaseModel):  # section default may differ from the class defaults
                dumped = default.model_dump()
                sub_rows = [
                    (key, _leaf_default(dumped, key[len(dotted) + 1 :], fallback), desc)
                    for key, fallback, desc in sub_rows
                ]
            rows.extend(sub_rows)
        elif variants := _variants(annotation):  # a discriminated union: its kinds, then each one's fields
            default = field.get_default(call_default_factory=True)
            kinds = " or ".join(f"``{v.model_fields['kind'].default}``" for v in variants)
            desc = (field.description or "").replace("\n", " ")
            rows.append((f"{dotted}.kind", repr(default.kind), f"{desc} One of {kinds}."))
            for variant in variants:
                kind = variant.model_fields["kind"].default
                rows += [
                    (f"{dotted}.{key}", repr(sub.default), f"(kind {kind}) " + (sub.description or "").replace("\n", " "))
                    for key, sub in variant.model_fields.items()
                    if key != "kind"
                ]  # fmt: skip
        else:
            rows.append((dotted, repr(field.default), (field.description or "").replace("\n", " ")))
    return rows


def _variants(annotation: Any) -> tuple[type[BaseModel], ...]:
    """The classes of a union of config sections that each name their ``kind`` (else ())."""
    import typing

    args = typing.get_args(annotation)
    if args and all(
        isinstance(a, type) and issubclass(a, BaseModel) and "kind" in a.model_fields for a in args
    ):
        return args
    return ()


def _leaf_default(dumped: dict[str, Any], dotted: str, fallback: str) -> str:
    node: Any = dumped
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return fallback
        node = node[key]
    return repr(node)


def reference_markdown() -> str:
    """The config reference as a markdown table (README.md embeds it; a test keeps the two equal)."""
    lines = ["| field | default | meaning |", "|---|---|---|"]
    for name, default, desc in reference_rows():
        escaped = desc.replace("|", "\\|")
        lines.append(f"| `{name}` | `{default}` | {escaped} |")
    return "\n".join(lines)


def with_absolute_paths(cfg: Config, base: str | Path | None = None) -> Config:
    """A copy of `cfg` whose local paths (out_dir, checkpoints, corpus) are absolute, resolved against `base`
    (default: the current directory). Jobs call it first: Ray workers run in other directories, so a relative
    path from the command line would name nothing there. URIs (``s3://...``) are left as they are."""
    root = Path(base) if base is not None else Path.cwd()

    def absolute(value: str | None) -> str | None:
        if value is None or "://" in value:
            return value
        return str((root / value).resolve())

    return cfg.model_copy(
        update={
            "out_dir": absolute(cfg.out_dir),
            "models": cfg.models.model_copy(
                update={
                    "base": absolute(cfg.models.base),
                    "questioner": absolute(cfg.models.questioner),
                    "reasoner": absolute(cfg.models.reasoner),
                }
            ),
            "corpus": cfg.corpus.model_copy(update={"path": absolute(cfg.corpus.path)}),
            "ray": cfg.ray.model_copy(update={"cluster_config": absolute(cfg.ray.cluster_config)}),
            "serve": cfg.serve.model_copy(update={"checkpoint": absolute(cfg.serve.checkpoint)}),
            "eval": cfg.eval.model_copy(
                update={
                    "synthetic_path": absolute(cfg.eval.synthetic_path),
                    "benchmarks": [
                        b.model_copy(update={"path": absolute(b.path)}) for b in cfg.eval.benchmarks
                    ],
                }
            ),
        }
    )
