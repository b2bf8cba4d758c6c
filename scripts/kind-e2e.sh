#!/usr/bin/env bash
# The whole product on a throw-away kind cluster, the way a user meets it:
#   1. create a kind cluster (or reuse one of the same name),
#   2. build the operator image (./Dockerfile) and the trial image (trial_image/Dockerfile),
#   3. `kind load` both into the cluster's node,
#   4. `helm install` charts/hpo-operator (bundled PostgreSQL) pointing at those images,
#   5. `kubectl apply` an example study and wait until its phase is Succeeded,
#   6. on failure or timeout print diagnostics: the study (describe), Events, operator logs, trial pods.
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
release=hpo-operator
system_ns=hpo-system
operator_image=hpo-operator:$tag
trial_image=hpo-trial:$tag
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
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
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
k() { "$KUBECTL" --context "$context" "$@"; }

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

if [ "$build" = 1 ]; then
  log "building $operator_image (Dockerfile)"
  "$DOCKER" build -t "$operator_image" -f Dockerfile .
  log "building $trial_image (trial_image/Dockerfile)"
  "$DOCKER" build -t "$trial_image" -f trial_image/Dockerfile .
fi

log "loading images into $cluster"
"$KIND" load docker-image --name "$cluster" "$operator_image" "$trial_image"

log "installing the chart as $release in $system_ns"
"$HELM" --kube-context "$context" upgrade --install "$release" charts/hpo-operator \
  --namespace "$system_ns" --create-namespace \
  --set image.repository=hpo-operator --set image.tag="$tag" --set image.pullPolicy=Never \
  --set trialImage.repository=hpo-trial --set trialImage.tag="$tag" \
  --wait --timeout 10m

diagnostics() {
  local study=$1
  log "diagnostics: HPOStudy $study"
  k -n "$namespace" get hpostudies -o wide || true
  k -n "$namespace" describe hpostudy "$study" || true
  log "diagnostics: Events in $namespace"
  k -n "$namespace" get events --sort-by=.lastTimestamp || true
  log "diagnostics: trial pods"
  k -n "$namespace" get pods -l "hpo.dev/study=$study" -o wide || true
  k -n "$namespace" logs -l "hpo.dev/study=$study" --prefix --tail=40 --max-log-requests=20 || true
  log "diagnostics: operator"
  k -n "$system_ns" get pods -o wide || true
  k -n "$system_ns" describe deployment "$release" || true
  k -n "$system_ns" logs "deployment/$release" --tail=200 || true
  k -n "$system_ns" get events --sort-by=.lastTimestamp || true
}

log "applying $example in $namespace"
k create namespace "$namespace" --dry-run=client -o yaml | k apply -f - >/dev/null
study=$(k -n "$namespace" apply -f "$example" -o name | sed -n 's|^hpostudy\.hpo\.dev/||p' | head -n1)
[ -n "$study" ] || die "$example holds no HPOStudy"

log "waiting up to ${timeout}s for HPOStudy $study to succeed"
deadline=$(( $(date +%s) + timeout ))
phase=""
while :; do
  phase=$(k -n "$namespace" get hpostudy "$study" -o jsonpath='{.status.phase}' 2>/dev/null || true)
  case "$phase" in
    Succeeded) break ;;
    Failed) diagnostics "$study"; die "HPOStudy $study failed" ;;
  esac
  if [ "$(date +%s)" -ge "$deadline" ]; then
    diagnostics "$study"
    die "HPOStudy $study is still '${phase:-<no phase>}' after ${timeout}s"
  fi
  sleep 5
done

k -n "$namespace" get hpostudies
log "HPOStudy $study succeeded"
