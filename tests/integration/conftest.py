"""The operator fixtures of ``test_operator.py`` (an operator process, its storage, the CRD, a pod
watch), shared with the other operator test files of this directory."""

from test_operator import crd, operator, pods, storage_url  # noqa: F401
