"""What a newcomer meets first: `mpcsql` without a command, `--version`, `query --help`, a
mistyped `--table`, where the embedded parties' files (audit logs) live, and
examples/three-parties/run.sh ending cleanly (issue 9, item 7)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from importlib.metadata import version

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "three-parties")


def mpcsql(*args, timeout=300, **kw):
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=kw.pop("cwd", ROOT), **kw)


# --- the command line, no party started --------------------------------------------------

def test_version_prints_the_package_version():
    r = mpcsql("--version")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"mpcsql {version('mpcsql')}"


def test_bare_mpcsql_prints_the_commands_and_a_hint_and_exits_2():
    r = mpcsql()
    assert r.returncode == 2  # a usage error, like every other one argparse reports
    assert "required" not in r.stdout + r.stderr
    for cmd in ("demo", "query", "explain", "init", "certs", "serve", "audit", "status",
                "cancel"):
        assert f"    {cmd} " in r.stdout, cmd
    assert "try: mpcsql demo" in r.stdout
    assert "mpcsql COMMAND --help" in r.stdout


def test_help_shows_the_hint_and_version_option():
    r = mpcsql("--help")
    assert r.returncode == 0
    assert "--version" in r.stdout and "try: mpcsql demo" in r.stdout


@pytest.mark.parametrize("cmd", ["query", "explain"])
def test_query_and_explain_help_explain_sql_and_give_examples(cmd):
    r = mpcsql(cmd, "--help")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "SQL" in out and "quote it for the shell" in out
    assert "NAME[@PARTY]=PATH" in out and "--workdir DIR" in out
    assert "example" in out and f"mpcsql {cmd} --table ac=" in out
    if cmd == "query":
        assert "--format {table,csv,json}" in out
        assert "CSV with a header" in out and "JSON (a list of objects" in out
        assert "@ac=" in out and "--server mpcsql://" in out  # both --table forms, a server


def test_unknown_party_names_the_accepted_forms_and_the_parties():
    r = mpcsql("query", "--table", "insurer=a.csv", "SELECT COUNT(*) FROM insurer", timeout=30)
    assert r.returncode == 2
    err = r.stderr
    assert "unknown party 'insurer'" in err
    assert "PARTY=PATH" in err and "NAME@PARTY=PATH" in err
    assert "insurer@ac=a.csv" in err  # the user's own table and file, at a real party
    assert "parties: ac, emc, helper" in err
    assert "Traceback" not in err


def test_malformed_table_spec_names_the_accepted_forms():
    r = mpcsql("explain", "--table", "insurer.csv", "SELECT COUNT(*) FROM ac", timeout=30)
    assert r.returncode == 2
    assert "--table 'insurer.csv'" in r.stderr and "NAME@PARTY=PATH" in r.stderr


def test_workdir_is_refused_with_server():
    r = mpcsql("query", "--server", "mpcsql://127.0.0.1:1", "--workdir", "x",
               "SELECT COUNT(*) FROM ac", timeout=30)
    assert r.returncode == 2
    assert "--workdir is for embedded local parties" in r.stderr


def test_connect_refuses_workdir_with_dsn():
    import engine
    from dialect.errors import InterfaceError

    with pytest.raises(InterfaceError, match="workdir"):
        engine.connect("mpcsql://127.0.0.1:1", workdir="x")


def _code_lines(path):
    with open(path) as f:
        return [ln.split("#", 1)[0] for ln in f if not ln.lstrip().startswith("#")]


def test_run_sh_pipes_nothing_into_head_under_pipefail():
    """`mpcsql ... | head -1` ends mpcsql with 141, which `set -o pipefail` makes the
    script's exit status: the script never reached its last line."""
    lines = _code_lines(os.path.join(EXAMPLE, "run.sh"))
    assert any("pipefail" in ln for ln in lines)
    assert not [ln for ln in lines if "| head" in ln or "|head" in ln]
    assert lines[-1].strip() == 'echo "done"'


# --- the embedded federation's working directory (starts party processes) ----------------

@pytest.fixture(scope="module")
def tables():
    from tests.conftest import make_tables

    return make_tables(60, 50, 40)


