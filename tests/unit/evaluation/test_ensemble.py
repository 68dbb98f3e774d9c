import pytest

from metarec.evaluation.ensemble import majority_vote


def _rec(pred, y=(0, 0, 1, 1), fp="e0", task="baby.t5"):
    return {"index": 0, "task": task, "fingerprint": fp, "query_y": list(y), "pred": list(pred),
            "classes": ["baby.t5:negative", "baby.t5:positive"]}


def test_majority_of_three_and_its_scores():
    votes = majority_vote([[_rec([0, 1, 1, 0])], [_rec([0, 0, 0, 1])], [_rec([1, 0, 1, 1])]])
    assert votes[0]["pred"] == [0, 0, 1, 1]
    assert votes[0]["acc"] == 1.0 and votes[0]["f1"] == 1.0
    one_wrong = majority_vote([[_rec([0, 0, 0, 1])], [_rec([0, 0, 0, 1])], [_rec([1, 1, 1, 1])]])[0]
    assert one_wrong["pred"] == [0, 0, 0, 1] and one_wrong["acc"] == 0.75
    # F1 of class 0: 2*2/(4+1) = 0.8; class 1: 2*1/(2+1) = 2/3.
    assert one_wrong["f1"] == pytest.approx((0.8 + 2 / 3) / 2)


def test_a_tie_goes_to_the_first_members_label():
    assert majority_vote([[_rec([1, 0, 1, 0])], [_rec([0, 1, 0, 1])]])[0]["pred"] == [1, 0, 1, 0]


@pytest.mark.parametrize("members, message", [
    ([[_rec([0, 0, 1, 1])]], "at least two"),
    ([[_rec([0, 0, 1, 1])], [_rec([0, 0, 1, 1], fp="e1")]], r"member 1 was not tested on the episodes of member 0 "
                                                               r"\(episode 0, task 'baby.t5'\)"),
    ([[_rec([0, 0, 1, 1])], []], "member 1 was not tested"),
])
def test_refuses_one_member_or_different_episodes(members, message):
    with pytest.raises(ValueError, match=message):
        majority_vote(members)
