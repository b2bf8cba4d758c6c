"""A trial process that crashes without telling its trial anything (an OOM kill, a segfault...)."""

from __future__ import annotations

import sys

from hpo_trial.contract import TrialContract

contract = TrialContract.from_env()
print(f"trial {contract.trial_number} attempt {contract.attempt}: crashing", flush=True)
print("RuntimeError: CUDA error: an illegal memory access was encountered", file=sys.stderr, flush=True)
sys.exit(3)
