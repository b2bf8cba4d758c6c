"""A trial process that exits 0 without reporting a final value (a broken custom container)."""

from __future__ import annotations

from hpo_trial.contract import TrialContract

contract = TrialContract.from_env()
print(f"trial {contract.trial_number}: done, but nothing reported", flush=True)
