#!/usr/bin/env bash
# Runs schemathesis against the OpenAPI document of a running `sluice api` (the real binary)
# and fails when any response is a server error (5xx) or does not match the document.
#
# It starts its own redis-server and `sluice api` on free ports of 127.0.0.1, with bearer
# tokens from a config file (so the authenticated routes are exercised) and the example
# pipelines of config/pipelines applied, and stops both on exit whatever happens.
#
# Usage: scripts/schemathesis.sh [MAX_EXAMPLES_PER_OPERATION]   (default 30)
# Env:   SLUICE_BIN         the sluice binary (default: built with `cargo build -p sluice`)
#        SCHEMATHESIS_SEED  a fixed seed, to replay a run
# schemathesis itself is installed from PyPI when missing (the version pinned below).
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
max_examples="${1:-30}"

if ! schemathesis --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    "schemathesis==$SCHEMATHESIS_VERSION"
fi

if [ -z "${SLUICE_BIN:-}" ]; then
  cargo build --locked --quiet -p sluice
  SLUICE_BIN="$(pwd)/target/debug/sluice"
fi

work="$(mktemp -d)"
redis_pid=
api_pid=
cleanup() {
  # Only the two processes this script started.
  if [ -n "$api_pid" ]; then kill "$api_pid" 2>/dev/null || true; wait "$api_pid" 2>/dev/null || true; fi
  if [ -n "$redis_pid" ]; then kill "$redis_pid" 2>/dev/null || true; wait "$redis_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for() { # what, seconds, command...
  local what="$1" seconds="$2"
  shift 2
  for _ in $(seq 1 $((seconds * 10))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "schemathesis.sh: $what did not come up within ${seconds}s" >&2
  return 1
}

redis_port="$(free_port)"
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
  --dir "$work" --daemonize no --loglevel warning >"$work/redis.log" 2>&1 &
redis_pid=$!
wait_for "redis-server" 10 redis-cli -p "$redis_port" ping

api_port="$(free_port)"
admin_token="schemathesis-admin-$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
mkdir -p "$work/pipelines"
cp config/pipelines/*.toml "$work/pipelines/"
cat >"$work/sluice.toml" <<EOF
[redis]
url = "redis://127.0.0.1:$redis_port"
prefix = "schemathesis"

[api]
listen = "127.0.0.1:$api_port"

[pipelines]
dir = "pipelines"

[log]
filter = "warn"
format = "json"

[[auth.tokens]]
subject = "schemathesis"
role = "admin"
token_env = "SCHEMATHESIS_ADMIN_TOKEN"
EOF

SCHEMATHESIS_ADMIN_TOKEN="$admin_token" "$SLUICE_BIN" api --config "$work/sluice.toml" \
  >"$work/api.log" 2>&1 &
api_pid=$!
base="http://127.0.0.1:$api_port"
wait_for "sluice api" 60 python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$base/readyz"

seed=()
if [ -n "${SCHEMATHESIS_SEED:-}" ]; then seed=(--seed "$SCHEMATHESIS_SEED"); fi

# The live event stream (`GET /v1/events` without `once=true`) stays open by design; every
# other operation is tested. Checks: no 5xx, and status codes, content types, headers and
# bodies as the document describes them. A lease long-polls for up to 30 s (`wait_ms`) on an
# empty queue, hence the request timeout, and the lease runs apart without the coverage
# phase, whose boundary values would make it wait 30 s again and again.
run() {
  schemathesis run "$base/v1/openapi.json" \
    --url "$base" \
    --header "Authorization: Bearer $admin_token" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
    --max-examples "$max_examples" \
    --workers 2 \
    --request-timeout 45 \
    --suppress-health-check all \
    --exclude-path /v1/events \
    "${seed[@]}" "$@"
}
status=0
# From the scratch directory: schemathesis keeps a cache in the working directory.
cd "$work"
run --phases examples,coverage,fuzzing --exclude-path '/v1/queues/{q}/lease' || status=$?
run --phases examples,fuzzing --include-path '/v1/queues/{q}/lease' || status=$?

if [ "$status" != 0 ]; then
  echo "schemathesis.sh: schemathesis failed (exit $status); the API's log follows" >&2
  tail -n 50 "$work/api.log" >&2 || true
fi
if ! kill -0 "$api_pid" 2>/dev/null; then
  echo "schemathesis.sh: sluice api died during the run; its log follows" >&2
  tail -n 50 "$work/api.log" >&2 || true
  status=1
fi
exit "$status"
