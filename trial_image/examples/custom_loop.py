"""A custom training loop that reports to its HPOStudy trial: the reporting API end to end.

Run by the operator in a pod of your own image (``template.image`` + ``template.command``), or by
``hpo run``; the trial contract is in the environment. Here the "model" is one number trained by
gradient descent on x², so the example runs anywhere; replace the loop with your own training.
"""

from __future__ import annotations

import sys

from hpo_trial import reporting


def main() -> int:
    trial = reporting.current_trial()  # the study, the trial number and the parameters, from the environment
    try:
        lr = float(trial.params["learning_rate"])
        epochs = int(trial.params.get("epochs", 20))
    except (KeyError, ValueError) as e:
        trial.fail(f"bad parameters {trial.params}: {e}")  # FAIL, with a reason the study's status shows
        return 1

    x = 5.0
    loss = x * x
    for epoch in range(1, epochs + 1):
        for _ in range(10):  # one "epoch" of training
            x -= lr * 2 * x
        loss = x * x
        trial.report(loss, step=epoch)  # an intermediate value, at a step that means the same in every trial
        if trial.should_prune():  # the study's own pruner decides
            trial.prune()  # PRUNED; exit 0
            return 0
    trial.complete(loss)  # the final objective value (a list for a multi-objective study)
    return 0


if __name__ == "__main__":
    sys.exit(main())
