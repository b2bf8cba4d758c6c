"""A custom trial container over a mixed search space: string, boolean and integer choices and a float.

Deterministic: the value is a function of the parameters; four intermediate reports shrink towards it, so
the median pruner stops the trials that start badly.
"""

from hpo_trial import reporting

STEPS = 4
OPTIM = {"adamw": 0.1, "sgd": 0.3, "adafactor_with_a_long_name": 0.2}


def main() -> None:
    trial = reporting.current_trial()
    p = trial.params
    value = OPTIM[p["optim"]] + (0.05 if p["fp16"] else 0.0) + p["batch"] / 1000
    value += (p["learning_rate"] - 3e-5) ** 2 * 1e6
    for step in range(1, STEPS + 1):
        trial.report(value + (STEPS - step) * 0.05, step)
        if trial.should_prune():
            trial.prune()
            return
    trial.complete(value)


if __name__ == "__main__":
    main()
