"""The mpcsql command without party servers (the rest: test_cli_e2e.py)."""

from __future__ import annotations

import subprocess
import sys


def mpcsql(*args, **kw):
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True,
                          text=True, timeout=300, **kw)


def test_output_piped_into_head_ends_quietly(tmp_path):
    """`mpcsql ... | head -1`: the reader going away is not an error with a traceback."""
    from engine.server.audit import AuditLog

    path = str(tmp_path / "audit.jsonl")
    log = AuditLog(path)
    for i in range(3000):
        log.append(query_id=f"q{i}", analyst="alice@ac", sql="SELECT COUNT(*) FROM ac",
                   outcome="done")
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "audit", "show", path],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()  # like `head -1`
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert first.startswith(b"#1 ") and "Traceback" not in err, err
    assert proc.returncode in (0, 141)
