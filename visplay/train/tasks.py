"""What each role practises in GRPO: which prompts a step uses, and how its rollouts are rewarded.

* :class:`QuestionerTask`: prompts are unlabeled images; a rollout is a tagged question; its reward is the
  VisPlay questioner reward, with the *frozen* Reasoner (its own rollout actors) answering each parsed
  question m times: uncertainty(p) minus the BLEU-cluster diversity penalty over the step's questions,
  ``invalid_penalty`` when unparseable. One implementation with the generation plane (visplay.rewards).
* :class:`ReasonerTask`: prompts are the kept questions of a generation pass (their images read from the
  corpus by source); a
  rollout is a step-by-step answer; its reward is accuracy against the silver label plus a format term.

Both choose a step's prompts from a seeded permutation of their data, so step s always sees the same
prompts: a resumed run neither repeats nor skips data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from visplay import prompts
from visplay.config import RewardConfig, SamplingConfig
from visplay.data.images import load_image
from visplay.engine.rollout import Rollout, RolloutRequest, generate_frozen_on
from visplay.generation.outputs import count_rows, take_rows
from visplay.rewards import extract_boxed, parse_questioner_output, reasoner_reward, score_questions
from visplay.seeds import derive_seed


def step_indices(n_items: int, per_step: int, step: int, seed: int) -> list[int]:
    """Indices of the items used at `step`: consecutive slices of a seeded permutation per epoch."""
    if n_items == 0:
        raise ValueError("no training data: the task has 0 items")
    out = []
    for k in range(step * per_step, (step + 1) * per_step):
        epoch, offset = divmod(k, n_items)
        order = np.random.default_rng([seed, epoch]).permutation(n_items)
        out.append(int(order[offset]))
    return out


@dataclass(frozen=True)
class StepScore:
    """Rewards of one step's rollouts, [prompts][group] nested, plus role-specific reward components."""

    rewards: list[list[float]]
    components: dict[str, float]


@dataclass
class QuestionerTask:
    """Questioner GRPO: images in, questions out, rewarded by the frozen reasoner's disagreement."""

    images: list[bytes]
    reasoner: Sequence[object]
    """The frozen reasoner's RolloutActor handles (``rollout_engine.per_role``; its answers are spread over
    them)."""
    reasoner_checkpoint: str
    """The frozen reasoner's checkpoint: an engine that comes back restarted is re-loaded from it."""
    reasoner_version: str
    """Its version: every answer must carry it."""
    reasoner_sampling: SamplingConfig
    answers_per_question: int
    rewards: RewardConfig
    seed: int

    @staticmethod
    def load_images(corpus, limit: int) -> list[bytes]:
        """The first `limit` usable images of a corpus (a CorpusConfig) in plan order (see `first_images`)."""
        return [row["image"] for row in QuestionerTask.first_images(corpus, limit).take_all()]

    @staticmethod
    def first_images(corpus, limit: int):
        """A bounded streaming read: the lazy dataset of the first `limit` usable images in plan order. Ray
        Data stops starting read tasks once `limit` images are decoded, whatever the corpus size."""
        import ray

        from visplay.data.images import decode_plan, images_of
        from visplay.data.plan import plan_corpus

        plan = plan_corpus(corpus.path, parquet_image_column=corpus.parquet_image_column, limit=corpus.limit)
        ray.data.DataContext.get_current().execution_options.preserve_order = True  # the same first ones
        decoded = decode_plan(plan, max_pixels=corpus.max_pixels, max_file_bytes=corpus.max_file_bytes)
        images = decoded.map_batches(images_of, batch_format="pyarrow").select_columns(["image"])
        return images.limit(limit)

    def requests(self, step: int, per_step: int) -> list[RolloutRequest]:
        prompt = prompts.render_prompt(prompts.questioner_messages())
        return [
            RolloutRequest(prompt=prompt, image=self.images[i], seed=derive_seed(self.seed, "q", step, j))
            for j, i in enumerate(step_indices(len(self.images), per_step, step, self.seed))
        ]

    def score(self, step: int, requests: list[RolloutRequest], rollouts: list[Rollout]) -> StepScore:
        parsed = [[parse_questioner_output(t) for t in r.texts] for r in rollouts]
        flat = [(i, j) for i, group in enumerate(parsed) for j, q in enumerate(group) if q.ok]
        answer_requests = [
            RolloutRequest(
                prompt=prompts.render_prompt(prompts.reasoner_messages(parsed[i][j].question)),
                image=requests[i].image,
                seed=derive_seed(self.seed, "qa", step, i, j),
            )
            for i, j in flat
        ]
        answers, reloads = [], 0
        if answer_requests:
            answers, reloads = generate_frozen_on(
                self.reasoner, answer_requests, self.reasoner_sampling, self.answers_per_question,
                self.reasoner_checkpoint, self.reasoner_version,
            )  # fmt: skip
        answers_of = {key: [extract_boxed(t) for t in a.texts] for key, a in zip(flat, answers, strict=True)}
        outputs = [(i, j, q) for i, group in enumerate(parsed) for j, q in enumerate(group)]
        results = score_questions(
            [q.question if q.ok else None for _, _, q in outputs],
            [answers_of.get((i, j), []) for i, j, _ in outputs],
            self.rewards,
        )
        rewards: list[list[float]] = [[] for _ in parsed]
        parts = {"valid": [], "uncertainty": [], "diversity_penalty": [], "p": []}
        timeouts = 0
        for (i, _, _), result in zip(outputs, results, strict=True):
            rewards[i].append(result.reward.total)
            parts["valid"].append(float(result.reward.valid))
            if result.vote is not None:
                parts["uncertainty"].append(result.reward.uncertainty)
                parts["diversity_penalty"].append(result.reward.diversity_penalty)
                parts["p"].append(result.vote.p)
                timeouts += result.vote.timeouts
        metrics = {f"reward_{k}": float(np.mean(v)) if v else 0.0 for k, v in parts.items()}
        return StepScore(
            rewards, metrics | {"grade_timeouts": float(timeouts), "engine_restarts": float(reloads)}
        )


