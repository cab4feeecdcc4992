"""Fixtures of the robustness tests."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Callable

import pytest

from in2r_graph.cli.main import main

from .helpers import run_cli, write_dataset


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """A tiny valid precomp dataset folder in tmp_path."""
    return write_dataset(tmp_path / "data" / "tiny")


@pytest.fixture(scope="module")
def shared_dataset(tmp_path_factory) -> Path:
    """A tiny valid precomp dataset shared by the tests of one module, which must not change it."""
    return write_dataset(tmp_path_factory.mktemp("shared") / "data" / "tiny")


@pytest.fixture
def cli(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess]:
    """Run the real ``in2r-graph`` command in a subprocess, with tmp_path as working folder."""

    def run(*args: str, **environment: str) -> subprocess.CompletedProcess:
        return run_cli(*args, cwd=tmp_path, **environment)

    return run


@pytest.fixture
def cli_in_process(tmp_path: Path, capsys, monkeypatch) -> Callable[..., subprocess.CompletedProcess]:
    """Call the CLI's ``main()`` in this process, with tmp_path as working folder.

    It runs the same code as the ``in2r-graph`` command without the seconds a
    new process spends importing torch, for the cases beyond those that the
    tests run as real subprocesses.
    """
    monkeypatch.chdir(tmp_path)

    def run(*args: str) -> subprocess.CompletedProcess:
        capsys.readouterr()
        code = main([str(arg) for arg in args])
        captured = capsys.readouterr()
        return subprocess.CompletedProcess(list(args), code, captured.out, captured.err)

    return run
