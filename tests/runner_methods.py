"""A method for tests/test_runner.py that fails at one sparsity, in a module of its own: worker
processes import it to unpickle the method, and it imports no more than the engine's registry."""

import os

from pruning.methods.base import Method
from pruning.registry import get_method

FAILING = "test-fails-at-0.9"


class FailsAtHighSparsity(Method):
    """Magnitude pruning that raises at sparsity 0.9, writing a line to ``attempts`` each time."""

    name = FAILING
    description = "Magnitude pruning that fails at sparsity 0.9 (a test's method)."
    reference = "none"

    def __init__(self, attempts: str):
        self.attempts = attempts

    def prune(self, model, sparsity, settings, context):
        if sparsity == 0.9:
            with open(self.attempts, "a") as log:
                log.write(f"{os.getpid()}\n")
            raise RuntimeError(f"this method never prunes to {sparsity}")
        magnitude = get_method("magnitude")
        return magnitude.prune(model, sparsity, magnitude.settings(), context)
