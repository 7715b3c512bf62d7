#!/usr/bin/env bash
# `make test`: builds every test target once, then runs the test binaries two at a time (each runs
# its own tests two at a time, as `cargo test` does). Most tests wait on their test world (an API
# server, moto, the Console simulator) more than they compute, so two lanes roughly halve the
# wall time on two cores. The longest binaries start first. A binary's output is printed when it
# fails; the exit status is non-zero if any failed. Arguments go to every binary (a test-name
# filter, `--nocapture`). One binary the usual way: `cargo test --workspace --locked --test NAME`.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${TEST_LANES:=2}"

logs=$(mktemp -d "${TMPDIR:-/tmp}/ecs-defender-tests.XXXXXX")
trap 'rm -rf "$logs"' EXIT

# Build, and list each test binary with the directory cargo would run it in (its package's).
cargo test --workspace --all-targets --locked --no-run --message-format=json-render-diagnostics \
    | grep -E '"profile":\{[^}]*"test":true' \
    | sed -n 's/.*"manifest_path":"\([^"]*\)\/Cargo.toml".*"executable":"\([^"]*\)".*/\2 \1/p' \
    > "$logs/binaries"

# Longest first (measured on two cores); the rest in cargo's order.
first="crash_consistency faults operator_day_two operator_failures reliability console_variants
operator_e2e quiet_reconciles bad_input rate_budgets"
{
    for name in $first; do grep "/deps/${name}-[0-9a-f]* " "$logs/binaries" || true; done
    grep -v -E "/deps/($(echo $first | tr ' ' '|'))-[0-9a-f]* " "$logs/binaries" || true
} > "$logs/order"

run_one() {
    local bin=$1 dir=$2 logs=$3
    shift 3
    local name start rc
    name=$(basename "$bin")
    start=$(date +%s)
    if (cd "$dir" && "$bin" "$@") > "$logs/$name.log" 2>&1; then rc=0; else rc=$?; fi
    local summary
    summary=$(grep -E '^test result:' "$logs/$name.log" | tail -1 || true)
    printf '%-45s %4ss  %s\n' "${name%-*}" "$(( $(date +%s) - start ))" "${summary:-no result (exit $rc)}"
    if [ "$rc" -ne 0 ]; then
        echo "---- output of ${name%-*} ----"
        cat "$logs/$name.log"
        echo "---- end of ${name%-*} ----"
        touch "$logs/failed.${name%-*}"
    fi
}
export -f run_one

start=$(date +%s)
# shellcheck disable=SC2016
xargs -P "$TEST_LANES" -L 1 bash -c 'run_one "$0" "$1" "$2" "${@:3}"' < <(
    while read -r bin dir; do
        printf '%q %q %q' "$bin" "$dir" "$logs"
        for a in "$@"; do printf ' %q' "$a"; done
        printf '\n'
    done < "$logs/order"
)
echo "all test binaries: $(( $(date +%s) - start )) s"
failed=$(cd "$logs" && ls failed.* 2>/dev/null | sed 's/^failed\.//' || true)
if [ -n "$failed" ]; then
    echo "FAILED:" $failed
    exit 1
fi
