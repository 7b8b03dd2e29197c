import pytest
import torch
from torch import nn

from pruning.errors import BadInputError
from pruning.masks import Mask, pruned_state_dict


def small_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))


# What a mask accepts (0/1 only, stored as bool), its save/load round trip and the plain pruned
# state dict are property tests in test_properties.py.


def test_sparsity_overall_and_per_layer():
    mask = Mask({"a": torch.tensor([1, 0, 0, 0]), "b": torch.tensor([1, 1, 1, 1, 0, 0])})
    assert mask.num_weights == 10
    assert mask.num_pruned == 5
    assert mask.sparsity() == pytest.approx(0.5)
    assert mask.layer_sparsity() == pytest.approx({"a": 0.75, "b": 2 / 6})


def test_apply_zeroes_pruned_weights_and_keeps_the_rest():
    model = small_model()
    before = model[0].weight.detach().clone()
    keep = torch.rand(3, 4, generator=torch.Generator().manual_seed(1)) > 0.5
    Mask({"0.weight": keep}).apply_(model)
    assert torch.all(model[0].weight[~keep] == 0)
    assert torch.equal(model[0].weight[keep], before[keep])


def test_masked_parameters_leave_the_model_untouched():
    model = small_model()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    mask = Mask({"2.weight": torch.zeros(2, 3)})
    tensors = mask.masked_parameters(model)
    assert torch.all(tensors["2.weight"] == 0)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name])


def test_check_fits_names_the_mismatch():
    model = small_model()
    with pytest.raises(BadInputError, match="matches no parameter"):
        Mask({"9.weight": torch.ones(2)}).check_fits(model)
    with pytest.raises(BadInputError, match="shape"):
        Mask({"0.weight": torch.ones(4, 3)}).check_fits(model)
    Mask({"0.weight": torch.ones(3, 4)}).check_fits(model)


def test_pruned_state_dict_of_a_partial_int_mask_is_plain_with_exact_zeros():
    model = small_model()
    keep = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 1], [1, 1, 1, 1]])  # one of two layers, 0/1 ints
    state = pruned_state_dict(model, Mask({"0.weight": keep}))
    assert set(state) == set(model.state_dict()), "no weight_orig / weight_mask keys"
    assert torch.all(state["0.weight"][keep == 0] == 0)
    assert torch.equal(state["0.weight"][keep == 1], model[0].weight.detach()[keep == 1])
    assert torch.equal(state["2.weight"], model[2].weight.detach()), "the unmasked layer is untouched"
    fresh = small_model()
    fresh.load_state_dict(state, strict=True)
