#!/usr/bin/env bash
# `make demo`: the operator bringing examples/sample.yaml to Ready in the local test world.
#
#   1. builds the operator and the sandbox,
#   2. starts the sandbox (etcd + kube-apiserver, moto behind the AWS gate, the ECS world, the
#      Prisma Cloud Console simulator),
#   3. installs the CRD, creates the Console credentials Secret and runs the operator,
#   4. applies the sample and prints its conditions as they change,
#   5. shows `kubectl get edd`, the AWS resources and the connected Defenders,
#   6. keeps everything running for you to look around until Ctrl-C (DEMO_EXIT=1: stop at once).
set -euo pipefail
cd "$(dirname "$0")/.."

# Ctrl-C in a terminal signals the whole foreground process group, `make` included, and make then
# reports the recipe as failed (`Error 130`) and dies of the signal itself, whatever the recipe
# does. So, in a terminal, run the demo as a job of its own (`set -m`): the terminal hands Ctrl-C
# to that job only, the job stops everything and exits 0, and make sees a clean exit.
if [ -t 0 ] && [ -z "${DEMO_JOB:-}" ]; then
  set -m
  DEMO_JOB=1 bash "$0" "$@"
  exit $?
fi

CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/ecs-defender-operator
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE/target}
eval "$(bash hack/install-test-tools.sh --print-env | sed 's/^/export /')"
TIMEOUT=${DEMO_TIMEOUT:-300}

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "building the operator and the sandbox"
# The workspace's feature set, as `make test` builds it: one build serves both (a per-package build
# resolves the AWS SDK's features differently and compiles it again).
cargo build --workspace --locked --quiet --bins
BIN=$CARGO_TARGET_DIR/debug

WORK=$(mktemp -d -t edo-demo-XXXXXX)
PIDS=()
INTERRUPTED=0
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  step "stopping the operator and the sandbox"
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
  if [ "$INTERRUPTED" = 1 ] || [ "$rc" = 0 ]; then
    echo "stopped cleanly: the operator and the sandbox are shut down and their files removed."
  else
    echo "stopped after an error (exit $rc)." >&2
  fi
}
trap cleanup EXIT
# Ctrl-C (or a TERM) is how the demo is meant to end: stop everything and exit 0.
trap 'INTERRUPTED=1; exit 0' INT TERM

step "starting the sandbox (logs: $WORK/sandbox.log)"
"$BIN/sandbox" up --env-file "$WORK/env" >"$WORK/sandbox.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 600); do
  [ -f "$WORK/env" ] && break
  kill -0 "${PIDS[0]}" 2>/dev/null || { cat "$WORK/sandbox.log"; echo "the sandbox failed to start" >&2; exit 1; }
  sleep 0.2
done
[ -f "$WORK/env" ] || { echo "the sandbox did not come up" >&2; exit 1; }
set -a; . "$WORK/env"; set +a
echo "kube-apiserver: $(grep -m1 server: "$KUBECONFIG" | awk '{print $2}')"
echo "AWS endpoint (the gate in front of moto): $AWS_ENDPOINT_URL"
echo "Prisma Cloud Console simulator: $PRISMA_CONSOLE_URL"

step "installing the CRD"
"$KUBECTL" apply --server-side -f crds/ecsdefenderdeployments.ecsdefender.io.yaml
"$KUBECTL" wait --for condition=Established --timeout=60s crd/ecsdefenderdeployments.ecsdefender.io

step "creating the Console credentials Secret pc-console"
"$KUBECTL" create secret generic pc-console \
  --from-literal=username="$PRISMA_CONSOLE_USERNAME" --from-literal=password="$PRISMA_CONSOLE_PASSWORD" \
  --from-literal=url="$PRISMA_CONSOLE_URL" \
  --dry-run=client -o yaml | "$KUBECTL" apply -f -

step "starting the operator (logs: $WORK/operator.log)"
# AWS credentials and endpoint come from the environment, as with IRSA or Pod Identity in a cluster.
# The simulator's Console speaks plain http: the demo allows it (a real install keeps https only).
# The sample brings no AWS credentials: its namespace may use the operator's (as the operator's own
# namespace may in a cluster).
METRICS_ADDR=127.0.0.1:0 REQUEUE_CONVERGING_SECONDS=1 ALLOW_INSECURE_CONSOLE=true DEFAULT_CREDENTIALS_NAMESPACES=default RUST_LOG=info,ecs_defender_operator=info \
  "$BIN/ecs-defender-operator" >"$WORK/operator.log" 2>&1 &
PIDS+=($!)

step "applying examples/sample.yaml (its Console URL pointed at the simulator)"
sed "s#url: https://console.example.com:8083.*#url: $PRISMA_CONSOLE_URL#" examples/sample.yaml | "$KUBECTL" apply -f -

step "conditions as they change"
last=""
start=$(date +%s)
while :; do
  now=$(date +%s)
  conds=$("$KUBECTL" get edd sample -o jsonpath='{range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\n"}{end}' 2>/dev/null || true)
  if [ -n "$conds" ] && [ "$conds" != "$last" ]; then
    echo "--- after $((now - start))s"
    diff <(printf '%s\n' "$last") <(printf '%s\n' "$conds") | sed -n 's/^> /  /p' || true
    last=$conds
  fi
  if grep -q '^Ready=True' <<<"$conds"; then break; fi
  if [ $((now - start)) -gt "$TIMEOUT" ]; then
    echo "not Ready after ${TIMEOUT}s; operator log tail:" >&2; tail -30 "$WORK/operator.log" >&2; exit 1
  fi
  kill -0 "${PIDS[1]}" 2>/dev/null || { tail -30 "$WORK/operator.log" >&2; echo "the operator exited" >&2; exit 1; }
  sleep 1
done
echo "sample is Ready after $(( $(date +%s) - start ))s"

step "kubectl get edd"
"$KUBECTL" get edd -o wide
step "what the operator created in AWS, and the Defenders in the Console"
"$BIN/sandbox" show
step "Events"
"$KUBECTL" get events --field-selector involvedObject.name=sample --sort-by=.lastTimestamp -o custom-columns=REASON:.reason,MESSAGE:.message 2>/dev/null | head -20 || true

if [ "${DEMO_EXIT:-0}" = 1 ]; then exit 0; fi
cat <<EOT

The demo keeps running. In another terminal, look around:
  export KUBECONFIG=$KUBECONFIG
  $KUBECTL get edd -w
  $KUBECTL describe edd sample
  $KUBECTL get edd sample -o yaml
  $KUBECTL delete edd sample          # watch the teardown, in reverse order
  (set -a; . $WORK/env; $BIN/sandbox show)
Operator log: $WORK/operator.log
Press Ctrl-C to stop everything.
EOT
while kill -0 "${PIDS[1]}" 2>/dev/null; do sleep 1; done
