#!/usr/bin/env bash
# The whole product on a throw-away kind cluster, the way a user meets it:
#   1. create a kind cluster (or reuse one of the same name),
#   2. run scripts/e2e.sh on it, the steps the test harness's real node runs too: build the operator
#      image (./Dockerfile) and the trial image (trial_image/Dockerfile), `kind load` both into the
#      cluster's node, `helm install` charts/hpo-operator (bundled PostgreSQL) pointing at those images,
#      `kubectl apply` an example study and wait until its phase is Succeeded, printing diagnostics
#      (the study, Events, operator logs, trial pods) on failure or timeout.
# Needs Docker (a running engine), kind, kubectl and helm on PATH (or KIND, KUBECTL, HELM naming them).
#
# Usage: scripts/kind-e2e.sh [--example FILE] [--timeout SECONDS] [--keep] [--skip-build]
#   --example FILE   the study to run (default examples/custom-container-study.yaml: fast, no downloads;
#                    examples/small-cpu-study.yaml trains a real model on CPU and needs the Hugging Face Hub)
#   --timeout S      how long to wait for Succeeded (default 900)
#   --keep           keep the cluster afterwards (default: delete it, unless it existed before)
#   --skip-build     use images already built under the same tags
# Environment: KIND_CLUSTER (default hpo-e2e), E2E_NAMESPACE (default hpo-e2e), IMAGE_TAG (default e2e).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

KIND=${KIND:-kind}
KUBECTL=${KUBECTL:-kubectl}
HELM=${HELM:-helm}
DOCKER=${DOCKER:-docker}
cluster=${KIND_CLUSTER:-hpo-e2e}
namespace=${E2E_NAMESPACE:-hpo-e2e}
tag=${IMAGE_TAG:-e2e}
example=examples/custom-container-study.yaml
timeout=900
keep=0
build=1

while [ $# -gt 0 ]; do
  case "$1" in
    --example) example=$2; shift 2 ;;
    --timeout) timeout=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    --skip-build) build=0; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "kind-e2e: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

log() { printf '\n== %s\n' "$*" >&2; }
die() { printf 'kind-e2e: %s\n' "$*" >&2; exit 1; }

for tool in "$DOCKER" "$KIND" "$KUBECTL" "$HELM"; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed (needed: docker, kind, kubectl, helm)"
done
"$DOCKER" info >/dev/null 2>&1 || die "the Docker engine is not running ('$DOCKER info' failed)"
[ -f "$example" ] || die "no such example: $example"

context="kind-$cluster"

created=0
if "$KIND" get clusters 2>/dev/null | grep -qx "$cluster"; then
  log "reusing kind cluster $cluster"
else
  log "creating kind cluster $cluster"
  "$KIND" create cluster --name "$cluster" --wait 180s
  created=1
fi

cleanup() {
  rc=$?
  if [ "$keep" = 1 ] || [ "$created" = 0 ]; then
    log "keeping cluster $cluster (delete it with: $KIND delete cluster --name $cluster)"
  else
    log "deleting kind cluster $cluster"
    "$KIND" delete cluster --name "$cluster" >/dev/null 2>&1 || true
  fi
  exit $rc
}
trap cleanup EXIT

steps=(load install run)
[ "$build" = 1 ] && steps=(build "${steps[@]}")
log "running scripts/e2e.sh ${steps[*]} on $context"
E2E_CONTEXT=$context E2E_LOAD="$KIND load docker-image --name $cluster" E2E_NAMESPACE=$namespace IMAGE_TAG=$tag \
  DOCKER=$DOCKER KUBECTL=$KUBECTL HELM=$HELM \
  "$root/scripts/e2e.sh" "${steps[@]}" --example "$example" --timeout "$timeout"
