"""The first-compile race (compile_guard): many threads compiling the app's page scripts for the
first time at once, all released together by a barrier: most through a Streamlit ``ScriptCache``
of their own (as each AppTest run makes one; a server's single cache serialises its own compiles,
but not against the process's other parsers), every fourth with ``ast.parse`` as those other
parsers do (3.11's traceback formatting, ``inspect``).

The defect needs a garbage collection during the conversion of a parse tree into ``ast`` objects
that hands the GIL to another parsing thread; in a server that is a finalizer running Python code,
which makes it rare. The stress makes it happen at every collection (a ``gc`` callback sleeping
0 s gives the GIL away), so one round is enough to see it. Each stress runs in a fresh
interpreter, so the guard is either never installed or installed before the first compile, as
app.py does.

    python -m tests.test_compile_guard [--unguarded] [--rounds N] [--threads N] [--natural]
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# CPython versions whose AST constructor shares its recursion counter between threads (gh-106905)
AFFECTED = (3, 11, 0) <= sys.version_info[:3] < (3, 11, 8) or (3, 12, 0) <= sys.version_info[:3] < (3, 12, 2)


def page_scripts() -> list[Path]:
    """app.py and every page script of views/ (what Streamlit compiles on first use)."""
    return [ROOT / "app.py", *sorted((ROOT / "views").glob("*.py"))]


def stress(rounds: int, threads: int, amplify: bool = True) -> dict:
    """Rounds of ``threads`` threads each compiling every page script through a new ScriptCache
    at once; the errors raised and the code objects that differ from a compile done alone."""
    import gc
    import shutil
    import tempfile

    from streamlit.runtime.scriptrunner.script_cache import ScriptCache

    copies = Path(tempfile.mkdtemp(prefix="first-compiles-"))  # fixed sources, whatever happens to the tree meanwhile
    pages = [shutil.copy(path, copies / f"{index}-{path.name}") for index, path in enumerate(page_scripts())]
    alone = {path: ScriptCache().get_bytecode(path) for path in pages}
    errors, differing, failed_rounds = [], 0, 0

    def give_gil_away(phase, info):
        time.sleep(0)

    if amplify:
        gc.callbacks.append(give_gil_away)
    try:
        for _ in range(rounds):
            barrier, found = threading.Barrier(threads), []

            def first_compiles(index: int) -> None:
                nonlocal differing
                cache = ScriptCache()
                barrier.wait()
                for path in pages[index % len(pages):] + pages[:index % len(pages)]:
                    try:
                        if index % 4 == 3:
                            ast.parse(Path(path).read_text(), path)
                        else:
                            differing += cache.get_bytecode(path) != alone[path]
                    except Exception as error:  # the defect raises SystemError; any exception is a failure
                        found.append(f"{type(error).__name__}: {error}")

            workers = [threading.Thread(target=first_compiles, args=(index,)) for index in range(threads)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
            failed_rounds += bool(found)
            errors += found
    finally:
        if amplify:
            gc.callbacks.remove(give_gil_away)
        shutil.rmtree(copies, ignore_errors=True)
    return {"rounds": rounds, "failed_rounds": failed_rounds, "errors": len(errors), "first_errors": errors[:3],
            "differing": differing}


def run_stress(*flags: str) -> dict:
    """:func:`stress` in a fresh interpreter (the guard installed first unless ``--unguarded``)."""
    done = subprocess.run([sys.executable, "-m", "tests.test_compile_guard", *flags], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_many_first_compiles_at_once_all_succeed_with_the_guard():
    outcome = run_stress("--rounds", "3", "--threads", "8")
    assert outcome["errors"] == 0, outcome["first_errors"]
    assert outcome["differing"] == 0  # every thread got the code a compile alone gives


@pytest.mark.skipif(not AFFECTED, reason="this CPython builds AST objects thread-safely (gh-106905 fixed)")
def test_the_same_stress_fails_without_the_guard_on_an_affected_python():
    """The stress reaches the defect: without the guard, first compiles at once raise."""
    outcome = run_stress("--unguarded", "--rounds", "2", "--threads", "8")
    assert outcome["failed_rounds"] > 0, outcome
    assert any("AST constructor recursion depth mismatch" in error for error in outcome["first_errors"]), outcome


def test_install_is_idempotent_and_parses_as_before():
    import compile_guard

    compile_guard.install()
    guarded = ast.parse
    compile_guard.install()
    assert ast.parse is guarded and compile_guard.is_installed()
    source = (ROOT / "app.py").read_text()
    assert ast.dump(ast.parse(source, "app.py")) == ast.dump(guarded.unguarded(source, "app.py"))
    assert ast.literal_eval("{'a': (1, 2.5)}") == {"a": (1, 2.5)}


def main() -> None:
    parser = argparse.ArgumentParser(description="first compiles of the page scripts from many threads at once")
    parser.add_argument("--unguarded", action="store_true", help="do not install compile_guard (the unfixed path)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--natural", action="store_true", help="no gc callback: only the natural GIL hand-overs")
    args = parser.parse_args()
    if not args.unguarded:
        sys.path.insert(0, str(ROOT))
        import compile_guard

        compile_guard.install()
    started = time.perf_counter()
    outcome = stress(args.rounds, args.threads, amplify=not args.natural)
    outcome.update(guarded=not args.unguarded, amplified=not args.natural, python=sys.version.split()[0],
                   seconds=round(time.perf_counter() - started, 2))
    print(json.dumps(outcome))


if __name__ == "__main__":
    main()
