"""The hash-chained audit log: appends, tamper detection and the CLI (no party servers)."""

from __future__ import annotations

import json

from engine.cli.main import main as cli
from engine.server.audit import GENESIS, AuditLog, entry_hash, read, verify


def _log(tmp_path, n: int = 5) -> str:
    path = str(tmp_path / "audit" / "party.audit.jsonl")
    log = AuditLog(path)
    for i in range(n):
        log.append(query_id=f"q{i}", analyst="alice@ac", coordinator="ac",
                   sql=f"SELECT COUNT(*) FROM ac -- {i}", plan="f" * 16,
                   approvals={"ac": "approved"}, revealed={"ac": ["the result"]}, outcome="done")
    return path


def _lines(path: str) -> list[bytes]:
    with open(path, "rb") as f:
        return f.read().splitlines(keepends=True)


def _write(path: str, lines: list[bytes]) -> None:
    with open(path, "wb") as f:
        f.writelines(lines)


def test_entries_are_chained_and_complete(tmp_path):
    path = _log(tmp_path, 3)
    entries = list(read(path))
    assert [e["seq"] for e in entries] == [1, 2, 3]
    assert entries[0]["prev"] == GENESIS
    for a, b in zip(entries, entries[1:], strict=False):
        assert b["prev"] == a["hash"]
    for e in entries:
        assert e["hash"] == entry_hash(e)
        assert {"time", "query_id", "analyst", "coordinator", "sql", "plan", "approvals",
                "revealed", "outcome"} <= e.keys()
        assert e["time"].endswith("+00:00")  # UTC
    v = verify(path)
    assert v.ok and v.entries == 3 and v.last_hash == entries[-1]["hash"]


def test_reopening_continues_the_chain(tmp_path):
    path = _log(tmp_path, 2)
    AuditLog(path).append(query_id="later", outcome="done")
    entries = list(read(path))
    assert entries[-1]["seq"] == 3 and entries[-1]["prev"] == entries[1]["hash"]
    assert verify(path).ok


def test_edit_is_detected(tmp_path):
    path = _log(tmp_path)
    lines = _lines(path)
    e = json.loads(lines[2])
    e["outcome"] = "failed: nothing to see"  # hash left as it was
    lines[2] = (json.dumps(e) + "\n").encode()
    _write(path, lines)
    v = verify(path)
    assert not v.ok and v.bad_line == 3 and "edited" in v.reason and v.entries == 2


def test_edit_with_recomputed_hash_breaks_the_next_line(tmp_path):
    path = _log(tmp_path)
    lines = _lines(path)
    e = json.loads(lines[1])
    e["analyst"] = "mallory@ac"
    e["hash"] = entry_hash(e)
    lines[1] = (json.dumps(e) + "\n").encode()
    _write(path, lines)
    v = verify(path)
    assert not v.ok and v.bad_line == 3 and "prev" in v.reason


def test_deleted_line_is_detected(tmp_path):
    path = _log(tmp_path)
    lines = _lines(path)
    _write(path, lines[:1] + lines[2:])
    v = verify(path)
    assert not v.ok and v.bad_line == 2 and "deleted" in v.reason
    _write(path, lines[1:])  # the first line
    assert verify(path).bad_line == 1


def test_reordered_lines_are_detected(tmp_path):
    path = _log(tmp_path)
    lines = _lines(path)
    lines[1], lines[2] = lines[2], lines[1]
    _write(path, lines)
    v = verify(path)
    assert not v.ok and v.bad_line == 2 and "reordered" in v.reason


def test_truncated_line_is_detected(tmp_path):
    path = _log(tmp_path)
    lines = _lines(path)
    _write(path, lines[:3] + [lines[3][: len(lines[3]) // 2]])
    v = verify(path)
    assert not v.ok and v.bad_line == 4 and "cut" in v.reason
    _write(path, lines[:3] + [lines[3][:-1]])  # only the newline removed
    assert verify(path).bad_line == 4


def test_removed_tail_needs_an_anchor(tmp_path):
    path = _log(tmp_path)
    anchor = verify(path).last_hash  # recorded elsewhere by the operator
    lines = _lines(path)
    _write(path, lines[:-1])
    assert verify(path).ok  # a shorter chain is still a chain ...
    v = verify(path, anchor=anchor)  # ... but the anchor is gone
    assert not v.ok and "anchor" in v.reason
    _write(path, lines)
    AuditLog(path).append(query_id="later", outcome="done")
    assert verify(path, anchor=anchor).ok  # anchors stay valid as the log grows


def test_appending_after_a_damaged_line_keeps_it_detected(tmp_path):
    path = _log(tmp_path, 3)
    lines = _lines(path)
    _write(path, lines[:2] + [lines[2][:40] + b"\n"])
    AuditLog(path).append(query_id="after", outcome="done")
    v = verify(path)
    assert not v.ok and v.bad_line == 3


def test_cli_verify_and_show(tmp_path, capsys):
    path = _log(tmp_path, 4)
    assert cli(["audit", "verify", path]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok: 4 entries, chain intact")
    assert cli(["audit", "show", path, "--last", "1"]) == 0
    out = capsys.readouterr().out
    assert "#4" in out and "q3" in out and "#3 " not in out
    lines = _lines(path)
    lines[1] = lines[1].replace(b"alice@ac", b"eve@ac")
    _write(path, lines)
    assert cli(["audit", "verify", path]) == 1
    out = capsys.readouterr().out
    assert "line 2: hash does not match the content" in out