SQL = "SELECT COUNT(*) FROM ac JOIN emc USING (id)"
OPEN = {p: {"min_intersection": 0} for p in ("ac", "emc", "helper")}


@pytest.mark.e2e
def test_connect_workdir_keeps_audit_logs_after_close(tmp_path, tables):
    import engine
    from engine.server.audit import read, verify

    ac, emc = tables
    wd = tmp_path / "not" / "yet"  # created if missing
    with engine.connect(workdir=str(wd), key_bits=512, policies=OPEN) as con:
        assert con.workdir == str(wd)
        con.register("ac", ac, party="ac", key="id")
        con.register("emc", emc, party="emc", key="id")
        assert con.execute(SQL).fetchall() == [(40,)]
    for p in ("ac", "emc", "helper"):
        assert (wd / f"{p}.duckdb").exists() and (wd / f"{p}.log").exists()
        log = wd / f"{p}.audit.jsonl"
        assert verify(str(log)).ok
        assert [e["sql"] for e in read(str(log))] == [SQL]
    # the same directory again: the tables are still there and the audit chain goes on
    with engine.connect(workdir=str(wd), key_bits=512, policies=OPEN) as con:
        assert con.execute(SQL).fetchall() == [(40,)]
    entries = list(read(str(wd / "ac.audit.jsonl")))
    assert [e["seq"] for e in entries] == [1, 2]
    assert verify(str(wd / "ac.audit.jsonl")).ok


@pytest.mark.e2e
def test_connect_relative_workdir_is_made_absolute(tmp_path, monkeypatch):
    import engine

    monkeypatch.chdir(tmp_path)
    with engine.connect(workdir="wd", key_bits=512) as con:
        assert con.workdir == str(tmp_path / "wd")
    assert (tmp_path / "wd" / "ac.log").exists()


@pytest.mark.e2e
def test_connect_default_workdir_is_temporary_and_removed_on_close():
    import engine

    con = engine.connect(key_bits=512)
    wd = con.workdir
    try:
        assert wd and os.path.isdir(wd)
        assert os.path.isabs(wd)
    finally:
        con.close()
    assert not os.path.exists(wd)


@pytest.mark.e2e
def test_cli_query_workdir_keeps_the_audit_log(tmp_path, tables):
    ac, emc = tables
    ac.to_csv(tmp_path / "insurer.csv", index=False)
    emc.to_csv(tmp_path / "hospital.csv", index=False)
    wd = tmp_path / "files"
    # the default policy requires an intersection of at least 20 (here: 40)
    r = mpcsql("query", "--key-bits", "512", "--workdir", str(wd), "--format", "json",
               "--table", "claims@ac=insurer.csv", "--table", "emc=hospital.csv",
               "SELECT COUNT(*) FROM claims JOIN emc USING (id)", cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [{"count_star()": 40}]
    show = mpcsql("audit", "show", str(wd / "ac.audit.jsonl"))
    assert show.returncode == 0 and "FROM claims JOIN emc" in show.stdout


@pytest.mark.e2e
def test_three_parties_example_runs_to_its_last_line(tmp_path):
    """examples/three-parties/run.sh, on a copy, with this tree's mpcsql: exit 0, "done".

    Uses the example's fixed ports 7400-7402."""
    work = tmp_path / "three-parties"
    shutil.copytree(EXAMPLE, work, ignore=shutil.ignore_patterns(
        "ca", "analysts", "certs", "*.key", "*.csr", "*.duckdb", "*.log", "ready.txt"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, cmd in (("mpcsql", f'"{sys.executable}" -m engine.cli'),
                      ("python", f'"{sys.executable}"')):
        script = bin_dir / name
        script.write_text(f'#!/bin/sh\nexec {cmd} "$@"\n')
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": ROOT + (os.pathsep + os.environ["PYTHONPATH"]
                                 if os.environ.get("PYTHONPATH") else "")}
    for var in ("MPCSQL_TLS_CA", "MPCSQL_TLS_CERT", "MPCSQL_TLS_KEY"):
        env.pop(var, None)
    r = subprocess.run(["bash", str(work / "run.sh")], capture_output=True, text=True,
                       env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    lines = r.stdout.strip().splitlines()
    assert lines[-1] == "done"
    assert lines[-2].startswith("Paillier pool (target 1200 per key)")
