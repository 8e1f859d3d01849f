"""The cheap dropout mask of models/dropout.py: the rate it promises, unbiased, reproducible."""
import pytest
import torch

from hardymer.models import create_method
from hardymer.models.dropout import BitsDropout, dropout, keep_mask, keep_probability
from hardymer.models.momke import MoMKE, MoMKEConfig


@pytest.mark.parametrize("p", [0.5, 0.3, 0.1, 0.9])
def test_keep_rate_is_one_minus_p_at_every_position_of_a_word(p):
    torch.manual_seed(0)
    n = 3 * 200_000
    keep = keep_mask((n,), p, torch.device("cpu")).float()
    assert abs(keep_probability(p) - (1 - p)) <= 2 ** -16
    # each of the three elements a 64-bit word serves keeps at the same rate (the word's
    # unset sign chunk, if used, would keep everything)
    for k in range(3):
        rate = keep[k::3].mean().item()
        assert abs(rate - (1 - p)) < 0.005, (k, rate)
    # neighbours are independent: P(both kept) = q^2
    both = (keep[:-1] * keep[1:]).mean().item()
    assert abs(both - (1 - p) ** 2) < 0.005


def test_output_is_unbiased_and_backward_uses_the_same_mask():
    torch.manual_seed(1)
    drop = BitsDropout(0.5).train()
    x = torch.ones(400, 300, requires_grad=True)
    y = drop(x)
    assert set(y.unique().tolist()) <= {0.0, 2.0}
    assert abs(y.mean().item() - 1.0) < 0.01
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())          # d(x * keep * 2)/dx = keep * 2


def test_seeded_masks_repeat_and_eval_or_zero_rate_is_identity():
    drop = BitsDropout(0.5).train()
    x = torch.randn(7, 11, 5)
    torch.manual_seed(3)
    a = drop(x)
    torch.manual_seed(3)
    assert torch.equal(a, drop(x))
    assert not torch.equal(a, drop(x))             # the stream moved on
    assert torch.equal(BitsDropout(0.0).train()(x), x)
    assert torch.equal(drop.eval()(x), x)
    assert torch.equal(BitsDropout(1.0).train()(x), torch.zeros_like(x))
    with pytest.raises(ValueError, match="between 0 and 1"):
        BitsDropout(1.5)
    with pytest.raises(ValueError, match="'bits' or 'torch'"):
        dropout(0.5, "fast")


def test_momke_uses_the_chosen_dropout_and_rejects_an_unknown_one():
    dims = {"a": 8, "t": 8, "v": 8}
    kinds = lambda m: {type(x).__name__ for x in m.modules() if "Dropout" in type(x).__name__}  # noqa: E731
    assert kinds(create_method("momke", dims, 4, "classification", hidden=8, depth=1)) == {
        "BitsDropout"}
    assert kinds(create_method("momke", dims, 4, "classification", hidden=8, depth=1,
                               dropout_impl="torch")) == {"Dropout"}
    with pytest.raises(ValueError, match="model.dropout_impl='x'"):
        MoMKE.check_config(MoMKEConfig(dropout_impl="x"))     # what a run's config load calls
