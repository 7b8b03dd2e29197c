"""Choosing the device where the engine computes: the CLI's --device on every command, the
sidebar's Device box, and the CLI's progress bars (drawn on a terminal, silent when piped)."""

from __future__ import annotations

import io
import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from pruning.cli import build_parser, main
from pruning.device import resolve_device
from pruning.errors import BadInputError
from pruning.experiment import Experiment
from pruning.progress_bars import close_bars, stage_bar
from tests.app_driver import APP

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--dataset", "digits", "--model", "mlp", "--epochs", "1"]
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")


def test_every_computing_command_takes_device_and_list_says_what_auto_is(capsys):
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for name, sub in commands.items():
        flags = {flag for action in sub._actions for flag in action.option_strings}
        assert ("--device" in flags) == (name != "list"), name
    assert main(["list", "--json"]) == 0
    devices = json.loads(capsys.readouterr().out)["devices"]
    assert devices == {"choices": ["auto", "cpu", "cuda"], "cuda_available": torch.cuda.is_available(),
                       "auto": "cuda" if torch.cuda.is_available() else "cpu"}


@no_gpu
def test_cuda_without_a_gpu_is_one_line_and_exit_2_before_any_work(capsys, fresh_cache):
    code = main(["prune", *TINY, "--method", "magnitude", "--sparsity", "0.5", "--device", "cuda"])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert captured.err.count("\n") == 1 and "cuda" in captured.err and "no CUDA GPU" in captured.err
    assert not fresh_cache.exists() or not any(fresh_cache.rglob("*.pt"))
    with pytest.raises(BadInputError, match="unknown device"):
        resolve_device("tpu")


@no_gpu
def test_auto_is_the_cpu_here_with_the_cpu_keys_and_results(capsys):
    outputs = []
    for device in ("auto", "cpu"):
        assert main(["prune", *TINY, "--method", "magnitude", "--sparsity", "0.5", "--device", device, "--json"]) == 0
        outputs.append(json.loads(capsys.readouterr().out))
    auto, cpu = outputs
    assert auto["pruned"] == cpu["pruned"] and auto["dense"] == cpu["dense"]
    assert auto["device"] == cpu["device"] == "cpu" and auto["timed_on"].startswith("cpu (")
    assert Experiment(device="cpu").key() == Experiment().key() != Experiment(device="cuda").key()


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_stage_bar_draws_on_a_terminal_and_nothing_elsewhere():
    assert stage_bar("training", io.StringIO()) is None
    screen = Terminal()
    report = stage_bar("training", screen)
    for step in range(1, 5):
        report(step / 4, f"epoch {step}/4")
    drawn = screen.getvalue()
    assert "training: 100%" in drawn and "epoch 4/4" in drawn
    report(0.5, "late")  # a closed bar ignores later reports
    assert screen.getvalue() == drawn
    unfinished = Terminal()
    stage_bar("sweep", unfinished)(0.3, "seed 0")
    close_bars()
    assert unfinished.getvalue().endswith("\n") and " 30%" in unfinished.getvalue()


def run_cli(args: list[str], stderr_terminal: bool) -> tuple[int, str, str]:
    """``python -m pruning ARGS`` as a user runs it: stdout a pipe, stderr a pipe or a pseudo-terminal."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "100"}
    if not stderr_terminal:
        done = subprocess.run([sys.executable, "-m", "pruning", *args], cwd=ROOT, env=env, capture_output=True, text=True)
        return done.returncode, done.stdout, done.stderr
    leader, follower = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "pruning", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=follower, text=True)
    os.close(follower)
    screen = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the terminal closed: the process is gone
            break
        if not chunk:
            break
        screen += chunk
    out = process.stdout.read()
    process.wait()
    os.close(leader)
    return process.returncode, out, screen.decode(errors="replace")


def test_the_cli_draws_bars_on_a_terminal_is_silent_when_piped_and_prints_the_same(fresh_cache):
    args = ["sweep", *TINY, "--methods", "snip", "--sparsities", "0.5", "--out", str(fresh_cache.parent / "s.csv"), "--json"]
    code, piped_out, piped_err = run_cli(args[:-1], stderr_terminal=False)
    assert code == 0 and piped_err == "", piped_err
    code, terminal_out, screen = run_cli(args[:-1], stderr_terminal=True)
    assert code == 0 and terminal_out == piped_out
    assert "sweep: 100%" in screen and "|" in screen and "snip" in screen
    code, json_out, json_screen = run_cli(args, stderr_terminal=True)
    assert code == 0 and json.loads(json_out)["rows"] and "%" not in json_screen  # --json: the object alone


def about_page(**choices) -> AppTest:
    """A fresh session on the About page (it trains nothing) with these sidebar choices."""
    at = AppTest.from_file(str(APP), default_timeout=240)
    at.switch_page("views/about.py")
    for key, value in choices.items():
        at.session_state[key] = value
    at.run()
    assert not at.exception
    return at


@no_gpu
def test_the_sidebar_device_box_says_where_it_computes_and_refuses_cuda_without_a_gpu():
    at = about_page()
    assert at.selectbox(key="device").value == "auto" and not at.error
    assert any("Computing on cpu" in caption.value for caption in at.sidebar.caption)
    assert at.session_state["experiment"].device == "cpu"
    cuda = about_page(device="cuda")
    assert any("no CUDA GPU" in error.value and "Using the CPU" in error.value for error in cuda.sidebar.error)
    assert cuda.session_state["experiment"].device == "cpu"
