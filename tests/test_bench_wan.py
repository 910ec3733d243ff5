"""The benchmarks' WAN projection from a query's traffic statistics (bench.common, bench.report).

Hand-made statistics in the shape the sessions produce (engine.session.rounds.TrafficLog.stats);
the counters themselves are tested with real sessions in tests/test_rounds.py.
"""

from __future__ import annotations

import math

import pytest

from bench.common import SETUP_ROUND_TRIPS, Repeated, Run
from bench.report import latency_table, traffic_table

NAMES = {0: "ac", 1: "emc", 2: "helper"}


def _stats(total: float, mb: dict[str, dict[str, dict[str, float]]],
           cpu: dict[str, dict[str, float]]) -> dict:
    """Three parties that each send once to the next (a chain of 3 hops, then 1 more)."""
    events = {  # ac -> emc -> helper -> ac: 3 hops; every party takes up what it is sent
        "ac": [-(1 + 1), 0 * 4 + 2],  # send to emc; take up helper's first message
        "emc": [0 * 4 + 0, -(1 + 2)],  # take up ac's first; send to helper
        "helper": [0 * 4 + 1, -(1 + 0)],  # take up emc's first; send to ac
    }
    out = {"total_seconds": total}
    for pid, p in NAMES.items():
        out[p] = {"cpu_seconds": sum(cpu[p].values()),
                  "traffic": {"pid": pid, "events": events[p],
                              "marks": [[len(events[p]), "phase:solve"]], "labels": ["other"],
                              "bytes_by_phase": {ph: {q: int(v * 1e6) for q, v in peers.items()}
                                                 for ph, peers in mb[p].items()},
                              "cpu_by_phase": cpu[p]}}
    return out


def _run(total=10.0, emulated=0.0) -> Run:
    mb = {"ac": {"wait for peers": {"helper": 2.0}, "share input": {"helper": 1.0},
                 "solve": {"emc": 4.0, "helper": 3.0}},
          "emc": {"wait for peers": {"helper": 2.5}, "solve": {"ac": 1.0, "helper": 1.0}},
          "helper": {"mask": {"ac": 0.5}, "solve": {"ac": 1.0, "emc": 1.0}}}
    cpu = {"ac": {"encrypt": 4.0, "decrypt": 6.0, "solve": 2.0},
           "emc": {"encrypt": 5.0, "decrypt": 1.0, "solve": 2.5},
           "helper": {"mask": 8.0, "solve": 1.0, "wait for peers": 9.0}}
    r = Run([], _stats(total, mb, cpu), total)
    r.emulated_rtt = emulated
    return r


def test_hops_and_bytes_per_stage():
    r = _run()
    assert r.hops == 3
    assert r.stage_sent_mb("join", "ac") == pytest.approx(2.0)
    assert r.stage_sent_mb("join", "helper") == pytest.approx(0.5)
    assert r.stage_sent_mb("conversion", "ac") == pytest.approx(1.0)
    assert r.stage_sent_mb("compute", "ac") == pytest.approx(7.0)
    assert max(r.links("join").values()) == 2_500_000  # emc -> helper


def test_projection_is_total_plus_latency_setup_and_largest_links():
    r = _run()
    rtt, bw = 0.020, 12.5e6
    expected = (10.0 + 3 * rtt / 2 + SETUP_ROUND_TRIPS * rtt
                + (2.5e6 + 1.0e6 + 4.0e6) / bw)  # largest link per stage: join, A2S, compute
    assert r.wan_seconds(rtt, bw) == pytest.approx(expected)
    # shared uplink: the largest per-party volume per stage (ac sends 7 MB in the compute)
    shared = 10.0 + 3 * rtt / 2 + SETUP_ROUND_TRIPS * rtt + (2.5e6 + 1.0e6 + 7.0e6) / bw
    assert r.wan_seconds(rtt, bw, shared_uplink=True) == pytest.approx(shared)


def test_an_emulated_run_takes_its_own_delay_out():
    plain, slow = _run(10.0), _run(10.0 + 3 * 0.1 / 2, emulated=0.1)
    assert slow.wan_seconds(0.02) == pytest.approx(plain.wan_seconds(0.02))


def test_cpu_path_takes_the_largest_party_per_phase():
    r = _run()
    # encrypt max(4, 5) + decrypt max(6, 1) + mask 8 + solve max(2, 2.5, 1); waiting is no CPU
    assert r.cpu_path() == pytest.approx(5 + 6 + 8 + 2.5)
    assert r.cpu_path(2) == pytest.approx((5 + 6 + 8) / 2 + 2.5)
    assert r.wan_seconds(0.02, compute=r.cpu_path(2)) == pytest.approx(
        r.wan_seconds(0.02) - 10.0 + r.cpu_path(2))


def test_without_traffic_statistics_the_columns_are_empty():
    r = Run([], {"total_seconds": 1.0, "ac": {}, "emc": {}, "helper": {}}, 1.0)
    assert math.isnan(r.hops) and math.isnan(r.wan_seconds()) and math.isnan(r.cpu_path())


def test_report_tables():
    base, slow = Repeated([_run(10.0)]), Repeated([_run(10.15, emulated=0.1)])
    cfg = {"rows": 100, "protocol": "masked", "d": 4, "query": "sum"}
    entries = [(dict(cfg, emulate_rtt_ms=0.0), base), (dict(cfg, emulate_rtt_ms=100.0), slow)]
    text = traffic_table(entries)
    assert "| sum " in text and text.count("\n") == 3
    lat = latency_table(entries)
    assert lat is not None and "1.00 |" in lat  # added 0.15 s = 3 hops x 100 ms / 2
