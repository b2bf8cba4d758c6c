"""The GPUs ``hpo run`` may pin trial processes to: ``CUDA_VISIBLE_DEVICES`` when set, else what
``nvidia-smi`` lists; none on a machine without either. How many processes share one is
:mod:`hpo_operator.core.claims`' (``spec.trials.perGPU``)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping

NVIDIA_SMI_TIMEOUT_S = 15.0


def visible_gpus(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The ``CUDA_VISIBLE_DEVICES`` entries of this machine's GPUs, as a trial process would name them."""
    env = os.environ if environ is None else environ
    if "CUDA_VISIBLE_DEVICES" in env:
        entries = [d.strip() for d in env["CUDA_VISIBLE_DEVICES"].split(",") if d.strip()]
        # CUDA stops at the first invalid entry; -1 (or any negative index) hides every GPU.
        kept: list[str] = []
        for d in entries:
            if d.lstrip("-").isdigit() and int(d) < 0:
                break
            kept.append(d)
        return tuple(kept)
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return ()
    try:
        done = subprocess.run(
            [smi, "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=NVIDIA_SMI_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ()
    if done.returncode != 0:
        return ()
    return tuple(line.strip() for line in done.stdout.splitlines() if line.strip().isdigit())
