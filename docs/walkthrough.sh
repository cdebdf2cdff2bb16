#!/usr/bin/env bash
# The walkthrough of docs/API.md, as a script: every command there is here, in order.
#
#   CORRAL_URL  the server (default http://127.0.0.1:8080)
#   CORRAL_KEY  an admin API key of the operator tenant (printed on first start, or the
#               CORRAL_BOOTSTRAP_KEY the server was started with)
#   AGENT_WASM  the text-stats component (default: where
#               `cargo build --release --target wasm32-wasip2 --manifest-path plugins/Cargo.toml`
#               puts it)
#
# It creates the agent `text-stats` and deletes it at the end, so it can run again on the
# same server (scripts/quickstart does, on every start). Each response is checked with
# plain `grep -F`, so the script fails when the API changes;
# `cargo test -p corral-tests --test docs` runs it (twice) against a real `corral serve`.

set -euo pipefail

CORRAL_URL="${CORRAL_URL:-http://127.0.0.1:8080}"
: "${CORRAL_KEY:?set CORRAL_KEY to an admin API key}"
AGENT_WASM="${AGENT_WASM:-plugins/target/wasm32-wasip2/release/text_stats.wasm}"

# Prints a response (body, then `HTTP <status>` from curl's -w) and fails unless it
# contains every expected piece.
check() {
  local response=$1
  shift
  printf '%s\n\n' "$response"
  for expected in "$@"; do
    if ! grep -qF -- "$expected" <<<"$response"; then
      echo "walkthrough: expected $expected in the response above" >&2
      exit 1
    fi
  done
}

auth="Authorization: Bearer $CORRAL_KEY"
# Any string unique to one request will do, e.g. a UUID; this is unique to one run.
idempotency_key="walkthrough-$(date +%s)-$$"

# 1. Is the server up, and on which database?
ready=$(curl -sS -w '\nHTTP %{http_code}' "$CORRAL_URL/readyz")
check "$ready" 'HTTP 200' '"status":"ready"'

# 2. Create an agent.
agent=$(curl -sS -w '\nHTTP %{http_code}' -X POST "$CORRAL_URL/v1/agents" \
  -H "$auth" -H 'Content-Type: application/json' \
  -d '{"name": "text-stats", "description": "Counts words and sentences"}')
check "$agent" 'HTTP 201' '"name":"text-stats"' '"status":"active"' '"active_version_id":null'

# 3. Upload its component: the raw bytes, as application/wasm. The first version
#    becomes the active one.
version=$(curl -sS -w '\nHTTP %{http_code}' -X POST "$CORRAL_URL/v1/agents/text-stats/versions" \
  -H "$auth" -H 'Content-Type: application/wasm' \
  --data-binary "@$AGENT_WASM")
check "$version" 'HTTP 201' '"version":"1.0.0"' '"name":"stats"' '"active":true'

# 4. Invoke an action. The Idempotency-Key makes a retry safe.
invoke=$(curl -sS -w '\nHTTP %{http_code}' -X POST "$CORRAL_URL/v1/agents/text-stats/invoke" \
  -H "$auth" -H 'Content-Type: application/json' -H "Idempotency-Key: $idempotency_key" \
  -d '{"action": "stats", "input": {"text": "Corral runs agents. Each run is sandboxed!"}, "correlation_id": "order-42"}')
check "$invoke" 'HTTP 200' '"outcome":"succeeded"' '"words":7' '"sentences":2'
execution_id=$(sed -n 's/.*"execution_id":"\([^"]*\)".*/\1/p' <<<"$invoke")

#    The same request with the same key again: the stored response, not a second run.
retry=$(curl -sS -w '\nHTTP %{http_code}' -X POST "$CORRAL_URL/v1/agents/text-stats/invoke" \
  -H "$auth" -H 'Content-Type: application/json' -H "Idempotency-Key: $idempotency_key" \
  -d '{"action": "stats", "input": {"text": "Corral runs agents. Each run is sandboxed!"}, "correlation_id": "order-42"}')
check "$retry" 'HTTP 200' "\"execution_id\":\"$execution_id\""

# 5. List executions, filtered (newest first; no logs in lists).
executions=$(curl -sS -w '\nHTTP %{http_code}' -H "$auth" \
  "$CORRAL_URL/v1/executions?agent=text-stats&correlation_id=order-42&limit=10")
