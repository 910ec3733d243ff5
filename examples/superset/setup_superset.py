"""Register the mpcsql federation in a running Superset and build the example dashboard.

    python setup_superset.py --superset http://127.0.0.1:8188 --uri 'mpcsql://...' \
        --out STATE/superset_ids.json

Through Superset's REST API (logged in as the admin run.sh created): an mpcsql database
(``--uri``: the analyst's URL of party ac's server), a virtual dataset whose SQL is the secure
GROUP BY query below, a bar chart of it and a dashboard holding the chart.  Then it asks
Superset for the chart's data (the same query the dashboard runs) and prints it beside plain
DuckDB's answer on the plaintext join of the same bundled data; it exits 1 if they differ.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import requests

from engine.data import demo

#: The virtual dataset: a secure GROUP BY query over the private join.
DATASET_SQL = ("SELECT region, AVG(charges) AS avg_charges, COUNT(*) AS people\n"
               "FROM ac JOIN emc USING (id)\nGROUP BY region")
#: The chart's metric: the dataset has one row per region, so MAX is that row's value (the
#: mpcsql dialect merges Superset's wrapping query into DATASET_SQL itself).
METRIC = {"expressionType": "SIMPLE", "column": {"column_name": "avg_charges"},
          "aggregate": "MAX", "label": "avg_charges"}
TITLE = "Secure AVG(charges) by region over ac JOIN emc"


class Superset:
    """A logged-in REST client (JWT + CSRF token)."""

    def __init__(self, base: str, user: str, password: str):
        self.base = base.rstrip("/")
        self.s = requests.Session()
        r = self.s.post(f"{self.base}/api/v1/security/login", timeout=60,
                        json={"username": user, "password": password, "provider": "db",
                              "refresh": True})
        r.raise_for_status()
        self.s.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
        token = self.call("GET", "/api/v1/security/csrf_token/")["result"]
        self.s.headers.update({"X-CSRFToken": token, "Referer": self.base})

    def call(self, method: str, path: str, payload: dict | None = None, timeout=600) -> dict:
        r = self.s.request(method, self.base + path, json=payload, timeout=timeout)
        if r.status_code >= 400:
            raise SystemExit(f"Superset {method} {path}: HTTP {r.status_code}: {r.text[:2000]}")
        return r.json()


def form_data(dataset_id: int) -> dict:
    return {
        "datasource": f"{dataset_id}__table", "viz_type": "echarts_timeseries_bar",
        "x_axis": "region", "metrics": [METRIC], "groupby": [], "adhoc_filters": [],
        "row_limit": 10000, "order_desc": True, "show_value": True, "show_legend": False,
        "rich_tooltip": True, "orientation": "vertical", "x_axis_title": "region",
        "x_axis_title_margin": 30, "y_axis_title": "average charges",
        "y_axis_title_margin": 70, "y_axis_format": ",.2f", "color_scheme": "supersetColors",
    }


def query_context(dataset_id: int, result_type: str = "full") -> dict:
    return {
        "datasource": {"id": dataset_id, "type": "table"}, "force": True,
        "queries": [{"columns": ["region"], "metrics": [METRIC], "orderby": [[METRIC, False]],
                     "row_limit": 10000, "filters": [], "extras": {"having": "", "where": ""}}],
        "form_data": form_data(dataset_id), "result_format": "json", "result_type": result_type,
    }


def position(chart_id: int, name: str) -> dict:
    return {
        "DASHBOARD_VERSION_KEY": "v2",
        "ROOT_ID": {"type": "ROOT", "id": "ROOT_ID", "children": ["GRID_ID"]},
        "GRID_ID": {"type": "GRID", "id": "GRID_ID", "children": ["ROW-1"],
                    "parents": ["ROOT_ID"]},
        "HEADER_ID": {"id": "HEADER_ID", "type": "HEADER", "meta": {"text": TITLE}},
        "ROW-1": {"type": "ROW", "id": "ROW-1", "children": ["CHART-1"],
                  "parents": ["ROOT_ID", "GRID_ID"],
                  "meta": {"background": "BACKGROUND_TRANSPARENT"}},
        "CHART-1": {"type": "CHART", "id": "CHART-1", "children": [],
                    "parents": ["ROOT_ID", "GRID_ID", "ROW-1"],
                    "meta": {"chartId": chart_id, "width": 12, "height": 70,
                             "sliceName": name}},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--superset", required=True)
    ap.add_argument("--uri", required=True, help="SQLAlchemy URL of party ac's server")
    ap.add_argument("--user", default="admin")
    ap.add_argument("--password", default="admin")
    ap.add_argument("--out", required=True, help="JSON file for the ids made here")
    args = ap.parse_args(argv)
    api = Superset(args.superset, args.user, args.password)

    t = time.monotonic()
    db = api.call("POST", "/api/v1/database/", {
        "database_name": "mpcsql federation (party ac)", "sqlalchemy_uri": args.uri,
        "expose_in_sqllab": True})["id"]
    print(f"database {db}: registered in {time.monotonic() - t:.1f} s (Superset connects and "
          "lists the schemas)")
    t = time.monotonic()
    ds = api.call("POST", "/api/v1/dataset/", {
        "database": db, "schema": "main", "table_name": "avg_charges_by_region",
        "sql": DATASET_SQL})["id"]
    cols = api.call("GET", f"/api/v1/dataset/{ds}")["result"]["columns"]
    print(f"dataset {ds}: virtual, columns {[c['column_name'] for c in cols]} "
          f"({time.monotonic() - t:.1f} s: Superset runs the SQL to learn them)")
    dash = api.call("POST", "/api/v1/dashboard/", {
        "dashboard_title": TITLE, "slug": "mpcsql-avg-charges", "published": True})["id"]
    name = "Average charges by region"
    chart = api.call("POST", "/api/v1/chart/", {
        "slice_name": name, "viz_type": "echarts_timeseries_bar", "datasource_id": ds,
        "datasource_type": "table", "params": json.dumps(form_data(ds)),
        "query_context": json.dumps(query_context(ds)), "dashboards": [dash]})["id"]
    api.call("PUT", f"/api/v1/dashboard/{dash}", {
        "position_json": json.dumps(position(chart, name)),
        "json_metadata": json.dumps({"color_scheme": "supersetColors"})})
    print(f"chart {chart} (echarts_timeseries_bar) on dashboard {dash} (slug mpcsql-avg-charges)")

    sql = api.call("POST", "/api/v1/chart/data", query_context(ds, "query"))["result"][0]
    print("the chart's SQL (Superset's FROM (<dataset SQL>) AS virtual_table, merged into one "
          "query by the mpcsql dialect):\n  " + sql["query"].replace("\n", "\n  "))
    t = time.monotonic()
    result = api.call("POST", "/api/v1/chart/data", query_context(ds))["result"][0]
    seconds = time.monotonic() - t
    secure = {r["region"]: r["avg_charges"] for r in result["data"]}
    ac, emc = demo.split()
    _, rows = demo.plaintext(DATASET_SQL, {"ac": ac, "emc": emc})
    plain = {r[0]: r[1] for r in rows}
    print(f"chart data through Superset: {seconds:.2f} s (a secure query across the three "
          "parties, Superset's own overhead included)")
    print(f"{'region':<12}{'secure (Superset)':>20}{'DuckDB (plaintext)':>20}")
    ok = set(secure) == set(plain)
    for region in sorted(plain):
        s = secure.get(region)
        ok = ok and s is not None and abs(s - plain[region]) <= 1e-6 * abs(plain[region])
        print(f"{region:<12}{s if s is None else f'{s:,.4f}':>20}{plain[region]:>20,.4f}")
    print("equal within 1e-6 (relative)" if ok else "MISMATCH")
    with open(args.out, "w") as f:
        json.dump({"database": db, "dataset": ds, "chart": chart, "dashboard": dash,
                   "slug": "mpcsql-avg-charges", "chart_seconds": seconds,
                   "secure": secure, "plain": plain}, f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
