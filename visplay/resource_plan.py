"""What a job asks Ray for, phase by phase, and whether a cluster can ever give it (pure: no Ray here).

    plan = evolve_plan(cfg)              # every actor each phase of jobs/evolve.py starts
    print(format_plan(plan))             # `visplay plan --config FILE`
    check_fit(plan, offer)               # raises DoesNotFit naming the phase, the actor and the resource

What each phase of jobs/evolve.py starts (read from the job and the planes; keep this in step with them):

    held for the whole job  the GRPO worker group (visplay.train.service): ``ray.train_workers`` Ray Train
                            workers, each ``cpus_per_train_worker`` / ``gpus_per_train_worker`` /
                            ``train_worker_resources`` (its Train controller and the PhaseQueue take no
                            resources); then ``rollout_engine.per_role`` rollout engines per role, each with
                            ``rollout_engine``'s num_cpus / num_gpus / resources
    start                   the Questioner's first images are read with Ray Data (tasks)
    evaluate                the Reasoner's rollout engines answer (``generation.reuse_rollout_engines``), or
                            else an ``eval.engine`` pool at its ``max_actors`` (visplay.eval.run)
    train_questioner,       nothing more: GRPO runs on the held workers and engines
    train_reasoner
    generate                with reuse, the held engines and tasks; else the ``questioner_engine`` and
                            ``reasoner_engine`` pools at their ``max_actors`` (visplay.generation.pipeline);
                            the image-claims actor takes no resources

A phase that runs Ray Data also needs room for one task beside its actors: Ray's default of 1 CPU (the
decode, the final groupbys and sort) is the largest any of its tasks asks. MLflow runs in the driver. The
Serve job (jobs/serve.py): ``serve.max_replicas`` engine replicas, each one placement bundle of
``serve.engine``'s resources (visplay.serve.app); Serve's controller, HTTP proxy and the ingress
replicas take none.

The fit rule. A cluster offers resources in all (``ray.cluster_resources()``; with ``ray.cluster_config``,
the larger of that and the launcher YAML at its largest: the head plus each worker type up to its
``max_workers``, within the cluster's ``max_workers``) and on each node. A plan fits when, in every phase
and for every resource, the phase's actors (held ones included, pools at ``max_actors``) plus its largest
task ask at most the cluster's total, and every single actor fits on one node. Otherwise the job would
wait forever (Ray queues an actor that cannot be placed; the trainer, started first, holds its GPUs):
:func:`check_fit` names the first actor, in start order, that cannot be placed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from visplay.config import Config, EngineConfig

TASK_CPUS = 1.0
"""CPUs of the largest Ray Data task of a pass: Ray's default for a task that names none (the decode, the
final groupbys and sort, ``select_columns``)."""

EPS = 1e-6
"""Slack of the comparisons (fractional CPUs such as 0.05 add up with rounding errors)."""


@dataclass(frozen=True)
class Demand:
    """``count`` actors of one kind and what each asks Ray for (or room for one task: :data:`TASK`)."""

    name: str
    """What they are, for the plan and the messages."""
    count: int
    """How many (a pool: its ``max_actors``)."""
    cpus: float
    """CPUs per actor."""
    gpus: float = 0.0
    """GPUs per actor."""
    custom: tuple[tuple[str, float], ...] = ()
    """Custom resources per actor, sorted by name."""
    held: bool = False
    """Started before the first phase and held until the job ends: it counts in every phase."""

    @property
    def each(self) -> dict[str, float]:
        """The resources one actor asks for, zeros left out."""
        asks = {"CPU": self.cpus, "GPU": self.gpus, **dict(self.custom)}
        return {k: v for k, v in asks.items() if v}

    @property
    def total(self) -> dict[str, float]:
        """``count`` x :attr:`each`."""
        return {k: v * self.count for k, v in self.each.items()}


@dataclass(frozen=True)
class PhasePlan:
    """One phase and every actor alive while it runs, in the order they start."""

    name: str
    """The phase (``start``, ``evaluate``, ``train_questioner``, ``generate``, ``train_reasoner``; ``serve``)."""
    demands: tuple[Demand, ...]
    """Its actors in start order, the held ones first."""

    @property
    def peak(self) -> dict[str, float]:
        """What the phase asks for in all, by resource."""
        return add(d.total for d in self.demands)


@dataclass(frozen=True)
class JobPlan:
    """A job's phases, in the order they run."""

    job: str
    """The job (``evolve``, ``serve``)."""
    phases: tuple[PhasePlan, ...]
    """Its phases (an iteration's; every iteration asks the same)."""

    @property
    def peak(self) -> dict[str, float]:
        """The most each resource is asked for in any one phase."""
        peak: dict[str, float] = {}
        for phase in self.phases:
            for key, value in phase.peak.items():
                peak[key] = max(peak.get(key, 0.0), value)
        return peak

    def peak_phase(self, resource: str) -> str:
        """The first phase that asks for the most of ``resource``."""
        return max(self.phases, key=lambda p: p.peak.get(resource, 0.0)).name


