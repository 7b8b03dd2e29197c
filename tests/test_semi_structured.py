"""2:4 speed is measured only where semi-structured kernels run (a CUDA GPU with sparse tensor
cores); elsewhere the reason is reported and no number appears."""

import pytest
import torch
from torch import nn

from pruning.masks import Mask
from pruning.physical.costs import real_costs
from pruning.physical.semi_structured import is_two_four, time_semi_structured
from pruning.selection import mask_from_scores


def test_two_four_patterns_are_recognised():
    assert is_two_four(torch.tensor([[1, 1, 0, 0, 0, 1, 0, 1]], dtype=torch.bool))
    assert is_two_four(torch.tensor([[1, 0, 0, 0, 0, 0, 0, 1]], dtype=torch.bool))  # 1:4 qualifies
    assert not is_two_four(torch.tensor([[1, 1, 1, 0, 0, 0, 0, 1]], dtype=torch.bool))  # 4:8 need not
    assert not is_two_four(torch.ones(2, 6, dtype=torch.bool))  # rows not a multiple of 4


def tiny_nm_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    scores = {name: parameter.detach().abs() for name, parameter in model.named_parameters() if name.endswith("weight")}
    return model, mask_from_scores(scores, 0.5, granularity="nm", nm="2:4")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the timing test below applies")
def test_without_a_gpu_the_costs_say_why_and_show_no_2_4_speed():
    model, mask = tiny_nm_model()
    costs = real_costs(model, mask, (1, 8, 8), batch_sizes=(1,), threads=1).to_json()
    assert costs["semi_structured"]["layers"] == []
    assert "no CUDA GPU" in costs["semi_structured"]["note"]
    unstructured = Mask({name: torch.rand(keep.shape) > 0.5 for name, keep in mask.items()})
    assert real_costs(model, unstructured, (1, 8, 8), batch_sizes=(1,), threads=1).to_json()["semi_structured"] is None


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] < 8,
                    reason="needs a CUDA GPU with sparse tensor cores (compute capability 8.0+)")
def test_on_a_gpu_2_4_layers_are_timed_and_compute_the_same_outputs():
    model = nn.Sequential(nn.Linear(1024, 2048), nn.ReLU(), nn.Linear(2048, 1024))
    scores = {name: parameter.detach().abs() for name, parameter in model.named_parameters() if name.endswith("weight")}
    rows, note = time_semi_structured(model, mask_from_scores(scores, 0.5, granularity="nm", nm="2:4"))
    assert [row.layer for row in rows] == ["0", "2"], note
    assert all(row.dense_ms > 0 and row.sparse_ms > 0 and row.max_abs_difference < 0.5 for row in rows)
