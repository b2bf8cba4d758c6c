"""A trial that says which GPU it was given and holds it a while: for the tests of shared GPU claims.

It prints the devices its pod got (``CUDA_VISIBLE_DEVICES`` and the harness driver's device names, as a
DRA driver passes them), and records them as the trial's user attributes. With ``GPU_BARRIER_DIR`` it
waits until ``GPU_BARRIER_COUNT`` trials have started (each writes a file there), so a test knows they
ran at once; ``CRASH_TRIAL=<n>`` makes attempt 0 of trial ``n`` crash as a CUDA error would, after
``CRASH_AFTER_SECONDS``. The value is -(x - 2)^2.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from hpo_trial import reporting

HOLD_SECONDS = float(os.environ.get("GPU_HOLD_SECONDS", "1"))


def main() -> int:
    trial = reporting.current_trial()
    contract = trial.contract
    cuda = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    devices = os.environ.get("HARNESS_DRA_DEVICES", "")
    print(
        f"trial {trial.number} attempt {contract.attempt}: CUDA_VISIBLE_DEVICES={cuda} devices={devices}",
        flush=True,
    )
    trial.set_attr(f"cuda_visible_devices_{contract.attempt}", cuda)
    trial.set_attr(f"devices_{contract.attempt}", devices)
    if os.environ.get("CRASH_TRIAL") == str(trial.number) and contract.attempt == 0:
        time.sleep(float(os.environ.get("CRASH_AFTER_SECONDS", "0")))
        print(
            "RuntimeError: CUDA error: an illegal memory access was encountered", file=sys.stderr, flush=True
        )
        return 3
    barrier = os.environ.get("GPU_BARRIER_DIR")
    if barrier:
        Path(barrier, f"{trial.number}-{contract.attempt}").write_text(devices)
        want = int(os.environ.get("GPU_BARRIER_COUNT", "1"))
        deadline = time.monotonic() + float(os.environ.get("GPU_BARRIER_TIMEOUT", "90"))
        while len(list(Path(barrier).iterdir())) < want:
            if time.monotonic() > deadline:
                trial.fail(f"only {len(list(Path(barrier).iterdir()))} of {want} trials ran at once")
                return 1
            time.sleep(0.1)
    time.sleep(HOLD_SECONDS)
    x = float(trial.params["x"])
    trial.complete(-((x - 2.0) ** 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
