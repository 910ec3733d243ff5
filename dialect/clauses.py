"""Checks of the clauses of the secure SELECT: the select list, WHERE, GROUP BY, HAVING,
ORDER BY, LIMIT and OFFSET (a mixin of :class:`dialect.grammar.GrammarChecker`)."""

from __future__ import annotations

from sqlglot import exp
from sqlglot.optimizer.normalize_identifiers import normalize_identifiers
from sqlglot.tokens import TokenType

from dialect.dialect import MpcDialect
from dialect.expressions import AGGREGATE_LIST, ExpressionChecks, Scope, is_literal
from dialect.functions import MODEL_FUNCTIONS

#: GROUP BY forms outside the grammar: Group arg -> construct.
GROUP_FORMS = {
    "all": "GROUP BY ALL",
    "grouping_sets": "GROUPING SETS",
    "cube": "CUBE",
    "rollup": "ROLLUP",
    "totals": "WITH TOTALS",
}
GROUP_NODES = {
    exp.GroupingSets: ("GROUPING SETS", TokenType.GROUPING_SETS),
    exp.Cube: ("CUBE", TokenType.CUBE),
    exp.Rollup: ("ROLLUP", TokenType.ROLLUP),
}
ORDER_HINT = "order by an output column, its alias or its position (1, 2, ...)"
LIMIT_HINT = "takes a non-negative integer literal"


def _normalized(node: exp.Expression) -> exp.Expression:
    return normalize_identifiers(node.copy(), dialect=MpcDialect)


def non_negative_int(node: exp.Expression | None) -> int | None:
    """The value of a non-negative integer literal, else None."""
    if isinstance(node, exp.Literal) and not node.is_string and node.is_int:
        value = int(node.this)
        return value if value >= 0 else None
    return None


class ClauseChecks(ExpressionChecks):
    """The select list and the clauses after FROM."""

    def check_clauses(self, stmt: exp.Select) -> None:
        grouped = stmt.args.get("group") is not None
        for item in stmt.expressions:
            self.check_item(item, grouped)
        where = stmt.args.get("where")
        if where is not None:
            self.check_expr(where.this, Scope("WHERE"))
        if grouped:
            self.check_group(stmt.args["group"])
        having = stmt.args.get("having")
        if having is not None:
            aliases = frozenset(i.alias.lower() for i in stmt.expressions
                                if isinstance(i, exp.Alias))
            self.check_expr(having.this, Scope("HAVING", aggregates=True, columns=grouped,
                                               aliases=aliases))
        if stmt.args.get("order") is not None:
            self.check_order(stmt)
        self.check_limit(stmt.args.get("limit"), stmt.args.get("offset"))

    # --- the select list ----------------------------------------------------------------------

    def check_item(self, item: exp.Expression, grouped: bool) -> None:
        node = item.this if isinstance(item, exp.Alias) else item
        if isinstance(node, exp.Star) or (
            isinstance(node, exp.Column) and isinstance(node.this, exp.Star)
        ):
            self.refuse(node, "* outside COUNT",
                        hint=f"select aggregates ({AGGREGATE_LIST}) or group keys")
        elif isinstance(node, MODEL_FUNCTIONS):
            self.check_model(node)
        else:
            self.check_expr(node, Scope("SELECT", aggregates=True, columns=grouped))

    # --- GROUP BY -----------------------------------------------------------------------------

    def check_group(self, group: exp.Group) -> None:
        for key, construct in GROUP_FORMS.items():
            value = group.args.get(key)
            if value:
                node = value[0] if isinstance(value, list) else value
                node = node if isinstance(node, exp.Expression) else group
                self.refuse(node, construct, keywords=(TokenType.GROUP_BY,),
                            hint="GROUP BY takes a list of keys")
        for key in group.expressions:
            self.check_group_key(key)

    def check_group_key(self, key: exp.Expression) -> None:
        if type(key) in GROUP_NODES:
            construct, token = GROUP_NODES[type(key)]
            self.refuse(key, construct, keywords=(token,), hint="GROUP BY takes a list of keys")
        elif isinstance(key, exp.Literal) and not key.is_string and key.is_int:
            if non_negative_int(key) in (None, 0):  # GROUP BY n: the n-th select item
                self.refuse(key, "GROUP BY position 0", hint="positions start at 1")
        elif is_literal(key):
            self.refuse(key, "constant GROUP BY key", hint="group by a column or expression")
        else:
            self.check_expr(key, Scope("GROUP BY"))

    # --- ORDER BY -----------------------------------------------------------------------------

    def check_order(self, stmt: exp.Select) -> None:
        grouped = stmt.args.get("group") is not None
        items = [_normalized(i.this if isinstance(i, exp.Alias) else i) for i in stmt.expressions]
        for ordered in stmt.args["order"].expressions:
            if ordered.args.get("with_fill"):
                self.refuse(ordered, "WITH FILL")
            self.check_order_key(ordered.this, items, grouped)

    def check_order_key(self, node: exp.Expression, items: list[exp.Expression],
                        grouped: bool) -> None:
        if isinstance(node, exp.Var) and node.name.upper() == "ALL":
            self.refuse(node, "ORDER BY ALL", keywords=(TokenType.ORDER_BY,), hint=ORDER_HINT)
        elif isinstance(node, exp.Column) and not isinstance(node.this, exp.Star):
            self.check_column_use(node, Scope("ORDER BY"))  # an alias or a group key
        elif is_literal(node):
            if non_negative_int(node) in (None, 0):
                self.refuse(node, "ORDER BY constant", hint=ORDER_HINT)
        else:
            before = len(self.found)
            self.check_expr(node, Scope("ORDER BY", aggregates=True, columns=grouped))
            if len(self.found) == before and _normalized(node) not in items:
                self.refuse(node, "ORDER BY expression that is not a select item",
                            message=f"ORDER BY {self.sql(node)}, which is not a select item, "
                            "is not supported", hint="only the output columns are opened: add it "
                            f"to SELECT, or {ORDER_HINT}")

    # --- LIMIT / OFFSET -----------------------------------------------------------------------

    def check_limit(self, limit: exp.Expression | None, offset: exp.Expression | None) -> None:
        if isinstance(limit, exp.Fetch):
            self.refuse(limit, "FETCH", keywords=(TokenType.FETCH,), hint="use LIMIT n")
        elif limit is not None:
            options = limit.args.get("limit_options")
            if options is not None and options.args.get("percent"):
                self.refuse(limit, "LIMIT PERCENT", keywords=(TokenType.LIMIT,))
            if options is not None and options.args.get("with_ties"):
                self.refuse(limit, "LIMIT WITH TIES", keywords=(TokenType.LIMIT,))
            if limit.args.get("expressions"):
                self.refuse(limit, "LIMIT BY", keywords=(TokenType.LIMIT,))
            self.check_count_literal(limit, "LIMIT", TokenType.LIMIT)
        if offset is not None:
            self.check_count_literal(offset, "OFFSET", TokenType.OFFSET)

    def check_count_literal(self, clause: exp.Expression, name: str, token: TokenType) -> None:
        value = clause.expression
        if non_negative_int(value) is None:
            text = self.sql(value) if isinstance(value, exp.Expression) else "?"
            node = value if isinstance(value, exp.Expression) else clause
            keywords = () if self.src.first_start(node) is not None else (token,)
            self.refuse(node, f"{name} expression", message=f"{name} {text} is not supported",
                        hint=f"{name} {LIMIT_HINT}", keywords=keywords)
