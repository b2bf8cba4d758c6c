"""Both images install their dependencies in a layer that depends on ``pyproject.toml`` alone, so that a
change to the sources or the README (most commits) reuses it: the trial image's dependency layer is
several GB, and each rebuild would leave another copy in the Docker cache of every CI machine."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


@pytest.mark.parametrize("path", ["Dockerfile", "trial_image/Dockerfile"])
def test_the_dependency_layer_reads_pyproject_alone(path: str) -> None:
    steps = instructions(ROOT / path)
    deps = next(
        i for i, (word, args) in enumerate(steps) if word == "RUN" and re.search(r"pip install \"\.\[", args)
    )
    copied = [args.split()[:-1] for word, args in steps[:deps] if word == "COPY"]
    assert copied == [["pyproject.toml"]], copied
    # The project itself (README included: the package's metadata reads it) comes after.
    later = [args for word, args in steps[deps:] if word == "COPY" and not args.startswith("--from")]
    assert any(args.startswith("README.md ") for args in later), later
