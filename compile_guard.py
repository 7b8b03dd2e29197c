"""One lock for every Python AST built in the process, so page scripts never compile at once.

Why: Streamlit compiles a page script on its first use (``ScriptCache.get_bytecode``: read the
file, ``magic.add_magic`` -> ``ast.parse``, then ``compile`` the tree). On CPython 3.11.0-3.11.7
and 3.12.0-3.12.1, turning the parser's tree into Python ``ast`` objects keeps its recursion
counter in interpreter-wide state (python/cpython#106905, fixed in 3.11.8 and 3.12.2): when a
garbage collection during that conversion runs Python code (a finalizer) and the GIL passes to
another thread that parses too, both move the one counter and one of them raises
``SystemError: AST constructor recursion depth mismatch``. Two sessions opening pages of a fresh
server at once, or two AppTests running at once, then get an exception instead of the page.

What: :func:`install` wraps ``ast.parse`` in one process-wide re-entrant lock. Every page compile
goes through it (Streamlit's magic calls ``ast.parse``), and so do the other parsers a serving
process runs in its threads (3.11's traceback formatting, ``inspect``, libraries): no two threads
build AST objects at once. Compiling a tree to bytecode (``compile(tree)``) and compiling source
text straight to bytecode never build ``ast`` objects and are thread-safe; they stay unlocked.

Why not Streamlit's own lock: ``ScriptCache`` locks per instance. A server has one, but the other
parsers never take it, and AppTest makes a new cache for every run. Why not a lock around
``ScriptCache.get_bytecode`` as well: that method holds the cache's lock while it calls
``ast.parse``, so a second lock taken outside it would be taken in the opposite order by a call
already in flight when the guard is installed (a deadlock); with the one lock innermost there is
no order to get wrong.

Where: app.py installs it before it draws anything, so it is in place before the first page
runs; app.py itself is compiled once per server before any app code runs, by the first session,
while the other sessions wait on the server's script cache. The tests install it when they
import their app driver. A module that took ``parse`` from ``ast`` before the install
(``from ast import parse``) keeps the unguarded one: none of those the app runs does.
It costs one uncontended lock per parse, so it is installed on every Python version.
"""

from __future__ import annotations

import ast
import functools
import threading

PARSE_LOCK = threading.RLock()  # re-entrant: a parse may run a finalizer that parses again
_install_lock = threading.Lock()


def install() -> None:
    """Route every ``ast.parse`` in this process through :data:`PARSE_LOCK` (idempotent)."""
    with _install_lock:
        if is_installed():
            return
        unguarded = ast.parse

        @functools.wraps(unguarded)
        def parse(*args, **kwargs):
            with PARSE_LOCK:
                return unguarded(*args, **kwargs)

        parse.unguarded = unguarded
        ast.parse = parse


def is_installed() -> bool:
    return hasattr(ast.parse, "unguarded")
