#!/usr/bin/env bash
# The product end to end on a cluster that exists already, the way a user meets it. Shared by
# scripts/kind-e2e.sh (a kind cluster on a laptop) and the test harness's real node (tests/e2e), so both
# run the same steps:
#   build    the operator image (./Dockerfile) and the trial image (trial_image/Dockerfile)
#   load     put them (and E2E_EXTRA_IMAGES) into the cluster's nodes with $E2E_LOAD
#   install  `helm upgrade --install` charts/hpo-operator (bundled PostgreSQL) with those images
#   run      `kubectl apply` the example study and wait until its phase is Succeeded; on failure or
#            timeout print diagnostics (the study, Events, operator logs, trial pods)
#   all      build, load, install, run
#
# Usage: scripts/e2e.sh [STEP...] [--example FILE] [--timeout SECONDS]
#   --example FILE   the study to run (default examples/custom-container-study.yaml: fast, no downloads)
#   --timeout S      how long to wait for Succeeded (default 900)
# Environment:
#   DOCKER, KUBECTL, HELM   the tools (default: docker, kubectl, helm on PATH)
#   E2E_CONTEXT             the kubeconfig context (default: the current one)
#   E2E_LOAD                the command that loads Docker images into the cluster, given image names
#                           (required for `load`; kind-e2e.sh sets `kind load docker-image --name NAME`)
#   E2E_BASE_IMAGE          BASE_IMAGE build argument of the operator image (default: its Dockerfile's)
#   E2E_TRIAL_BASE_IMAGE    BASE_IMAGE build argument of the trial image (default: its Dockerfile's)
#   E2E_BUILD_NETWORK       `docker build --network` (default: the engine's default)
#   E2E_EXTRA_IMAGES        more images, built already, for `load` (space-separated)
#   E2E_HELM_SET            more `helm --set` values (space-separated key=value)
#   E2E_NAMESPACE           the study's namespace (default hpo-e2e)
#   IMAGE_TAG               the images' tag (default e2e)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

DOCKER=${DOCKER:-docker}
KUBECTL=${KUBECTL:-kubectl}
HELM=${HELM:-helm}
namespace=${E2E_NAMESPACE:-hpo-e2e}
tag=${IMAGE_TAG:-e2e}
release=hpo-operator
system_ns=hpo-system
operator_image=hpo-operator:$tag
trial_image=hpo-trial:$tag
example=examples/custom-container-study.yaml
timeout=900
steps=()

while [ $# -gt 0 ]; do
  case "$1" in
    build|load|install|run) steps+=("$1"); shift ;;
    all) steps+=(build load install run); shift ;;
    --example) example=$2; shift 2 ;;
    --timeout) timeout=$2; shift 2 ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "e2e: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ ${#steps[@]} -gt 0 ] || steps=(build load install run)

log() { printf '\n== %s\n' "$*" >&2; }
die() { printf 'e2e: %s\n' "$*" >&2; exit 1; }

k() {
  if [ -n "${E2E_CONTEXT:-}" ]; then "$KUBECTL" --context "$E2E_CONTEXT" "$@"; else "$KUBECTL" "$@"; fi
}
h() {
  if [ -n "${E2E_CONTEXT:-}" ]; then "$HELM" --kube-context "$E2E_CONTEXT" "$@"; else "$HELM" "$@"; fi
}

# Build image $1 with the remaining arguments, then remove the image it replaced (by ID, so nothing
# else is touched; refused, and kept, while another tag or a container uses it) with the layers only it
# used: a warm run's Docker cache keeps one copy of each image, not one per change.
build_replacing() {
  local image=$1 old new
  shift
  old=$("$DOCKER" image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)
  "$DOCKER" build "$@" -t "$image" .
  new=$("$DOCKER" image inspect -f '{{.Id}}' "$image")
  if [ -n "$old" ] && [ "$old" != "$new" ]; then "$DOCKER" rmi "$old" >/dev/null 2>&1 || true; fi
}

build() {
  local args=()
  [ -n "${E2E_BUILD_NETWORK:-}" ] && args+=(--network "$E2E_BUILD_NETWORK")
  local op_args=("${args[@]}") trial_args=("${args[@]}")
  [ -n "${E2E_BASE_IMAGE:-}" ] && op_args+=(--build-arg "BASE_IMAGE=$E2E_BASE_IMAGE")
  [ -n "${E2E_TRIAL_BASE_IMAGE:-}" ] && trial_args+=(--build-arg "BASE_IMAGE=$E2E_TRIAL_BASE_IMAGE")
  log "building $operator_image (Dockerfile)"
  build_replacing "$operator_image" "${op_args[@]}" -f Dockerfile
  log "building $trial_image (trial_image/Dockerfile)"
  build_replacing "$trial_image" "${trial_args[@]}" -f trial_image/Dockerfile
}

load() {
  [ -n "${E2E_LOAD:-}" ] || die "E2E_LOAD is not set: name the command that loads Docker images into the cluster"
  # shellcheck disable=SC2086 # E2E_LOAD and E2E_EXTRA_IMAGES are word lists
  log "loading $operator_image $trial_image ${E2E_EXTRA_IMAGES:-}into the cluster"
  # shellcheck disable=SC2086
  $E2E_LOAD "$operator_image" "$trial_image" ${E2E_EXTRA_IMAGES:-}
}

install() {
  local sets=(
    --set image.repository=hpo-operator --set image.tag="$tag" --set image.pullPolicy=Never
    --set trialImage.repository=hpo-trial --set trialImage.tag="$tag"
  )
  for value in ${E2E_HELM_SET:-}; do sets+=(--set "$value"); done
  log "installing the chart as $release in $system_ns"
  h upgrade --install "$release" charts/hpo-operator \
    --namespace "$system_ns" --create-namespace "${sets[@]}" --wait --timeout 10m
}

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

run_study() {
  [ -f "$example" ] || die "no such example: $example"
  log "applying $example in $namespace"
  k create namespace "$namespace" --dry-run=client -o yaml | k apply -f - >/dev/null
  study=$(k -n "$namespace" apply -f "$example" -o name | sed -n 's|^hpostudy\.hpo\.dev/||p' | head -n1)
  [ -n "$study" ] || die "$example holds no HPOStudy"
  log "waiting up to ${timeout}s for HPOStudy $study to succeed"
  local deadline=$(( $(date +%s) + timeout )) phase=""
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
}

for step in "${steps[@]}"; do
  case "$step" in
    build) build ;;
    load) load ;;
    install) install ;;
    run) run_study ;;
  esac
done
