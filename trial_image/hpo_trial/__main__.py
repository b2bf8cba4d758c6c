"""``python -m hpo_trial`` (console script ``hpo-trial``): run the trial the environment describes."""

from __future__ import annotations

import sys


def main() -> int:
    from hpo_trial.runner import main as run

    return run(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
