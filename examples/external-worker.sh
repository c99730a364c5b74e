#!/usr/bin/env bash
# An external sluice worker in bash, with curl, and jq for JSON (python3 when jq is absent).
#
# It leases jobs of one queue over the sluice HTTP API (long-polling while the queue is
# empty), runs a handler command for each job while a background loop heartbeats the lease,
# and posts the result with an Idempotency-Key made of the job id and the attempt number,
# so a post that is retried is applied once. The jobs it gets are those sluice's own workers
# do not run: `external` pipeline steps and standalone jobs of custom kinds.
#
# The handler gets the job's payload (JSON) on standard input, and SLUICE_JOB_ID,
# SLUICE_JOB_KIND and SLUICE_ATTEMPT in its environment. What it prints is the output (JSON,
# else kept as a string); a non-zero exit is a failure (retried per the job's policy), with
# the end of its standard error as the error. Without a handler, the payload is the output.
#
# SIGTERM or SIGINT: no new lease; the current job is finished and its result posted, then
# the script exits 0 (a lease already waiting returns within the long-poll's wait).
#
#   examples/external-worker.sh -q media -w thumbs-sh -- ./make-thumbnail.sh
#
# Options: -q queue (default `default`), -w worker name (default host-pid), -n jobs to do
# before exiting (default 0: never stop), -t lease length in ms (default 30000), -W
# long-poll wait in ms (default 10000). Environment: SLUICE_API_URL (default
# http://127.0.0.1:7070), SLUICE_TOKEN (a token of role worker or higher), JSON_TOOL (`jq`
# or `python3`: which one reads and writes JSON; default jq when installed).

set -u

api=${SLUICE_API_URL:-http://127.0.0.1:7070}
queue=default
worker="$(hostname)-$$"
max_jobs=0
lease_ms=30000
wait_ms=10000
while getopts "q:w:n:t:W:" opt; do
  case $opt in
    q) queue=$OPTARG ;;
    w) worker=$OPTARG ;;
    n) max_jobs=$OPTARG ;;
    t) lease_ms=$OPTARG ;;
    W) wait_ms=$OPTARG ;;
    *) sed -n '2,/^$/s/^# \{0,1\}//p' "$0" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
handler=("$@")

json_tool=${JSON_TOOL:-}
if [ -z "$json_tool" ]; then
  if command -v jq >/dev/null 2>&1; then json_tool=jq; else json_tool=python3; fi
fi

log() { printf '[%s] %s\n' "$worker" "$*" >&2; }

# field NAME: the field NAME of the first leased job in the lease answer on stdin (strings
# as they are, anything else as JSON; nothing when there is no job).
field() {
  if [ "$json_tool" = jq ]; then
    jq -r --arg f "$1" '.jobs[0] // empty | .[$f] | if type == "string" then . else tojson end'
  else
    python3 -c '
import json, sys
jobs = json.load(sys.stdin).get("jobs") or []
if jobs:
    value = jobs[0].get(sys.argv[1])
    print(value if isinstance(value, str) else json.dumps(value))' "$1"
  fi
}

# result_body TOKEN OUTCOME TEXT: the result body; TEXT is the output (JSON, else a string)
# of a completed job, or the error of a failed one.
result_body() {
  if [ "$json_tool" = jq ]; then
    if [ "$2" = completed ]; then
      if printf '%s' "$3" | jq -e . >/dev/null 2>&1; then
        jq -cn --arg t "$1" --argjson o "$3" '{token: $t, outcome: "completed", output: $o}'
      else
        jq -cn --arg t "$1" --arg o "$3" '{token: $t, outcome: "completed", output: $o}'
      fi
    else
      jq -cn --arg t "$1" --arg e "$3" '{token: $t, outcome: "failed", error: $e}'
    fi
  else
    python3 -c '
import json, sys
token, outcome, text = sys.argv[1:4]
if outcome == "completed":
    try:
        output = json.loads(text)
    except ValueError:
        output = text
    body = {"token": token, "outcome": "completed", "output": output}
else:
    body = {"token": token, "outcome": "failed", "error": text or "the handler failed"}
print(json.dumps(body))' "$1" "$2" "$3"
  fi
}

