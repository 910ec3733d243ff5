"""One error root in practice (issue 10, finding 6), without party processes: every failure an
analyst or an administrator can cause is an ``engine.Error`` subclass whose message names the
cause — deep nesting, extreme numeric options and parameters, bad policies and settings before
anything starts, certificate errors."""

from __future__ import annotations

import decimal
import subprocess
import sys

import pytest

import engine
from dialect import bind_parameters, parse, sql_literal
from dialect.errors import ConfigError, Error, ParseError, ProgrammingError, error_from_dict
from dialect.parsing import MAX_NESTING
from planner import Catalog, ColumnSchema, Party, Policy, TableSchema, plan
from planner import options as opts
from planner.policy import PolicyConfigError

JOIN = "FROM ac JOIN emc USING (id)"
TOO_DEEP = f"query nested too deeply (limit {MAX_NESTING})"


@pytest.fixture
def catalog() -> Catalog:
    def table(name, cols):
        return TableSchema(name, name, "id", tuple(ColumnSchema(n, t) for n, t in cols))

    return Catalog(
        (Party("ac", "data", 0), Party("emc", "data", 1), Party("helper", "helper", 2)),
        (table("ac", [("id", "BIGINT"), ("age", "BIGINT"), ("charges", "DOUBLE")]),
         table("emc", [("id", "BIGINT"), ("bmi", "DOUBLE")])),
    )


def nested(n: int) -> str:
    return "SELECT SUM(" + "(" * n + "ac.age % 2" + ")" * n + f") {JOIN}"


# --- nesting ----------------------------------------------------------------------------------


@pytest.mark.parametrize("sql", [
    nested(50),
    nested(5000),
    "SELECT SUM(" + "- " * 300 + f"ac.age) {JOIN}",
    f"SELECT COUNT(*) {JOIN} WHERE " + "NOT " * 300 + "ac.age > 1",
    "SELECT SUM(" + "CASE WHEN 1 THEN " * 40 + "1" + " END" * 40 + ") FROM ac",
], ids=["parens-50", "parens-5000", "minus-300", "not-300", "case-40"])
def test_deep_nesting_is_a_parse_error_naming_the_limit(sql, catalog):
    with pytest.raises(ParseError) as info:
        parse(sql)
    assert str(info.value).startswith(TOO_DEEP + " (line 1, column ")
    assert info.value.line == 1 and info.value.col is not None
    with pytest.raises(ParseError, match=r"query nested too deeply \(limit \d+\)"):
        plan(sql, catalog)


def test_nesting_of_50_is_refused_exactly():
    with pytest.raises(ParseError) as info:
        parse(nested(50))
    assert str(info.value) == f"{TOO_DEEP} (line 1, column {11 + MAX_NESTING})"


def test_nesting_within_the_limit_reaches_the_grammar_check():
    # the limit does not change what the grammar says about a shallower query
    with pytest.raises(engine.NotSupportedError, match=r"% \(modulo\) is not supported"):
        parse(nested(MAX_NESTING - 1))


def test_recursion_inside_the_parser_is_the_same_refusal():
    # called from a deep stack the parser runs out of frames below the limit: still ParseError
    def deep(k: int):
        return deep(k - 1) if k else parse(nested(MAX_NESTING - 1))

    with pytest.raises(ParseError, match=r"query nested too deeply"):
        deep(sys.getrecursionlimit() - 150)


# --- numeric options and parameters -------------------------------------------------------------


@pytest.mark.parametrize("option, value, words", [
    ("alpha", "1e-308", "option alpha of LASSO is out of range: 1e-308; allowed: "
                        "1e-12 <= alpha <= 1e12 (a smaller penalty is below the resolution of "
                        "the fixed-point solver; for no penalty use LINREG)"),
    ("alpha", "5e-324", "option alpha of LASSO is out of range: 5e-324; allowed: 1e-12"),
    ("alpha", "1e-400", "option alpha of LASSO is out of range: 1E-400; allowed: 1e-12"),
    ("alpha", "1e400", "option alpha of LASSO is out of range: 1E+400; allowed: 1e-12 <= alpha "
                       "<= 1e12 (a larger penalty leaves the range of the fixed-point solver)"),
    ("alpha", "1e13", "option alpha of LASSO is out of range: 1e13"),
    ("alpha", "1" + "0" * 5000, "option alpha of LASSO is out of range: 1.000E+5000"),
    ("max_iter", "1001", "option max_iter of LASSO is out of range: 1001; allowed: 1 <= "
                         "max_iter <= 1000"),
    ("max_iter", "1" + "0" * 400, "option max_iter of LASSO is out of range: 1.000E+400"),
    ("tol", "1e-13", "option tol of LASSO is out of range: 1e-13; allowed: 1e-12 <= tol <= 1"),
    ("tol", "5", "option tol of LASSO is out of range: 5; allowed: 1e-12 <= tol <= 1"),
])
def test_extreme_option_literals_are_refused_naming_option_and_range(catalog, option, value,
                                                                     words):
    with pytest.raises(ProgrammingError) as info:
        plan(f"SELECT LASSO(charges, age, bmi, {option} => {value}) {JOIN}", catalog)
    assert str(info.value).startswith(words)


