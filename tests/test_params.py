import pytest

from pruning.errors import BadInputError
from pruning.params import Param, resolve_settings

PARAMS = (
    Param("rate", "float", 0.5, "a rate", min=0.0, max=1.0),
    Param("rounds", "int", 3, "rounds", min=1, max=10),
    Param("scope", "choice", "global", "scope", choices=("global", "layerwise")),
    Param("dense_output", "bool", False, "keep output dense"),
)


def test_defaults_and_parsed_overrides():
    assert resolve_settings(PARAMS, None) == {"rate": 0.5, "rounds": 3, "scope": "global", "dense_output": False}
    settings = resolve_settings(PARAMS, {"rate": "0.25", "rounds": "7", "scope": "layerwise", "dense_output": "yes"})
    assert settings == {"rate": 0.25, "rounds": 7, "scope": "layerwise", "dense_output": True}


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"bogus": "1"}, "unknown setting 'bogus'"),
        ({"rate": "1.5"}, r"rate must be in \[0.0, 1.0\]"),
        ({"rate": "nan"}, "finite"),
        ({"rate": "fast"}, "number"),
        ({"rounds": "2.5"}, "whole number"),
        ({"scope": "everywhere"}, "one of global, layerwise"),
        ({"dense_output": "maybe"}, "true or false"),
    ],
)
def test_bad_values_are_rejected_with_a_clear_message(overrides, message):
    with pytest.raises(BadInputError, match=message):
        resolve_settings(PARAMS, overrides)
