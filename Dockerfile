# syntax=docker/dockerfile:1
# The operator image: the kopf operator (`python -m hpo_operator`) and its clients for Kubernetes,
# PostgreSQL and Prometheus. No torch and no training code: trials run in the trial image
# (trial_image/Dockerfile). Build from the repository root:
#
#   docker build -t ghcr.io/hpo-dev/hpo-operator:0.1.0 .

# BASE_IMAGE: any Debian bookworm image with Python 3.11 as `python` on PATH (the tests build this
# file on a local base made with debootstrap, since they reach no registry).
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/hpo
WORKDIR /src
# Only what the package build reads; the operator extra pulls kopf, kubernetes, psycopg2-binary and
# prometheus-client on top of the core (optuna, sqlalchemy, pydantic). A non-editable install, so
# /src is not needed at run time.
COPY pyproject.toml ./
# Dependencies first, in a layer a source change does not rebuild (empty package directories and an
# empty README stand in for the sources while pip resolves them: the layer depends on pyproject.toml
# alone), then the project itself.
RUN mkdir -p operator/hpo_operator trial_image/hpo_trial \
 && touch README.md operator/hpo_operator/__init__.py trial_image/hpo_trial/__init__.py \
 && /opt/hpo/bin/pip install ".[operator]" \
 && /opt/hpo/bin/pip uninstall -y hpo-operator \
 && rm -rf build operator trial_image ./*.egg-info  # else setuptools reuses the stand-ins' build
COPY README.md ./
COPY operator/ operator/
COPY trial_image/hpo_trial/ trial_image/hpo_trial/
RUN /opt/hpo/bin/pip install --no-deps . \
 && /opt/hpo/bin/python -c "import hpo_operator, kopf, kubernetes, psycopg2, prometheus_client" \
 && ! /opt/hpo/bin/python -c "import torch" 2>/dev/null

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="hpo-operator" \
      org.opencontainers.image.description="Kubernetes operator running HPOStudy resources as Optuna studies" \
      org.opencontainers.image.source="https://github.com/hpo-dev/hpo-operator" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/hpo /opt/hpo
ENV PATH=/opt/hpo/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# A numeric non-root user, so Kubernetes' runAsNonRoot can verify it without a passwd lookup.
USER 65532:65532
WORKDIR /tmp
# kopf's liveness endpoint (HPO_LIVENESS_ENDPOINT) and Prometheus metrics (HPO_METRICS_PORT).
EXPOSE 8080 8000
ENTRYPOINT ["python", "-m", "hpo_operator"]
