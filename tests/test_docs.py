"""Run the code blocks of the docs and README, check the generated pages, build the site.

The language tag of a fenced block decides what happens to it:

- ``python`` blocks run with this interpreter;
- ``bash`` blocks run with ``bash -e``; a line that starts with
  ``in2r-graph train`` and does not resume a run gets :data:`FAST_TRAIN`
  appended;
- ``console``, ``text`` and ``yaml`` blocks are shown only.

The blocks of one page run in order in one scratch folder that links
``examples/``. docs/index.md states the same rule for writers.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
PAGES = sorted(DOCS.glob("*.md")) + [REPO / "README.md"]
RUN = ("python", "bash")
SHOWN = ("console", "text", "yaml")
FAST_TRAIN = (
    "--epochs 2 --set train.warmup_epochs=1 --set data.max_train_pairs=192 --set train.batch_size=32 "
    "--set model.embed_dim=32 --set rectify.k=4 --set train.progress=false"
)
FENCE = re.compile(r"^```(\S*)\s*$")


def code_blocks(path: Path) -> list[tuple[int, str, str]]:
    """Return ``(line number, language, code)`` for every fenced block of a Markdown file."""
    blocks, language, start, lines = [], None, 0, []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        match = FENCE.match(line)
        if language is None and match:
            language, start, lines = match.group(1), number, []
        elif language is not None and line.strip() == "```":
            blocks.append((start, language, "\n".join(lines) + "\n"))
            language = None
        elif language is not None:
            lines.append(line)
    assert language is None, f"{path.name}: the block opened on line {start} is never closed"
    return blocks


def with_fast_settings(script: str) -> str:
    """Append :data:`FAST_TRAIN` to every ``in2r-graph train`` command that does not resume a run."""
    joined = script.replace("\\\n", " ")
    out = []
    for line in joined.splitlines():
        words = line.split()
        if words[:2] == ["in2r-graph", "train"] and "--resume" not in words:
            line = f"{line} {FAST_TRAIN}"
        out.append(line)
    return "\n".join(out) + "\n"


def page_id(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_blocks_have_known_tags(page):
    untagged = [f"line {line} ({language or 'no tag'})" for line, language, _ in code_blocks(page) if language not in RUN + SHOWN]
    assert not untagged, f"{page.name}: tag every block with one of {', '.join(RUN + SHOWN)}: {', '.join(untagged)}"


def runnable_blocks(page: Path) -> list[tuple[int, str, str]]:
    return [(line, language, code) for line, language, code in code_blocks(page) if language in RUN]


@pytest.mark.slow
@pytest.mark.parametrize("page", [page for page in PAGES if runnable_blocks(page)], ids=page_id)
def test_page_code_runs(page, tmp_path):
    blocks = runnable_blocks(page)
    (tmp_path / "examples").symlink_to(REPO / "examples")
    environment = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment.get('PATH', '')}"
    for line, language, code in blocks:
        if language == "python":
            command = [sys.executable, "-c", code]
        else:
            command = ["bash", "-e", "-c", with_fast_settings(code)]
        result = subprocess.run(
            command, cwd=tmp_path, env=environment, check=False, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, f"{page.name} line {line} ({language}) failed:\n{result.stdout}\n{result.stderr}"


def test_fast_settings_skip_resume():
    script = "in2r-graph train --run-name a \\\n    --epochs 5\nin2r-graph train --resume runs/a\nin2r-graph refiners\n"
    lines = with_fast_settings(script).splitlines()
    assert lines[0].endswith(FAST_TRAIN)
    assert "--epochs 5" in lines[0]
    assert lines[1] == "in2r-graph train --resume runs/a"
    assert lines[2] == "in2r-graph refiners"


def test_generated_references_are_current():
    result = subprocess.run(
        [sys.executable, str(DOCS / "gen_config_reference.py"), "--check"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


def test_site_builds_strict(tmp_path):
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent)) or shutil.which("mkdocs")
    if mkdocs is None:
        pytest.skip("mkdocs is not installed; install the docs extra: pip install -e '.[docs]'")
    pytest.importorskip("mkdocstrings", reason="mkdocstrings is not installed; install the docs extra")
    missing = [name for name in ("troubleshooting.md",) if not (DOCS / name).is_file()]
    if missing:
        pytest.skip(f"docs/{missing[0]} is linked from the nav but not written yet")
    result = subprocess.run(
        [mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO,
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "site" / "api" / "index.html").is_file()
