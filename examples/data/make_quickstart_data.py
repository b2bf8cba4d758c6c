"""Generate the quickstart's small STS-style dataset: sentence pairs scored 0..1 for semantic similarity.

Nothing is downloaded: sentences are composed from a small vocabulary of synonym groups, and a pair's
score follows from what the two sentences share (who, what they do, where), so the data has a real,
learnable structure. The output is deterministic (fixed seed) and committed next to this script::

    python examples/data/make_quickstart_data.py          # rewrites sts-train.csv and sts-dev.csv

Columns: ``sentence1``, ``sentence2``, ``score`` (1.0 = same meaning, 0.0 = unrelated), the column
names of the STS Benchmark (``sentence-transformers/stsb``).
"""

from __future__ import annotations

import argparse
import csv
import random
from dataclasses import dataclass
from pathlib import Path

# Each group lists ways of saying the same thing; groups in the same topic are related but different.
SUBJECTS: list[tuple[str, ...]] = [
    ("A man", "A guy", "A gentleman"),
    ("A woman", "A lady"),
    ("A child", "A kid", "A young child"),
    ("A dog", "A puppy"),
    ("A cat", "A kitten"),
    ("A young man", "A teenage boy", "A youth"),
    ("An old man", "An elderly man"),
    ("A girl", "A young girl"),
    ("A boy", "A young boy"),
    ("A chef", "A cook"),
]

# (topic, synonym group): actions in one topic are related (both music, both food...).
ACTIONS: list[tuple[str, tuple[str, ...]]] = [
    ("music", ("is playing a guitar", "is strumming a guitar", "plays the guitar")),
    ("music", ("is playing the piano", "plays a piano", "is playing a keyboard")),
    ("music", ("is singing a song", "is singing", "sings a tune")),
    ("food", ("is cooking dinner", "is preparing a meal", "is making supper")),
    ("food", ("is eating a sandwich", "eats a sandwich", "is having a sandwich")),
    ("food", ("is slicing an onion", "is cutting an onion", "chops an onion")),
    ("motion", ("is riding a bike", "is riding a bicycle", "rides a bicycle")),
    ("motion", ("is running", "is jogging", "runs quickly")),
    ("motion", ("is swimming", "swims", "is swimming laps")),
    ("rest", ("is sleeping", "is asleep", "is taking a nap")),
    ("rest", ("is reading a book", "reads a novel", "is reading")),
    ("play", ("is playing with a ball", "plays with a ball", "is chasing a ball")),
    ("play", ("is jumping on a trampoline", "bounces on a trampoline")),
]

PLACES: list[tuple[str, ...]] = [
    ("in the park", "at the park"),
    ("on the street", "on the road"),
    ("in the kitchen", "inside the kitchen"),
    ("on the beach", "by the sea"),
    ("at home", "in the house"),
    ("in a garden", "in the yard"),
]


@dataclass(frozen=True)
class Meaning:
    subject: int
    action: int
    place: int | None


def render(m: Meaning, rng: random.Random) -> str:
    words = [rng.choice(SUBJECTS[m.subject]), rng.choice(ACTIONS[m.action][1])]
    if m.place is not None:
        words.append(rng.choice(PLACES[m.place]))
    return " ".join(words) + "."


def similarity(a: Meaning, b: Meaning) -> float:
    """The gold score of two meanings: who and what weigh most, where a little, related actions partly."""
    subject = 1.0 if a.subject == b.subject else 0.0
    if a.action == b.action:
        action = 1.0
    elif ACTIONS[a.action][0] == ACTIONS[b.action][0]:
        action = 0.35
    else:
        action = 0.0
    if a.place == b.place:
        place = 1.0
    elif a.place is None or b.place is None:
        place = 0.6  # one sentence leaves the place out
    else:
        place = 0.0
    return 0.35 * subject + 0.5 * action + 0.15 * place


def random_meaning(rng: random.Random) -> Meaning:
    place = rng.randrange(len(PLACES)) if rng.random() < 0.7 else None
    return Meaning(rng.randrange(len(SUBJECTS)), rng.randrange(len(ACTIONS)), place)


def related(m: Meaning, rng: random.Random) -> Meaning:
    """A meaning that shares some of ``m``: the kinds of pair that make the score range even."""
    kind = rng.randrange(6)
    if kind == 0:  # paraphrase
        return m
    if kind == 1:  # another place (or none)
        return Meaning(m.subject, m.action, rng.choice([None, *range(len(PLACES))]))
    if kind == 2:  # another subject
        return Meaning(rng.randrange(len(SUBJECTS)), m.action, m.place)
    if kind == 3:  # a related action
        topic = ACTIONS[m.action][0]
        same_topic = [i for i, (t, _) in enumerate(ACTIONS) if t == topic]
        return Meaning(m.subject, rng.choice(same_topic), m.place)
    if kind == 4:  # another action
        return Meaning(m.subject, rng.randrange(len(ACTIONS)), m.place)
    return random_meaning(rng)  # unrelated


def make_pairs(n: int, rng: random.Random) -> list[tuple[str, str, float]]:
    rows: list[tuple[str, str, float]] = []
    seen: set[tuple[str, str]] = set()
    while len(rows) < n:
        a = random_meaning(rng)
        b = related(a, rng)
        s1, s2 = render(a, rng), render(b, rng)
        if s1 == s2 or (s1, s2) in seen:
            continue
        seen.add((s1, s2))
        noise = rng.uniform(-0.04, 0.04)
        score = min(1.0, max(0.0, similarity(a, b) + noise))
        rows.append((s1, s2, round(score, 3)))
    return rows


def write_csv(path: Path, rows: list[tuple[str, str, float]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["sentence1", "sentence2", "score"])
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent, help="output directory")
    parser.add_argument("--train", type=int, default=320, help="number of training pairs")
    parser.add_argument("--dev", type=int, default=120, help="number of development pairs")
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    pairs = make_pairs(args.train + args.dev, rng)
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / "sts-train.csv", pairs[: args.train])
    write_csv(args.out / "sts-dev.csv", pairs[args.train :])
    print(f"wrote {args.train} training and {args.dev} development pairs to {args.out}")


if __name__ == "__main__":
    main()
