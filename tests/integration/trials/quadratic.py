"""A fast trial: maximizes -(x - 2)^2 through the public reporting API, reporting each step.

Steps are cheap (TRIAL_STEP_SECONDS, default 0.2 s) so a study of a few trials takes seconds. The
value at step s is -(x - 2)^2 - (STEPS - 1 - s) / 10: it improves as the "training" goes on, and a bad x
stays bad at every step, so a median pruner can stop it early.
"""

from __future__ import annotations

import os
import sys
import time

from hpo_trial import reporting

STEPS = int(os.environ.get("TRIAL_STEPS", "4"))
STEP_SECONDS = float(os.environ.get("TRIAL_STEP_SECONDS", "0.2"))


def main() -> int:
    trial = reporting.current_trial()
    x = float(trial.params["x"])
    print(f"trial {trial.number} attempt {trial.contract.attempt}: x={x}", flush=True)
    value = 0.0
    for step in range(STEPS):
        time.sleep(STEP_SECONDS)
        value = -((x - 2.0) ** 2) - (STEPS - 1 - step) / 10
        trial.report(value, step)
        if trial.should_prune():
            print(f"trial {trial.number} pruned at step {step}", flush=True)
            trial.prune()
            return 0
    trial.complete(value)
    print(f"trial {trial.number} finished with {value}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
