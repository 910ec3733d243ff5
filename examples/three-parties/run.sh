#!/usr/bin/env bash
# Runs every step of README.md in order, then stops the servers.  Removes the files a previous
# run generated (keys, certificates, DuckDB files, logs) first.
set -euo pipefail
cd "$(dirname "$0")"
rm -rf ca analysts {ac,emc,helper}/certs {ac,emc,helper}/*.{key,csr} */*.duckdb */audit.log \
    */serve.log

# 1. keys, requests, CA, certificates
for p in ac emc helper; do mpcsql init --party $p --out $p; done
mpcsql certs ca --out ca
for p in ac emc helper; do mpcsql certs sign --ca ca $p/$p.csr --name $p --out $p/certs/$p.crt; done
for p in ac emc helper; do
  cp ca/ca.crt $p/certs/
  for q in ac emc helper; do [ $p = $q ] || cp $q/certs/$q.crt $p/certs/; done
done
mpcsql certs request --name alice@ac --out analysts
mpcsql certs sign --ca ca analysts/alice@ac.csr --name alice@ac --out analysts/alice@ac.crt
mpcsql certs client --ca ca --name bob@emc --out analysts

# 2. data
python load_data.py --party ac --db ac/ac.duckdb
python load_data.py --party emc --db emc/emc.duckdb

# 3. servers
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait' EXIT
for p in ac emc helper; do
  mpcsql serve --config $p/party.toml > $p/ready.txt 2> $p/serve.log &
  pids+=($!)
done
for p in ac emc helper; do
  for _ in $(seq 100); do grep -q READY $p/ready.txt 2>/dev/null && break; sleep 0.2; done
  cat $p/ready.txt; rm -f $p/ready.txt
done

# 4. queries
python - <<'PY'
import engine

tls = {"ca": "ca/ca.crt", "cert": "analysts/alice@ac.crt", "key": "analysts/alice@ac.key"}
with engine.connect("mpcsql://127.0.0.1:7400", tls=tls) as con:
    print(con.tables())
    print(con.explain("SELECT AVG(charges) FROM ac INNER JOIN emc USING (id)"))
    print(con.execute("SELECT COUNT(*), AVG(ac.charges), AVG(emc.bmi) "
                      "FROM ac INNER JOIN emc USING (id)").fetchall())
    print(con.execute("SELECT LASSO(charges, age, bmi, alpha => 0.001) "
                      "FROM ac INNER JOIN emc USING (id)").fetchall())
PY
mpcsql query --server mpcsql://127.0.0.1:7401 --tls-ca ca/ca.crt \
    --tls-cert analysts/bob@emc.crt --tls-key analysts/bob@emc.key \
    "SELECT COUNT(*), AVG(emc.bmi) FROM ac JOIN emc USING (id)"
mpcsql query --server mpcsql://127.0.0.1:7400 --tls-ca ca/ca.crt \
    --tls-cert analysts/alice@ac.crt --tls-key analysts/alice@ac.key \
    "SELECT SUM(emc.bmi) FROM ac JOIN emc USING (id)" || true
mpcsql query --server mpcsql://127.0.0.1:7400 --tls-ca ca/ca.crt \
    --tls-cert analysts/bob@emc.crt --tls-key analysts/bob@emc.key "SELECT COUNT(*) FROM ac" \
    || true
mpcsql status --server mpcsql://127.0.0.1:7400 --tls-ca ca/ca.crt \
    --tls-cert analysts/alice@ac.crt --tls-key analysts/alice@ac.key | sed -n 1p
# (sed, not head: head exits after one line and mpcsql, writing the rest, ends with exit
# status 141, which set -o pipefail would make this script's exit status)
echo "done"