# post PATH BODY [HEADER]: POSTs JSON; prints the body and, on a last line, the status.
post() {
  local args=(-sS -X POST "$api$1" -H 'content-type: application/json' --data-binary "$2"
    --max-time $((wait_ms / 1000 + 30)) -w '\n%{http_code}')
  [ -n "${SLUICE_TOKEN:-}" ] && args+=(-H "authorization: Bearer $SLUICE_TOKEN")
  [ -n "${3:-}" ] && args+=(-H "$3")
  curl "${args[@]}"
}

# heartbeat ID TOKEN: extends the lease every third of its length, until killed or lost.
heartbeat() {
  local every
  every=$(awk -v ms="$lease_ms" 'BEGIN { printf "%.3f", ms / 3000 }')
  while sleep "$every"; do
    local status
    status=$(post "/v1/jobs/$1/heartbeat" "{\"token\":\"$2\",\"extend_ms\":$lease_ms}" | tail -n 1)
    if [ "$status" = 409 ]; then
      log "lease of $1 lost: its result will be refused"
      return
    fi
  done
}

stopping=0
trap 'log "signal: finishing the current job, then exiting"; stopping=1' TERM INT

done_jobs=0
log "leasing from queue $queue at $api (JSON with $json_tool)"
while [ "$stopping" = 0 ] && { [ "$max_jobs" = 0 ] || [ "$done_jobs" -lt "$max_jobs" ]; }; do
  answer=$(post "/v1/queues/$queue/lease" \
    "{\"worker\":\"$worker\",\"max\":1,\"wait_ms\":$wait_ms,\"lease_ttl_ms\":$lease_ms}")
  status=${answer##*$'\n'}
  answer=${answer%$'\n'*}
  if [ "$status" != 200 ]; then
    log "lease answered $status: $answer"
    sleep 1
    continue
  fi
  id=$(printf '%s' "$answer" | field id)
  [ -z "$id" ] && continue
  token=$(printf '%s' "$answer" | field token)
  attempt=$(printf '%s' "$answer" | field attempt)
  kind=$(printf '%s' "$answer" | field kind)
  payload=$(printf '%s' "$answer" | field payload)

  heartbeat "$id" "$token" &
  beating=$!
  errors=$(mktemp)
  if [ ${#handler[@]} -gt 0 ]; then
    output=$(printf '%s' "$payload" | SLUICE_JOB_ID=$id SLUICE_JOB_KIND=$kind \
      SLUICE_ATTEMPT=$attempt "${handler[@]}" 2>"$errors")
    code=$?
  else
    output=$payload
    code=0
  fi
  kill "$beating" 2>/dev/null
  wait "$beating" 2>/dev/null
  if [ "$code" = 0 ]; then
    body=$(result_body "$token" completed "$output")
  else
    body=$(result_body "$token" failed "exit $code: $(tail -c 2000 "$errors")")
  fi
  rm -f "$errors"

  # Retried until the API answers; the same key every time, so it is applied once.
  for delay in 0.2 0.5 1 2 5 5 5; do
    reply=$(post "/v1/jobs/$id/result" "$body" "Idempotency-Key: $id-$attempt")
    status=${reply##*$'\n'}
    case $status in
      200) log "job $id attempt $attempt: done"; break ;;
      4??) log "result of $id refused ($status): ${reply%$'\n'*}"; break ;;
      *) log "posting the result of $id answered ${status:-nothing}; trying again"; sleep "$delay" ;;
    esac
  done
  done_jobs=$((done_jobs + 1))
done
log "stopped after $done_jobs job(s)"
