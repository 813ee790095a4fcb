"""pass@k estimator and the response mask rule (tokens up to and including the first EOS)."""

from math import comb

import pytest
import torch

from node.training.evaluation import pass_at_k
from node.training.rollout import response_mask_from_ids

pytestmark = pytest.mark.unit


def test_pass_at_k_matches_the_combinatorial_definition():
    for n, c, k in [(8, 0, 1), (8, 3, 1), (8, 3, 4), (8, 6, 4), (5, 5, 5)]:
        expected = 1 - comb(n - c, k) / comb(n, k)
        assert pass_at_k(n, c, k) == pytest.approx(expected)
    assert pass_at_k(8, 3, 1) == pytest.approx(3 / 8)
    with pytest.raises(ValueError, match="k <="):
        pass_at_k(4, 1, 5)


def test_response_mask_stops_after_first_eos():
    eos = 2
    ids = torch.tensor([[5, 6, 2, 0, 0], [5, 2, 7, 2, 0], [5, 6, 7, 8, 9]])
    mask, truncated = response_mask_from_ids(ids, eos)
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]
    assert truncated.tolist() == [False, False, True]
