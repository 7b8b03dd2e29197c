"""The registry of pruning methods: what the app's method picker and the CLI's ``--method`` and
``list`` read. It imports the methods, never the reverse (OpenLTH's ``pruning/registry.py``), so
adding a method is one criterion in ``pruning.criteria`` or one module plus one line here."""

from __future__ import annotations

from pruning.errors import BadInputError
from pruning.methods.base import Method
from pruning.methods.dns import DNS
from pruning.methods.grda import GRDAMethod, SDprunMethod
from pruning.methods.heads import HeadPruning
from pruning.methods.lomp import LOMP
from pruning.methods.oneshot import ONE_SHOT_METHODS
from pruning.methods.seqattn import SeqAttn
from pruning.methods.sparsegpt import SparseGPT
from pruning.methods.undecayed import Undecayed

METHODS: dict[str, Method] = {method.name: method for method in (
    *ONE_SHOT_METHODS, DNS(), Undecayed(), GRDAMethod(), SDprunMethod(), SeqAttn(), LOMP(), SparseGPT(), HeadPruning())}


def register(method: Method) -> Method:
    """Add ``method`` to the registry (a plug-in or a test's toy method); the name must be new."""
    if not method.name or method.name in METHODS:
        raise BadInputError(f"a method needs a new name; {method.name!r} is taken or empty")
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise BadInputError(f"unknown method {name!r}; choose one of: {', '.join(METHODS)}")
    return METHODS[name]


def method_names() -> list[str]:
    return list(METHODS)
