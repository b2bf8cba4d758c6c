"""A custom trial container's program, as a user would write it: the public reporting API only.

It minimizes ``(x - 0.3)^2 + y/10`` over ``STEPS`` steps, reporting a shrinking intermediate value at each
(so pruners and the report's intermediate-value plot have data), then completes. Test knobs in the
environment: ``STEP_SECONDS`` (sleep per step), ``PID_DIR`` (write ``<trial>-<attempt>.pid`` at start),
``FAIL_TRIALS`` (comma-separated trial numbers that crash with exit code 3), ``IGNORE_SIGTERM``.
"""

import os
import signal
import sys
import time

from hpo_trial import reporting

STEPS = 4


def main() -> None:
    trial = reporting.current_trial()
    attempt = int(os.environ.get("HPO_TRIAL_ATTEMPT", "0"))
    if os.environ.get("PID_DIR"):
        path = os.path.join(os.environ["PID_DIR"], f"{trial.number}-{attempt}.pid")
        with open(path, "w") as f:
            f.write(str(os.getpid()))
    if os.environ.get("IGNORE_SIGTERM"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print(f"trial {trial.number} attempt {attempt} params {trial.params}", flush=True)
    if str(trial.number) in os.environ.get("FAIL_TRIALS", "").split(","):
        print("Traceback (most recent call last):\nRuntimeError: the data loader exploded", file=sys.stderr)
        sys.exit(3)
    x = float(trial.params["x"])
    y = int(trial.params["y"])
    final = (x - 0.3) ** 2 + y / 10
    for step in range(1, STEPS + 1):
        time.sleep(float(os.environ.get("STEP_SECONDS", "0")))
        trial.report(final + (STEPS - step) * 0.05, step)
        if trial.should_prune():
            trial.prune()
            return
    trial.complete(final)


if __name__ == "__main__":
    main()
