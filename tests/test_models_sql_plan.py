"""Planning LASSO / RIDGE / LINREG with WHERE and GROUP BY (no parties: the plan itself)."""

from __future__ import annotations

import pytest

from dialect.errors import NotSupportedError, PolicyError, ProgrammingError
from planner import Policy
from planner.build import plan
from planner.usage import Usage
from tests.test_lower import CATALOG

JOIN = "FROM ac JOIN emc USING (id)"


def test_a_grouped_model_plans_its_statistics_and_outputs_keys_terms_coefficients():
    p = plan(f"SELECT smoker, RIDGE(charges, age, bmi, alpha => 2) {JOIN} WHERE bmi > 20 "
             "GROUP BY smoker", CATALOG)
    m = p.program.model
    assert (m.func, m.terms, len(m.means), len(m.cov)) == ("RIDGE", ("age", "bmi"), 3, 6)
    assert m.inv_count is not None and m.bits[0] > m.bits[1]
    assert [c.name for c in p.output] == ["smoker", "term", "coefficient"]
    labels = [d.label for d in p.disclosures()]
    assert labels.index("constant-feature bit") < labels.index("group_present") \
        < labels.index("result")
    # each party shares each of its model columns once: no local column of a product
    texts = [c.text for s in p.scans for c in s.local]
    assert not [t for t in texts if "charges * age" in t or "age * charges" in t], texts


def test_lasso_opens_no_bit_and_without_group_by_one_presence_bit():
    p = plan(f"SELECT LASSO(charges, age, bmi) {JOIN} WHERE ac.age > emc.bmi", CATALOG)
    learned = p.learns()["ac"]
    assert not [t for t in learned if "collinear" in t or "constant" in t]
    assert any("whether LASSO has any row to fit" in t for t in learned)
    assert any("filter_too_small" == d.label for d in p.disclosures())
    assert "LASSO(target, age, bmi) per group in MPC" in p.explain()


def test_without_where_and_group_by_the_model_path_is_unchanged():
    p = plan(f"SELECT LASSO(charges, age, bmi) {JOIN}", CATALOG)
    assert p.program is None and p.model is not None


def test_model_usages_and_policy():
    p = plan(f"SELECT smoker, LINREG(charges, age) {JOIN} WHERE bmi > 20 GROUP BY smoker",
             CATALOG)
    assert set(p.usages) == {Usage("emc", "emc", "bmi", "WHERE"),
                             Usage("ac", "ac", "smoker", "GROUP BY"),
                             Usage("ac", "ac", "charges", "LINREG"),
                             Usage("ac", "ac", "age", "LINREG")}
    Policy.from_dict("ac", {"allow": {"*": ["LINREG", "GROUP BY"]}}).check(p)
    with pytest.raises(PolicyError, match="LINREG is not allowed on ac.age"):
        Policy.from_dict("ac", {"allow": {"*": ["GROUP BY"], "ac.charges": ["LINREG"]}}).check(p)


@pytest.mark.parametrize("sql,err,match", [
    (f"SELECT smoker, LASSO(charges, age) {JOIN} GROUP BY smoker HAVING COUNT(*) > 2",
     NotSupportedError, "LASSO with HAVING"),
    (f"SELECT smoker, LASSO(charges, age) {JOIN} GROUP BY smoker LIMIT 3",
     NotSupportedError, "LASSO with LIMIT"),
    (f"SELECT COUNT(*), LASSO(charges, age) {JOIN} WHERE age > 2", NotSupportedError,
     "beside a model aggregate"),
    (f"SELECT LASSO(charges, age), RIDGE(charges, bmi) {JOIN} WHERE age > 2",
     NotSupportedError, "one model aggregate"),
    (f"SELECT LASSO(charges, age, age) {JOIN} WHERE age > 2", ProgrammingError,
     "feature age appears twice"),
    (f"SELECT LASSO(charges, age, alpha => -1) {JOIN} WHERE age > 2", ProgrammingError,
     "alpha"),
])
def test_refusals(sql, err, match):
    with pytest.raises(err, match=match):
        plan(sql, CATALOG)