@pytest.mark.parametrize("option, param, words", [
    ("alpha", 10**400, "option alpha of LASSO is out of range: 1.000E+400; allowed: 1e-12 <= "
                       "alpha <= 1e12"),
    ("alpha", 1e-308, "option alpha of LASSO is out of range: 1e-308"),
    ("alpha", 5e-324, "option alpha of LASSO is out of range: 5e-324"),
    ("alpha", decimal.Decimal("1e-999"), "option alpha of LASSO is out of range: 1E-999"),
    ("max_iter", 10**400, "option max_iter of LASSO is out of range: 1.000E+400"),
    ("tol", 10**400, "option tol of LASSO is out of range: 1.000E+400"),
])
def test_extreme_parameters_are_refused_naming_option_and_range(catalog, option, param, words):
    sql = bind_parameters(f"SELECT LASSO(charges, age, bmi, {option} => ?) {JOIN}", [param])
    with pytest.raises(ProgrammingError) as info:
        plan(sql, catalog)
    assert str(info.value).startswith(words)


def test_ridge_names_its_own_range_and_keeps_alpha_zero(catalog):
    with pytest.raises(ProgrammingError, match=r"option alpha of RIDGE is out of range: 1e-20; "
                                               r"allowed: 1e-12 <= alpha <= 1e12, or 0"):
        plan(f"SELECT RIDGE(charges, age, alpha => 1e-20) {JOIN}", catalog)
    (agg,) = plan(f"SELECT RIDGE(charges, age, alpha => 0) {JOIN}", catalog).aggregate.aggregates
    assert agg.options == (("alpha", 0.0),)


@pytest.mark.parametrize("option, value, expect", [
    ("alpha", "1e-12", 1e-12), ("alpha", "1e12", 1e12), ("alpha", "0.001", 0.001),
    ("max_iter", "1", 1), ("max_iter", "1000", 1000), ("tol", "1e-12", 1e-12), ("tol", "1", 1.0),
])
def test_range_ends_are_accepted(catalog, option, value, expect):
    (agg,) = plan(f"SELECT LASSO(charges, age, {option} => {value}) {JOIN}",
                  catalog).aggregate.aggregates
    assert agg.option(option) == expect


def test_alpha_range_is_within_what_the_solver_resolves():
    from engine.protocols.regression import options as solver

    # the smallest penalty on data of unit scale stays above the solver's zero threshold
    assert opts.ALPHA_MIN >= solver.PIVOT_ABS >= 2.0 ** -solver.SOLVER_FRAC
    # tol's range keeps the iteration count it picks below max_iter's
    assert solver.iterations(None, opts.TOL_MIN) <= opts.MAX_ITER
    assert solver.admm_iterations(None, opts.TOL_MIN) <= opts.MAX_ITER


def test_an_integer_too_long_to_write_is_a_programming_error():
    with pytest.raises(ProgrammingError, match="parameter is an integer of .* bits: too large"):
        sql_literal(10**5000)
    assert sql_literal(10**400) == "1" + "0" * 400


# --- policies -----------------------------------------------------------------------------------


