#!/usr/bin/env bash
# Apache Superset on a secure three-party query, end to end (see docs/bi.md#apache-superset):
#   1. Superset 6.1.0 and mpcsql in their own virtual environment ($SUPERSET_VENV);
#   2. three long-running party servers (ac, emc, helper) over mutual TLS, bundled data;
#   3. Superset configured (secret key, SQLite metadata, admin, init), an mpcsql database,
#      a virtual dataset of a secure GROUP BY query, a bar chart and a dashboard;
#   4. the dashboard rendered in headless Chromium: $SCREENSHOT;
#   5. everything stopped.
# Re-runnable: the venv is kept (delete it to reinstall); the parties' files and Superset's
# state under $MPCSQL_SUPERSET_STATE are made anew each run.  Needs Python 3.11+, and
# chromium + chromium-driver (installed with apt-get when missing and running as root).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
PYTHON="${PYTHON:-python3}"
SUPERSET_VERSION="${SUPERSET_VERSION:-6.1.0}"
SUPERSET_VENV="${SUPERSET_VENV:-$HERE/.venv}"
export MPCSQL_SUPERSET_STATE="${MPCSQL_SUPERSET_STATE:-$HERE/.state}"
PARTY_PORT="${PARTY_PORT:-7460}"         # ac; emc +1, helper +2
SUPERSET_PORT="${SUPERSET_PORT:-8188}"
SCREENSHOT="${SCREENSHOT:-$REPO/docs/img/superset-avg-charges-by-region.png}"
STATE="$MPCSQL_SUPERSET_STATE"
BIN="$SUPERSET_VENV/bin"
mkdir -p "$STATE"
chmod 700 "$STATE"
step() { printf '\n== %s  (%s)\n' "$1" "$(date +%T)"; }

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

# --- 1. Superset and mpcsql in their own virtual environment --------------------------------
step "1. virtual environment $SUPERSET_VENV (Superset $SUPERSET_VERSION + mpcsql)"
if [ ! -x "$BIN/superset" ] || [ "$("$BIN/pip" show apache-superset 2>/dev/null \
    | sed -n 's/^Version: //p')" != "$SUPERSET_VERSION" ]; then
  "$PYTHON" -m venv "$SUPERSET_VENV"
  "$BIN/pip" install -q --upgrade pip
  # rich and cachetools: Superset 6.1.0 imports them without declaring them
  "$BIN/pip" install -q -c "$HERE/constraints.txt" "apache-superset==$SUPERSET_VERSION" \
    rich cachetools
fi
# mpcsql's client needs sqlglot 30 (Superset 6.1.0 declares <29; pip says so and goes on)
"$BIN/pip" install -e "$REPO[sqlalchemy]" > "$STATE/pip-mpcsql.log" 2>&1 \
  || { tail -30 "$STATE/pip-mpcsql.log"; exit 1; }
grep "requires sqlglot" "$STATE/pip-mpcsql.log" || true
"$BIN/pip" list 2>/dev/null | grep -iE '^(apache[-_]superset|sqlalchemy|sqlglot|mpcsql|duckdb) '

if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
      chromium chromium-driver fonts-dejavu-core
  else
    echo "needs chromium and chromium-driver: sudo apt-get install chromium chromium-driver" >&2
    exit 1
  fi
fi

# --- 2. three party servers -----------------------------------------------------------------
step "2. three party servers on 127.0.0.1:$PARTY_PORT-$((PARTY_PORT + 2))"
rm -rf "$STATE/parties"
P="$STATE/parties"
"$BIN/python" "$HERE/parties.py" --dir "$P" --port "$PARTY_PORT"
for p in ac emc helper; do "$BIN/mpcsql" init --party $p --out "$P/$p" > /dev/null; done
"$BIN/mpcsql" certs ca --out "$P/ca" > /dev/null
for p in ac emc helper; do
  "$BIN/mpcsql" certs sign --ca "$P/ca" "$P/$p/$p.csr" --name $p --out "$P/$p/certs/$p.crt" \
    > /dev/null
