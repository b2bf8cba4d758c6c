"""Generate the reranker examples' small retrieval set: queries, a relevant passage, hard negatives.

Nothing is downloaded: the sentences come from the quickstart's generator (``make_quickstart_data.py``,
synonym groups for who, what and where). A query describes a scene; its relevant passage says the same
in other words (a paraphrase); its negatives are hard ones, scenes that share the subject, the action or
the topic of the action but are not the same scene. The output is deterministic (fixed seed) and
committed next to this script::

    python examples/data/make_reranker_data.py     # rewrites reranker-*.csv and retrieval-*.csv

``reranker-train.csv`` (columns ``query``, ``passage``, ``label``): each query with its relevant passage
(label 1) and three hard negatives (label 0), the shape ``BinaryCrossEntropyLoss`` trains on.
``reranker-dev.csv`` (columns ``query``, ``positive``, ``negative``): each query once per hard negative,
the shape the recipe turns into ``CrossEncoderRerankingEvaluator`` samples (one per query: its passage
and its negatives to rank). The sparse example's files hold the same queries: ``retrieval-train.csv``
(``query``, ``positive``, ``negative``: one hard negative each) and ``retrieval-dev.csv`` (``query``,
``positive``: the held-out queries and the corpus their passages make).
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from make_quickstart_data import ACTIONS, PLACES, SUBJECTS, Meaning, random_meaning, render


def hard_negative(m: Meaning, rng: random.Random) -> Meaning:
    """A different scene that shares part of ``m``: its subject, its action, or its action's topic."""
    while True:
        kind = rng.randrange(3)
        if kind == 0:  # same subject, another action
            n = Meaning(m.subject, rng.randrange(len(ACTIONS)), m.place)
        elif kind == 1:  # same action, another subject
            n = Meaning(rng.randrange(len(SUBJECTS)), m.action, m.place)
        else:  # a related action (same topic), maybe elsewhere
            topic = ACTIONS[m.action][0]
            same_topic = [i for i, (t, _) in enumerate(ACTIONS) if t == topic]
            place = rng.choice([m.place, None, *range(len(PLACES))])
            n = Meaning(m.subject, rng.choice(same_topic), place)
        if (n.subject, n.action) != (m.subject, m.action):
            return n


def make_queries(n: int, negatives: int, rng: random.Random) -> list[tuple[str, str, list[str]]]:
    """``n`` (query, relevant passage, hard negatives) with distinct queries."""
    out: list[tuple[str, str, list[str]]] = []
    seen: set[str] = set()
    while len(out) < n:
        m = random_meaning(rng)
        query, positive = render(m, rng), render(m, rng)
        if query in seen or positive == query:  # the relevant passage says it in other words
            continue
        seen.add(query)
        negs: list[str] = []
        while len(negs) < negatives:
            text = render(hard_negative(m, rng), rng)
            if text not in negs and text != positive:
                negs.append(text)
        out.append((query, positive, negs))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent, help="output directory")
    parser.add_argument("--train", type=int, default=80, help="training queries (4 rows each)")
    parser.add_argument("--dev", type=int, default=30, help="development queries (4 rows each)")
    parser.add_argument("--seed", type=int, default=29)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    queries = make_queries(args.train + args.dev, 3, rng)
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "reranker-train.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["query", "passage", "label"])
        for query, positive, negs in queries[: args.train]:
            writer.writerow([query, positive, 1])
            writer.writerows([query, n, 0] for n in negs)
    with (args.out / "reranker-dev.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["query", "positive", "negative"])
        for query, positive, negs in queries[args.train :]:
            writer.writerows([query, positive, n] for n in negs)
    # The same queries for the sparse example: (query, positive, hard negative) to train on,
    # (query, positive) to retrieve from (the evaluator's corpus is every held-out relevant passage).
    with (args.out / "retrieval-train.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["query", "positive", "negative"])
        writer.writerows([query, positive, negs[0]] for query, positive, negs in queries[: args.train])
    with (args.out / "retrieval-dev.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["query", "positive"])
        writer.writerows([query, positive] for query, positive, _ in queries[args.train :])
    print(f"wrote {args.train} training and {args.dev} development queries to {args.out}")


if __name__ == "__main__":
    main()
