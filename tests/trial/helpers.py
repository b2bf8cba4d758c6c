"""Helpers for the training container's tests: offline settings, generated data, studies and trials."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# No test may try the network, in the test process or in the trial processes it starts.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
}

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
THREADS = 2

TOPICS = {
    "animals": ["cat", "dog", "horse", "bird", "fish", "mouse", "cow", "sheep", "goat", "duck"],
    "food": ["bread", "apple", "rice", "soup", "cheese", "pasta", "salad", "cake", "honey", "tea"],
    "weather": ["rain", "snow", "wind", "storm", "cloud", "sun", "fog", "frost", "heat", "ice"],
    "music": ["song", "piano", "drum", "guitar", "violin", "choir", "band", "tune", "rhythm", "opera"],
    "sport": ["ball", "goal", "team", "match", "race", "coach", "score", "field", "runner", "swim"],
    "city": ["street", "bridge", "tower", "market", "train", "bus", "park", "road", "square", "harbor"],
}
FILLERS = ["the", "a", "an", "of", "on", "in", "with", "and", "near", "under"]
VOCABULARY = sorted({w for ws in TOPICS.values() for w in ws} | set(FILLERS))


def _sentence(rng: random.Random, topic: str, n: int = 5) -> str:
    words = rng.sample(TOPICS[topic], n - 2) + rng.sample(FILLERS, 2)
    rng.shuffle(words)
    return " ".join(words)


def make_pairs(n: int, seed: int) -> list[dict[str, Any]]:
    """Sentence pairs scored 0..1: the same topic scores high, different topics low."""
    rng = random.Random(seed)
    names = sorted(TOPICS)
    rows = []
    for i in range(n):
        a = rng.choice(names)
        b = a if i % 2 == 0 else rng.choice([t for t in names if t != a])
        score = round(rng.uniform(0.7, 1.0) if a == b else rng.uniform(0.0, 0.3), 3)
        rows.append({"sentence1": _sentence(rng, a), "sentence2": _sentence(rng, b), "score": score})
    return rows


def make_triplets(n: int, seed: int) -> list[dict[str, str]]:
    """(anchor, positive, negative): the positive shares the anchor's topic, the negative does not."""
    rng = random.Random(seed)
    names = sorted(TOPICS)
    rows = []
    for _ in range(n):
        a = rng.choice(names)
        b = rng.choice([t for t in names if t != a])
        rows.append(
            {"anchor": _sentence(rng, a), "positive": _sentence(rng, a), "negative": _sentence(rng, b)}
        )
    return rows


def write_jsonl(path: Path, rows: list[Mapping[str, Any]]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@dataclass(frozen=True)
class TinyData:
    dir: Path
    pairs_train: str  # sentence1, sentence2, score (0..1); 64 rows
    pairs_dev: str  # 40 rows
    triplets_train: str  # anchor, positive, negative; 48 rows
    triplets_dev: str  # 24 rows


def make_study(url: str, name: str, direction: str = "maximize") -> Any:
    import optuna

    return optuna.create_study(storage=url, study_name=name, direction=direction)


def ask_trial(study: Any, params: Mapping[str, Any]) -> Any:
    """A RUNNING trial with these parameters, as the operator's ``ask`` leaves it."""
    from optuna.distributions import (
        BaseDistribution,
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    def fixed(v: Any) -> BaseDistribution:
        if isinstance(v, bool) or not isinstance(v, int | float):
            return CategoricalDistribution([v])
        return IntDistribution(v, v) if isinstance(v, int) else FloatDistribution(v, v)

    return study.ask({k: fixed(v) for k, v in params.items()})


@dataclass
class TrialRun:
    returncode: int
    output: str


RunTrial = Callable[..., TrialRun]


def run_hpo_trial(
    env: Mapping[str, str], cwd: Path, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``python -m hpo_trial`` with this environment (the trial contract in it, or not), output captured."""
    return subprocess.run(
        [sys.executable, "-m", "hpo_trial"],
        env=dict(env),
        cwd=str(cwd),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_asked(
    run: RunTrial,
    storage_url: str,
    study: Any,
    trial: Any,
    trainer: Mapping[str, Any],
    objective: str,
    **extra: Any,
) -> TrialRun:
    """Run the asked ``trial`` of ``study`` (its number and parameters) with this recipe."""
    return run(
        storage_url=storage_url,
        study_name=study.study_name,
        trial_number=trial.number,
        params=trial.params,
        trainer=trainer,
        objective=objective,
        **extra,
    )


def read_sts(path: Path) -> list[dict[str, Any]]:
    """STS Benchmark rows: tab-separated, 1-based column 5 the 0-5 score, 6 and 7 the sentences.

    Some lines carry extra trailing columns (sources); only the first seven fields are read, and no
    quoting is applied (sentences contain quote characters). Scores are normalized to 0..1.
    """
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        fields = line.split("\t")
        if len(fields) < 7:
            raise ValueError(f"{path}:{n}: expected at least 7 tab-separated fields, got {len(fields)}")
        rows.append({"sentence1": fields[5], "sentence2": fields[6], "score": float(fields[4]) / 5.0})
    return rows
