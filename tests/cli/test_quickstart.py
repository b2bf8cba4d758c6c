"""The quickstart: ``hpo run examples/quickstart.yaml`` finishes on a small CPU with nothing downloaded."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


def test_the_committed_dataset_is_what_the_generator_writes(tmp_path: Path) -> None:
    script = EXAMPLES / "data" / "make_quickstart_data.py"
    subprocess.run([sys.executable, str(script), "--out", str(tmp_path)], check=True, timeout=60)
    for name in ("sts-train.csv", "sts-dev.csv"):
        assert (tmp_path / name).read_bytes() == (EXAMPLES / "data" / name).read_bytes(), name
    rows = list(csv.DictReader((EXAMPLES / "data" / "sts-train.csv").open()))
    assert len(rows) == 320 and set(rows[0]) == {"sentence1", "sentence2", "score"}
    scores = [float(r["score"]) for r in rows]
    assert min(scores) == 0.0 and max(scores) == 1.0
    # Spread over the whole range, not two clusters: every tenth of [0, 1] but one or two is used.
    assert len({min(int(s * 10), 9) for s in scores}) >= 8
    assert len(list(csv.DictReader((EXAMPLES / "data" / "sts-dev.csv").open()))) == 120
