"""Declared hyperparameters: each method states its parameters once (name, type, default,
range, help) and the app's sidebar and the CLI's ``--set KEY=VALUE`` are generated from it."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from pruning.errors import BadInputError

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


@dataclass(frozen=True)
class Param:
    name: str
    type: str  # "float", "int", "bool", "choice" or "text" (a subclass's ``parse`` checks a text's form)
    default: Any
    help: str
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()
    step: float | None = None  # widget resolution; small steps (learning rates, lambdas) get a number box
    label: str = ""  # the widget's label (default: the name)
    # (other setting, value or tuple of values): it matters only then (widget hidden, value ignored otherwise)
    only_if: tuple[str, str | tuple[str, ...]] | None = None
    ui_range: tuple[float, float] | None = None  # a widget's range narrower than the valid one (min, max)

    @property
    def flag(self) -> str:
        """The CLI flag generated for it: ``--finetune-epochs`` for ``finetune_epochs``."""
        return "--" + self.name.replace("_", "-")

    def applies(self, values: dict[str, Any]) -> bool:
        if self.only_if is None:
            return True
        setting, wanted = self.only_if
        return values.get(setting) in (wanted if isinstance(wanted, tuple) else (wanted,))

    def parse(self, raw: Any) -> Any:
        """Convert ``raw`` (a string from the CLI or a widget value) and check it is allowed."""
        if self.type == "text":
            return str(raw).strip()
        if self.type == "choice":
            value = str(raw)
            if value not in self.choices:
                raise BadInputError(f"{self.name} must be one of {', '.join(self.choices)}; got {raw!r}")
            return value
        if self.type == "bool":
            if isinstance(raw, bool):
                return raw
            word = str(raw).strip().lower()
            if word in TRUE_WORDS + FALSE_WORDS:
                return word in TRUE_WORDS
            raise BadInputError(f"{self.name} must be true or false; got {raw!r}")
        try:
            number = float(raw)
        except (TypeError, ValueError):
            raise BadInputError(f"{self.name} must be a number; got {raw!r}") from None
        if not math.isfinite(number):
            raise BadInputError(f"{self.name} must be a finite number; got {raw!r}")
        if self.type == "int":
            if number != int(number):
                raise BadInputError(f"{self.name} must be a whole number; got {raw!r}")
            number = int(number)
        if (self.min is not None and number < self.min) or (self.max is not None and number > self.max):
            if self.max is None:
                raise BadInputError(f"{self.name} must be at least {self.min}; got {raw!r}")
            raise BadInputError(f"{self.name} must be in [{self.min}, {self.max}]; got {raw!r}")
        return number

    def describe(self) -> dict:
        """The JSON form used by ``python -m pruning list --json``."""
        entry = asdict(self)
        if not self.choices:
            entry.pop("choices")
        for key in ("step", "only_if", "ui_range"):
            if entry[key] is None:
                entry.pop(key)
        if not self.label:
            entry.pop("label")
        return entry


def resolve_settings(params: tuple[Param, ...], overrides: dict[str, Any] | None, owner: str = "this method") -> dict[str, Any]:
    """Defaults overridden by ``overrides``; an unknown key or a bad value is a BadInputError
    (``owner`` names whose settings they are in the message)."""
    by_name = {param.name: param for param in params}
    unknown = sorted(set(overrides or {}) - set(by_name))
    if unknown:
        known = ", ".join(by_name) or "none"
        raise BadInputError(f"unknown setting {unknown[0]!r}; {owner}'s settings are: {known}")
    settings = {param.name: param.default for param in params}
    for key, raw in (overrides or {}).items():
        settings[key] = by_name[key].parse(raw)
    for param in params:  # a setting that does not apply to the other choices keeps its default: the
        if not param.applies(settings):  # same choice then has one name (and one cache key), however it was asked
            settings[param.name] = param.default
    return settings
