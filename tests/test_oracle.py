"""The oracle question set (visplay/generation/oracle.py): the corpus's labeled questions as a question table."""

from __future__ import annotations

from pathlib import Path

import pytest

from visplay.config import RewardConfig
from visplay.data.schemas import SCORED_SCHEMA
from visplay.generation.oracle import ORACLE_CKPT, ground_truth_of, oracle_rows, write_oracle_questions
from visplay.generation.outputs import read_columns
from visplay.train.tasks import ReasonerTask
from visplay.world.corpus import make_corpus, read_ground_truth


def test_oracle_rows_keep_every_labeled_question_with_its_gold_answer(tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path, n=2, seed=4, kinds=["objects"])
    record = read_ground_truth(corpus.ground_truth)[1]
    rows = oracle_rows(record, str(tmp_path))
    assert [r["question"] for r in rows] == [qa["question"] for qa in record["qa"]]
    assert [r["silver"] for r in rows] == [qa["answer"] for qa in record["qa"]]
    assert all(set(r) == set(SCORED_SCHEMA.names) for r in rows)
    assert all(
        r["keep"] and r["parse_ok"] and r["p"] == 1.0 and r["reasoner_ckpt"] == ORACLE_CKPT for r in rows
    )
    assert {r["source"] for r in rows} == {str(tmp_path / record["file"])}
    assert [r["sample_index"] for r in rows] == [0, 1, 2] and {r["item"] for r in rows} == {1}
    assert oracle_rows(record, str(tmp_path))[0]["question_id"] == rows[0]["question_id"]  # stable ids
    assert len({r["question_id"] for r in rows}) == 3


def test_a_real_corpus_has_no_oracle(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    with pytest.raises(FileNotFoundError, match="the oracle needs a synthetic corpus"):
        ground_truth_of(tmp_path / "photos")


@pytest.mark.slow
def test_the_reasoner_task_reads_the_oracle_table(tmp_path: Path, ray_local) -> None:
    corpus = make_corpus(tmp_path / "corpus", n=5, seed=4, kinds=["objects"])
    out = write_oracle_questions(corpus.images_dir, tmp_path / "gen", limit=4)
    assert out == {"tables": {"questions": "questions", "dropped": "dropped"}, "kept": 12, "questions": 12}
    table = read_columns(tmp_path / "gen" / "questions", ["item", "silver", "question"])
    truth = {r["index"]: r for r in read_ground_truth(corpus.ground_truth)}
    assert sorted(set(table.column("item").to_pylist())) == [0, 1, 2, 3]  # the first 4 paths in sorted order
    pairs = sorted(zip(table.column("item").to_pylist(), table.column("silver").to_pylist(), strict=True))
    assert pairs == sorted((i, qa["answer"]) for i in range(4) for qa in truth[i]["qa"])
    assert read_columns(tmp_path / "gen" / "dropped", ["p"]).num_rows == 0
    task = ReasonerTask(str(tmp_path / "gen" / "questions"), RewardConfig(), seed=0)
    assert task.n_questions == 12
    requests, silver = task.requests(0, 3), task.silver_for(0, 3)
    assert (
        len(requests) == 3
        and all(r.image for r in requests)
        and set(silver) <= {"A", "B", "C", "D", "1", "2", "3", "4"}
    )
