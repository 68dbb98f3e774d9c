import pytest
import torch

from metarec.evaluation.ensemble import TRAINING_STATE_KEYS, majority_vote, weight_soup


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


# -- weight soup ------------------------------------------------------------------------------------
def _ckpt(w, step=torch.tensor([3]), **extra):
    return {"state_dict": {"head.weight": torch.tensor(w, dtype=torch.float32), "head.steps": step},
            "global_step": 10, "metarec_identity": {"algorithm": "multitask_prior"},
            "optimizer_states": [{"state": {}}], "lr_schedulers": [{}], "loops": {}, "callbacks": {},
            "metarec_rng": {"torch": 1}, **extra}


def test_soup_is_the_mean_of_float_weights_and_keeps_no_training_state():
    soup = weight_soup([_ckpt([1.0, 2.0]), _ckpt([2.0, 4.0]), _ckpt([6.0, 0.0])], ["a", "b", "c"])
    assert torch.equal(soup["state_dict"]["head.weight"], torch.tensor([3.0, 2.0]))
    assert soup["state_dict"]["head.weight"].dtype == torch.float32
    assert torch.equal(soup["state_dict"]["head.steps"], torch.tensor([3]))   # non-float: equal in all, kept
    assert soup["metarec_soup"] == ["a", "b", "c"]
    assert soup["global_step"] == 10 and soup["metarec_identity"] == {"algorithm": "multitask_prior"}
    assert not set(TRAINING_STATE_KEYS) & set(soup)


@pytest.mark.parametrize("members, message", [
    ([_ckpt([1.0, 2.0])], "at least two checkpoints, got 1"),
    ([_ckpt([1.0, 2.0]), {"state_dict": {"head.weight": torch.zeros(2)}}], "b has other weights than a: 'head.steps'"),
    ([_ckpt([1.0, 2.0]), _ckpt([1.0, 2.0, 3.0])],
     r"b: weight 'head.weight' is torch.float32 \(3,\), a has torch.float32 \(2,\)"),
    ([_ckpt([1.0, 2.0]), _ckpt([1.0, 2.0], step=torch.tensor([4]))], "b: weight 'head.steps' .* differs from a's"),
])
def test_soup_refuses_one_member_or_weights_that_do_not_match(members, message):
    with pytest.raises(ValueError, match=message):
        weight_soup(members, ["a", "b"][:len(members)])