@pytest.mark.parametrize("d, message", [
    ({"min_intersection": -1}, "policy of emc: min_intersection must be an integer >= 0, not -1"),
    ({"min_intersection": "10"},
     "policy of emc: min_intersection must be an integer >= 0, not '10'"),
    ({"min_intersection": 2.5}, "policy of emc: min_intersection must be an integer >= 0, not 2.5"),
    ({"min_group_rows": -5}, "policy of emc: min_group_rows must be an integer >= 0, not -5"),
    (5, "policy of emc must be a table (a dict of rules), not 5"),
    ({"allow": {"*": 5}}, "policy of emc: allow['*'] must be a list of aggregate names, not 5"),
    ({"allow": {"*": [1]}},
     "policy of emc: allow['*'] must be a list of aggregate names, not [1]"),
    ({"allow": {1: ["SUM"]}},
     "policy of emc: allow keys are '*', 'table' or 'table.column', not 1"),
    ({"allow": {"*": ["MODE"]}}, "policy of emc: unknown aggregate(s) or use(s) MODE for '*'"),
    ({"receivers": "ac"}, "policy of emc: receivers must be a list of strings, not 'ac'"),
    ({"analysts": [1]}, "policy of emc: analysts entries must be non-empty strings, not 1"),
    ({"join_protocols": ["fast"]}, "policy of emc: unknown join protocol(s) fast"),
    ({1: 2, "deny": 3}, "policy of emc: unknown key(s) 1, deny; known: allow"),
])
def test_bad_policies_are_config_errors_naming_the_key(d, message):
    with pytest.raises(ConfigError) as info:
        Policy.from_dict("emc", d)
    assert str(info.value).startswith(message)
    assert isinstance(info.value, engine.Error) and isinstance(info.value, ValueError)
    again = error_from_dict(info.value.to_dict())
    assert type(again) is PolicyConfigError and str(again) == str(info.value)


def test_check_policies_names_unknown_parties_and_receivers():
    from engine.client.embedded import DEFAULT_PARTIES
    from engine.deploy.config import check_policies

    with pytest.raises(ConfigError, match=r"^policies: unknown party 'emx'; the parties are "
                                          r"ac, emc, helper$"):
        check_policies(DEFAULT_PARTIES, {"emx": {"min_intersection": 5}})
    with pytest.raises(ConfigError, match=r"^policy of emc: receivers names unknown party 'ax'"):
        check_policies(DEFAULT_PARTIES, {"emc": {"receivers": ["ac", "ax"]}})
    with pytest.raises(ConfigError, match="policies must map party names"):
        check_policies(DEFAULT_PARTIES, [("emc", {})])
    out = check_policies(DEFAULT_PARTIES, {"emc": {"receivers": {"ac"}, "min_intersection": 3}})
    assert out["ac"] == {} and out["emc"]["receivers"] == ["ac"]  # JSON-ready
    assert Policy.from_dict("emc", out["emc"]).min_intersection == 3


@pytest.mark.parametrize("kwargs, message", [
    ({"policies": {"emc": {"min_intersection": -1}}},
     "policy of emc: min_intersection must be an integer >= 0, not -1"),
    ({"policies": {"helper": {"allow": {"*": "SUM, AVG"}}}},
     "policy of helper: unknown aggregate(s) or use(s) SUM, AVG for '*'"),
    ({"query_timeout": -1}, "query_timeout must be a positive number of seconds, not -1"),
    ({"query_timeout": float("nan")},
     "query_timeout must be a positive number of seconds, not nan"),
    ({"key_bits": 128}, "key_bits must be an integer >= 512"),
    ({"paillier_pool": -2}, "paillier_pool must be an integer >= 0 (0: off), not -2"),
])
def test_connect_refuses_bad_settings_before_any_process_starts(monkeypatch, tmp_path, kwargs,
                                                                message):
    def no_process(*a, **k):
        raise AssertionError("a party process was started")

    monkeypatch.setattr(subprocess, "Popen", no_process)
    workdir = tmp_path / "fed"
    with pytest.raises(ConfigError) as info:
        engine.connect(workdir=str(workdir), **kwargs)
    assert str(info.value).startswith(message)
    assert "Traceback" not in str(info.value)
    assert not workdir.exists()  # nothing was created either


def test_a_bad_policy_in_party_toml_is_still_a_config_error():
    from engine.deploy import config

    assert config.ConfigError is ConfigError
    assert issubclass(PolicyConfigError, ConfigError)


# --- certificates and the error registry ----------------------------------------------------


def test_cert_error_is_in_the_root_and_still_a_value_error(tmp_path):
    from engine.deploy import certs

    assert issubclass(certs.CertError, ConfigError)
    assert issubclass(certs.CertError, engine.Error) and issubclass(certs.CertError, ValueError)
    with pytest.raises(engine.Error, match="invalid party name 'Bad'"):
        certs.check_party_name("Bad")
    with pytest.raises(ValueError, match="cannot read"):  # call sites catching ValueError
        certs.load_cert(str(tmp_path / "missing.crt"))
    err = certs.CertError("x.pem is not a PEM certificate", party="ac")
    again = error_from_dict(err.to_dict())
    assert type(again) is certs.CertError and str(again) == "[ac] x.pem is not a PEM certificate"


def test_config_error_is_registered():
    again = error_from_dict(ConfigError("[tls] key: not found", party="emc").to_dict())
    assert type(again) is ConfigError and isinstance(again, Error)

