"""The base model's preconditions (visplay/preconditions.py): exact arithmetic on report figures."""

from __future__ import annotations

from visplay.preconditions import check_preconditions, render_preconditions


def test_a_base_that_sees_with_headroom() -> None:
    per_skill = {"colour": 0.5, "count": 0.45, "shape": 0.9}
    blind = {"colour": 0.3, "count": 0.3, "shape": 0.3, "all": 0.3}
    sampled = {
        "sampled_pass1": 0.40,
        "sampled_maj8": 0.52,
        "sampled_pass1/colour": 0.4,
        "sampled_maj8/colour": 0.6,
    }
    pre = check_preconditions(per_skill, blind, sampled)
    # colour 0.5 >= 1.5 x 0.3 = 0.45; count 0.45 >= 0.45 (the bound holds with equality); shape 0.9
    assert [c.sees for c in pre.skills] == [True, True, True] and pre.sees
    # maj@8 - pass@1 = 0.52 - 0.40 = 12 points >= 10
    assert pre.k == 8 and pre.headroom
    text = "\n".join(render_preconditions(pre))
    assert "| colour | 50.0 | 30.0 | 1.67 | 40.0 | 60.0 | +20.0 |" in text
    assert "| **all** | | | | 40.0 | 52.0 | +12.0 |" in text
    assert "sees (greedy >= 1.5 x image-blind on every skill): **yes**" in text


def test_one_blind_skill_or_no_samples_fails() -> None:
    blind = {"colour": 0.3, "count": 0.3}
    pre = check_preconditions(
        {"colour": 0.9, "count": 0.44}, blind, {"sampled_pass1": 0.5, "sampled_maj4": 0.59}
    )
    assert not pre.sees and [c.skill for c in pre.skills if not c.sees] == ["count"]  # 0.44 < 0.45
    assert pre.k == 4 and not pre.headroom  # 9 points < 10
    unsampled = check_preconditions({"colour": 0.9, "count": 0.9}, blind, {})
    assert unsampled.sees and unsampled.k is None and not unsampled.headroom
    assert "not measured (eval.samples is 0)" in "\n".join(render_preconditions(unsampled))
    assert pre.to_dict()["skills"]["count"] == {
        "greedy": 0.44,
        "blind": 0.3,
        "pass1": None,
        "majk": None,
        "sees": False,
    }
