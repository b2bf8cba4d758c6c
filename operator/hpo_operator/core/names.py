"""Names and labels the operator gives things (docs/architecture.md, "Names").

* Optuna study: ``<namespace>.<name>.<uid>``, so a new resource with an old name is a new study.
* Trial pod: ``<name>-trial-<number>`` for attempt 0, ``<name>-trial-<number>-r<attempt>`` for retries.
* The default storage's Secret in the study's namespace: ``<name>-storage`` (key ``url``).
"""

from __future__ import annotations

GROUP = "hpo.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "HPOStudy"
PLURAL = "hpostudies"

LABEL_STUDY = "hpo.dev/study"
LABEL_TRIAL = "hpo.dev/trial"
LABEL_ATTEMPT = "hpo.dev/attempt"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "hpo-operator"
ANNOTATION_OPTUNA_STUDY = "hpo.dev/optuna-study"

DEFAULT_SECRET_KEY = "url"
CONTAINER_NAME = "trial"


def optuna_study_name(namespace: str, name: str, uid: str) -> str:
    return f"{namespace}.{name}.{uid}"


def parse_optuna_study_name(study: str) -> tuple[str, str, str]:
    """``(namespace, name, uid)`` of an Optuna study the operator named; ValueError for any other name.
    A namespace has no dot and a uid none; a name may have some."""
    namespace, _, rest = study.partition(".")
    name, _, uid = rest.rpartition(".")
    if not (namespace and name and uid):
        raise ValueError(f"{study!r} is not an HPOStudy's Optuna study (<namespace>.<name>.<uid>)")
    return namespace, name, uid


def pod_name(study: str, trial: int, attempt: int = 0) -> str:
    base = f"{study}-trial-{trial}"
    return base if attempt == 0 else f"{base}-r{attempt}"


def default_secret_name(study: str) -> str:
    return f"{study}-storage"


def pod_labels(study: str, trial: int, attempt: int) -> dict[str, str]:
    return {
        LABEL_STUDY: study,
        LABEL_TRIAL: str(trial),
        LABEL_ATTEMPT: str(attempt),
        LABEL_MANAGED_BY: MANAGER,
    }


def study_selector(study: str) -> str:
    """The label selector of every pod of one HPOStudy."""
    return f"{LABEL_STUDY}={study},{LABEL_MANAGED_BY}={MANAGER}"