check "$executions" 'HTTP 200' "{\"items\":[{\"id\":\"$execution_id\"" '"outcome":"succeeded"'

# 6. Get one execution, with its logs.
execution=$(curl -sS -w '\nHTTP %{http_code}' -H "$auth" \
  "$CORRAL_URL/v1/executions/$execution_id")
check "$execution" 'HTTP 200' "\"id\":\"$execution_id\"" '"action":"stats"' '"logs":['

# 7. Costs by agent and day (also ?period=week|month, ?since=, ?until=).
costs=$(curl -sS -w '\nHTTP %{http_code}' -H "$auth" "$CORRAL_URL/v1/costs?period=day")
check "$costs" 'HTTP 200' '"period":"day"' '"agent":"text-stats"' '"total_executions":'

# 8. The audit trail: who created the agent?
audit=$(curl -sS -w '\nHTTP %{http_code}' -H "$auth" \
  "$CORRAL_URL/v1/audit?action=agent.create&resource_type=agent")
check "$audit" 'HTTP 200' '"action":"agent.create"' '"result":"ok"'

# 9. Create a developer key for CI. Its secret is shown only in this response.
key=$(curl -sS -w '\nHTTP %{http_code}' -X POST "$CORRAL_URL/v1/keys" \
  -H "$auth" -H 'Content-Type: application/json' \
  -d '{"name": "ci", "role": "developer"}')
check "$key" 'HTTP 201' '"role":"developer"' '"secret":"crl_'
dev_key=$(sed -n 's/.*"secret":"\([^"]*\)".*/\1/p' <<<"$key")

#    A developer may not delete agents: 403, and the attempt is audited as denied.
denied=$(curl -sS -w '\nHTTP %{http_code}' -X DELETE "$CORRAL_URL/v1/agents/text-stats" \
  -H "Authorization: Bearer $dev_key")
check "$denied" 'HTTP 403' '"code":"forbidden"'

# 10. Pause the agent (as the developer): invocations are refused until it is resumed.
paused=$(curl -sS -w '\nHTTP %{http_code}' -X POST "$CORRAL_URL/v1/agents/text-stats/pause" \
  -H "Authorization: Bearer $dev_key")
check "$paused" 'HTTP 200' '"status":"paused"'

refused=$(curl -sS -w '\nHTTP %{http_code}' -X POST "$CORRAL_URL/v1/agents/text-stats/invoke" \
  -H "Authorization: Bearer $dev_key" -H 'Content-Type: application/json' \
  -d '{"action": "stats", "input": {"text": "anyone there?"}}')
check "$refused" 'HTTP 409' '"code":"agent_paused"'

resumed=$(curl -sS -w '\nHTTP %{http_code}' -X POST "$CORRAL_URL/v1/agents/text-stats/resume" \
  -H "Authorization: Bearer $dev_key")
check "$resumed" 'HTTP 200' '"status":"active"'

again=$(curl -sS -w '\nHTTP %{http_code}' -X POST "$CORRAL_URL/v1/agents/text-stats/invoke" \
  -H "Authorization: Bearer $dev_key" -H 'Content-Type: application/json' \
  -d '{"action": "classify", "input": {"text": "Great tools, not bad at all"}}')
check "$again" 'HTTP 200' '"outcome":"succeeded"' '"label":"positive"'

#     Both denials are in the trail.
denials=$(curl -sS -w '\nHTTP %{http_code}' -H "$auth" "$CORRAL_URL/v1/audit?limit=5")
check "$denials" 'HTTP 200' '"action":"agent.invoke"' '"action":"agent.delete"' '"result":"denied"'

# 11. Delete the agent (admin only). Its executions and audit events stay; its name is
#     free again.
deleted=$(curl -sS -w '\nHTTP %{http_code}' -X DELETE "$CORRAL_URL/v1/agents/text-stats" \
  -H "$auth")
check "$deleted" 'HTTP 204'

gone=$(curl -sS -w '\nHTTP %{http_code}' -H "$auth" "$CORRAL_URL/v1/agents/text-stats")
check "$gone" 'HTTP 404' '"code":"not_found"'

echo "walkthrough: all steps passed"