@dataclass
class ReasonerTask:
    """Reasoner GRPO on a generation pass's kept questions, rewarded against their silver labels.

    Holds only where the questions are: each step reads its own rows from the ``questions/`` table and their
    images from the corpus (by ``source``, checked against ``image_id``), so no worker holds the whole set.
    """

    questions_dir: str
    rewards: RewardConfig
    seed: int
    image_column: str = "image"
    """Parquet corpora: the column of image bytes (``corpus.parquet_image_column``)."""
    n_questions: int = 0
    """Rows of the table (read from its footers when 0)."""

    _COLUMNS = ["question", "silver", "source", "image_id"]

    def __post_init__(self) -> None:
        if not self.n_questions:
            self.n_questions = count_rows(self.questions_dir)

    def _rows(self, step: int, per_step: int) -> list[dict]:
        positions = step_indices(self.n_questions, per_step, step, self.seed)
        return take_rows(self.questions_dir, positions, self._COLUMNS)

    def requests(self, step: int, per_step: int) -> list[RolloutRequest]:
        return [
            RolloutRequest(
                prompt=prompts.render_prompt(prompts.reasoner_messages(row["question"])),
                image=load_image(row["source"], row["image_id"], self.image_column),
                seed=derive_seed(self.seed, "r", step, j),
            )
            for j, row in enumerate(self._rows(step, per_step))
        ]

    def silver_for(self, step: int, per_step: int) -> list[str]:
        return [row["silver"] for row in self._rows(step, per_step)]

    def score(self, step: int, requests: list[RolloutRequest], rollouts: list[Rollout]) -> StepScore:
        per_step = len(requests)
        golds = self.silver_for(step, per_step)
        rewards, acc, fmt, timeouts = [], [], [], 0
        for gold, rollout in zip(golds, rollouts, strict=True):
            row = []
            for text in rollout.texts:
                r = reasoner_reward(text, gold, format_weight=self.rewards.reasoner_format_weight)
                row.append(r.total)
                acc.append(r.accuracy)
                fmt.append(r.format)
                timeouts += r.timed_out
            rewards.append(row)
        metrics = {"reward_accuracy": float(np.mean(acc)), "reward_format": float(np.mean(fmt))}
        return StepScore(rewards, metrics | {"grade_timeouts": float(timeouts)})