done
for p in ac emc helper; do
  cp "$P/ca/ca.crt" "$P/$p/certs/"
  for q in ac emc helper; do [ $p = $q ] || cp "$P/$q/certs/$q.crt" "$P/$p/certs/"; done
done
# Superset's analyst identity at ac: superset@ac (key and certificate for the database URL)
"$BIN/mpcsql" certs client --ca "$P/ca" --name superset@ac --out "$P/analysts" > /dev/null
for p in ac emc helper; do
  "$BIN/mpcsql" serve --config "$P/$p/party.toml" > "$P/$p/ready.txt" 2> "$P/$p/serve.log" &
  pids+=($!)
done
for p in ac emc helper; do
  for _ in $(seq 300); do grep -q READY "$P/$p/ready.txt" 2>/dev/null && break; sleep 0.2; done
  grep READY "$P/$p/ready.txt" || { cat "$P/$p/serve.log"; exit 1; }
done
enc() { "$BIN/python" -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1]))' "$1"; }
URI="mpcsql://127.0.0.1:$PARTY_PORT?party=ac&join_protocol=masked"
URI+="&tls_ca=$(enc "$P/ca/ca.crt")&tls_cert=$(enc "$P/analysts/superset@ac.crt")"
URI+="&tls_key=$(enc "$P/analysts/superset@ac.key")"

# --- 3. Superset ----------------------------------------------------------------------------
step "3. Superset: metadata database, admin, init, web server on 127.0.0.1:$SUPERSET_PORT"
export SUPERSET_CONFIG_PATH="$HERE/superset_config.py" FLASK_APP=superset
[ -s "$STATE/secret_key" ] || "$BIN/python" -c \
  'import secrets; print(secrets.token_urlsafe(42))' > "$STATE/secret_key"
chmod 600 "$STATE/secret_key"
rm -f "$STATE/superset.db"
"$BIN/superset" db upgrade > "$STATE/superset-upgrade.log" 2>&1 \
  || { tail -30 "$STATE/superset-upgrade.log"; exit 1; }
"$BIN/superset" fab create-admin --username admin --firstname Ada --lastname Admin \
  --email admin@example.org --password admin > "$STATE/superset-admin.log" 2>&1 \
  || { tail -30 "$STATE/superset-admin.log"; exit 1; }
"$BIN/superset" init > "$STATE/superset-init.log" 2>&1 \
  || { tail -30 "$STATE/superset-init.log"; exit 1; }
"$BIN/superset" run -h 127.0.0.1 -p "$SUPERSET_PORT" --with-threads \
  > "$STATE/superset.log" 2>&1 &
pids+=($!)
BASE="http://127.0.0.1:$SUPERSET_PORT"
for _ in $(seq 300); do
  [ "$(curl -s "$BASE/health" 2>/dev/null)" = OK ] && break
  sleep 0.5
done
[ "$(curl -s "$BASE/health")" = OK ] || { tail -30 "$STATE/superset.log"; exit 1; }
echo "Superset is up: $BASE (admin / admin)"
"$BIN/python" "$HERE/setup_superset.py" --superset "$BASE" --uri "$URI" \
  --out "$STATE/superset_ids.json"

# --- 4. the dashboard in headless Chromium --------------------------------------------------
step "4. screenshot of the dashboard"
"$BIN/python" "$HERE/screenshot.py" --superset "$BASE" --ids "$STATE/superset_ids.json" \
  --out "$SCREENSHOT"

# what party ac's server ran for Superset (the analyst superset@ac): run time and SQL
step "queries party ac ran for superset@ac"
"$BIN/python" "$HERE/queries.py" --server "mpcsql://127.0.0.1:$PARTY_PORT" --tls-dir "$P" \
  --analyst superset@ac

# --- 5. stop --------------------------------------------------------------------------------
step "5. stopping Superset and the party servers"
cleanup
pids=()
echo "done"