def add(parts: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Resource dicts summed key by key."""
    out: dict[str, float] = {}
    for part in parts:
        for key, value in part.items():
            out[key] = out.get(key, 0.0) + value
    return out


def engine_demand(name: str, engine: EngineConfig, count: int, held: bool = False) -> Demand:
    """``count`` engine actors with ``engine``'s resources."""
    return Demand(
        name, count, engine.num_cpus, engine.num_gpus, tuple(sorted(engine.resources.items())), held=held
    )


def held_demands(cfg: Config) -> tuple[Demand, ...]:
    """What jobs/evolve.py (and jobs/experiment.py) start before any phase and hold to the end, in order."""
    ray = cfg.ray
    n = cfg.rollout_engine.per_role
    return (
        Demand(
            "GRPO train workers",
            ray.train_workers,
            ray.cpus_per_train_worker,
            ray.gpus_per_train_worker,
            tuple(sorted(ray.train_worker_resources.items())),
            held=True,
        ),
        Demand("Ray Train controller", 1, 0.0, held=True),
        Demand("GRPO phase queue", 1, 0.0, held=True),
        engine_demand("rollout engines (questioner)", cfg.rollout_engine, n, held=True),
        engine_demand("rollout engines (reasoner)", cfg.rollout_engine, n, held=True),
    )


TASK = Demand("largest Ray Data task", 1, TASK_CPUS)
"""Room for one Ray Data task in every phase that runs a pass (counted once: tasks queue, and a pass moves
on as long as one of them can run)."""


def generation_pools(cfg: Config) -> tuple[Demand, ...]:
    """A generation pass's own engine pools at their ``max_actors`` (visplay.generation.pipeline)."""
    gen = cfg.generation
    return (
        engine_demand("questioner engine pool", gen.questioner_engine, gen.questioner_engine.max_actors),
        engine_demand("reasoner engine pool", gen.reasoner_engine, gen.reasoner_engine.max_actors),
    )


def eval_pool(cfg: Config) -> Demand:
    """An evaluation's own ``eval.engine`` pool at its ``max_actors`` (visplay.eval.run)."""
    return engine_demand("eval engine pool", cfg.eval.engine, cfg.eval.engine.max_actors)


IMAGE_CLAIMS = Demand("image claims", 1, 0.0)
"""The generation pass's image-claims actor (duplicate images; no resources)."""


def evolve_plan(cfg: Config) -> JobPlan:
    """The plan of jobs/evolve.py (and of each run of jobs/experiment.py) for ``cfg``."""
    held = held_demands(cfg)
    reuse = cfg.generation.reuse_rollout_engines
    pools = () if reuse else generation_pools(cfg)
    evaluate = () if reuse else (eval_pool(cfg),)
    phases = [PhasePlan("start", (*held, TASK))]
    if cfg.eval.during_evolve:
        phases.append(PhasePlan("evaluate", (*held, *evaluate, TASK)))
    phases += [
        PhasePlan("train_questioner", held),
        PhasePlan("generate", (*held, *pools, IMAGE_CLAIMS, TASK)),
        PhasePlan("train_reasoner", held),
    ]
    return JobPlan("evolve", tuple(phases))


def generate_plan(cfg: Config) -> JobPlan:
    """The plan of jobs/generate_questions.py: both engine pools at their ``max_actors``."""
    return JobPlan(
        "generate questions", (PhasePlan("generate", (*generation_pools(cfg), IMAGE_CLAIMS, TASK)),)
    )


def evaluate_plan(cfg: Config) -> JobPlan:
    """The plan of jobs/evaluate.py: the ``eval.engine`` pool at its ``max_actors``."""
    return JobPlan("evaluate", (PhasePlan("evaluate", (eval_pool(cfg), TASK)),))


def train_plan(cfg: Config, role: str) -> JobPlan:
    """The plan of jobs/train_questioner.py / train_reasoner.py: the Questioner's frozen Reasoner engines
    (questioner only), the GRPO workers and the role's rollout engines; the Questioner's images are read
    with Ray Data first."""
    workers, controller, queue, questioner_engines, reasoner_engines = held_demands(cfg)
    if role == "questioner":
        frozen = engine_demand("frozen reasoner engines", cfg.rollout_engine, cfg.rollout_engine.per_role)
        demands = (frozen, workers, controller, queue, questioner_engines, TASK)
    else:
        demands = (workers, controller, queue, reasoner_engines)
    return JobPlan(f"train {role}", (PhasePlan(f"train_{role}", demands),))


def serve_plan(cfg: Config) -> JobPlan:
    """The plan of jobs/serve.py: the replicas at ``serve.max_replicas``."""
    replicas = engine_demand("Serve replicas (Reasoner engine)", cfg.serve.engine, cfg.serve.max_replicas)
    ingress = Demand("Serve ingress (request checks)", cfg.serve.max_replicas, 0.0)
    return JobPlan(
        "serve",
        (PhasePlan("serve", (Demand("Serve controller", 1, 0.0), Demand("Serve HTTP proxy", 1, 0.0), ingress, replicas)),),
    )  # fmt: skip


# --- what a cluster offers -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Offer:
    """What a cluster can give: resources in all, and the nodes an actor can be placed on."""

    total: Mapping[str, float]
    """Every resource in all (``ray.cluster_resources()``'s keys: ``CPU``, ``GPU``, custom ones)."""
    nodes: tuple[Mapping[str, float], ...] = ()
    """Resources of each node (or node type) the cluster has or can add; () when unknown (no per-node rule)."""
    source: str = "the cluster"
    """Where the figures come from, for messages."""


def cluster_yaml_offer(cluster: Mapping, source: str = "the cluster config") -> Offer:
    """A Ray launcher config at its largest: the head node plus, per resource, the worker types that give
    the most of it, each up to its ``max_workers``, all within the cluster's ``max_workers`` (an upper
    bound per resource: one mix of nodes may not reach every resource's bound at once)."""
    types = cluster["available_node_types"]
    head = cluster["head_node_type"]
    workers = [t for name, t in types.items() if name != head and t.get("max_workers", 0) > 0]
    cap = cluster.get("max_workers", sum(t["max_workers"] for t in workers))
    keys = {k for t in types.values() for k in t.get("resources", {})}
    total: dict[str, float] = {}
    for key in sorted(keys):
        left, amount = cap, float(types[head].get("resources", {}).get(key, 0))
        for t in sorted(workers, key=lambda t: -t.get("resources", {}).get(key, 0)):
            take = min(t["max_workers"], left)
            amount, left = amount + take * t.get("resources", {}).get(key, 0), left - take
        total[key] = amount
    nodes = (dict(types[head].get("resources", {})), *(dict(t.get("resources", {})) for t in workers))
    return Offer(total, nodes, source)


def merge_offers(now: Offer, largest: Offer) -> Offer:
    """The cluster as it is and as its launcher config lets it grow: the larger figure of each resource
    (the cluster now is part of the config's; nodes joined by hand count as they are), every node shape."""
    keys = set(now.total) | set(largest.total)
    total = {k: max(now.total.get(k, 0.0), largest.total.get(k, 0.0)) for k in keys}
    return Offer(total, (*now.nodes, *largest.nodes), f"{now.source} or {largest.source}")


def parse_resources(text: str) -> dict[str, float]:
    """``CPU=64,GPU=8,engine_node=8`` -> ``{"CPU": 64.0, "GPU": 8.0, "engine_node": 8.0}`` (``visplay plan
    --offer``); raises ValueError naming a part that is not ``NAME=NUMBER``."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            out[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"{part!r} is not NAME=NUMBER") from None
    return out


# --- the fit check -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Misfit:
    """The first actor of a phase that a cluster can never place, the resource it lacks, and why."""

    phase: str
    """The phase that cannot run."""
    actor: str
    """The first of its actors, in start order, that cannot be placed."""
    resource: str
    """The missing resource (``CPU``, ``GPU``, a custom one; several joined by ``+`` when a node has each
    but none has them all)."""
    detail: str
    """What the phase needs of it and what the cluster offers."""

    @property
    def message(self) -> str:
        """One line naming the phase, the actor and the missing resource."""
        return f"phase {self.phase}, {self.actor}: {self.detail}"


class DoesNotFit(RuntimeError):
    """A job's plan asks for more than the cluster can ever give; the message names each phase's first
    actor that cannot be placed."""


def phase_misfit(phase: PhasePlan, offer: Offer) -> Misfit | None:
    """The first actor of ``phase``, in start order, that ``offer`` cannot place, or None: first one actor
    against every node (when the nodes are known), then the phase's running total against the cluster's."""
    for d in phase.demands:
        if not offer.nodes or not d.each or any(_holds(node, d.each) for node in offer.nodes):
            continue
        most = {k: max(node.get(k, 0.0) for node in offer.nodes) for k in d.each}
        short = [k for k, v in d.each.items() if v > most[k] + EPS]
        if short:
            detail = (
                f"each needs {short[0]} {_num(d.each[short[0]])} on one node, and no node has that much "
                f"(the most on one node: {_num(most[short[0]])})"
            )
            return Misfit(phase.name, d.name, short[0], detail)
        detail = f"each needs {format_resources(d.each)} on one node, and no node has all of that"
        return Misfit(phase.name, d.name, "+".join(d.each), detail)
    running: dict[str, float] = {}
    for d in phase.demands:
        running = add([running, d.total])
        for key in d.each:
            if running[key] > offer.total.get(key, 0.0) + EPS:
                parts = ", ".join(
                    f"{o.name} {o.count} x {_num(o.each[key])}" for o in phase.demands if key in o.each
                )
                detail = (
                    f"would wait forever for {key}: the phase needs {key} {_num(phase.peak[key])} ({parts}), "
                    f"the cluster offers {_num(offer.total.get(key, 0.0))}"
                )
                return Misfit(phase.name, d.name, key, detail)
    return None


def misfits(plan: JobPlan, offer: Offer) -> list[Misfit]:
    """Each phase's first actor that ``offer`` cannot place, once per actor and resource (a held actor that
    cannot start is named in the first phase only); an empty list: the plan fits."""
    found: dict[tuple[str, str], Misfit] = {}
    for phase in plan.phases:
        if (m := phase_misfit(phase, offer)) is not None:
            found.setdefault((m.actor, m.resource), m)
    return list(found.values())


def check_fit(plan: JobPlan, offer: Offer) -> None:
    """Raise :class:`DoesNotFit` unless every phase of ``plan`` fits ``offer`` (module doc: the fit rule)."""
    found = misfits(plan, offer)
    if not found:
        return
    lines = [m.message for m in found]
    raise DoesNotFit(
        f"the {plan.job} job cannot run on {offer.source}, which offers "
        f"{format_resources(offer.total, plan.peak)}; it would wait for resources that never come:\n  "
        + "\n  ".join(lines)
        + "\n"
        "Lower the counts (train workers, engines per role, pools' max_actors, replicas) or what each actor "
        "asks, or use a larger cluster; `visplay plan --config FILE` prints the plan."
    )


def _holds(node: Mapping[str, float], asks: Mapping[str, float]) -> bool:
    return all(node.get(k, 0.0) + EPS >= v for k, v in asks.items())


# --- printing ------------------------------------------------------------------------------------------


def _num(value: float) -> str:
    return f"{round(value, 6):g}"


def format_resources(resources: Mapping[str, float], only: Iterable[str] | None = None) -> str:
    """``CPU 8, GPU 1, engine_node 1`` (CPU and GPU first; ``only``: just these keys; none: ``-``)."""
    keys = [k for k in resources if only is None or k in set(only)]
    keys.sort(key=lambda k: ({"CPU": 0, "GPU": 1}.get(k, 2), k))
    return ", ".join(f"{k} {_num(resources[k])}" for k in keys if resources[k]) or "-"


def format_plan(plan: JobPlan) -> str:
    """The plan as text: the actors held for the whole job, then per phase what else it starts (count x each
    = total) and the phase's peak, then the job's peak per resource and the phase it is reached in."""
    width = max(len(d.name) for p in plan.phases for d in p.demands) + 2

    def row(d: Demand) -> str:
        return f"    {d.name:<{width}} {d.count:>3} x {format_resources(d.each):<28} = {format_resources(d.total)}"

    def total(label: str, resources: Mapping[str, float]) -> str:
        return f"    {label:<{width}} {'':>3}   {'':<28}   {format_resources(resources)}"

    lines = [f"{plan.job}: what each phase asks Ray for (count x each = total)"]
    held = [d for d in plan.phases[0].demands if d.held]
    if held:
        lines += ["  held from the job's start to its end (counted in every phase)"]
        lines += [row(d) for d in held] + [total("held in all", add(d.total for d in held))]
    for phase in plan.phases:
        own = [d for d in phase.demands if not d.held]
        lead = "the held actors and" if held and own else ("the held actors only" if held else "")
        lines.append(f"  {phase.name}: {lead}".rstrip(": "))
        lines += [row(d) for d in own] + [total("phase peak", phase.peak)]
    peak = ", ".join(f"{k} {_num(v)} ({plan.peak_phase(k)})" for k, v in _ordered(plan.peak))
    lines.append(f"  job peak: {peak or '-'}")
    return "\n".join(lines)


def _ordered(resources: Mapping[str, float]) -> list[tuple[str, float]]:
    return sorted(resources.items(), key=lambda kv: ({"CPU": 0, "GPU": 1}.get(kv[0], 2), kv[0]))
