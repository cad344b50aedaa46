"""KFL, the Kubeshark filter language: CEL over the Entry with KFL2's variable names (DESIGN.md §4).

Rule: one parsed and checked tree (`Query`) compiles three ways — a Python predicate, a SQLite
WHERE clause with a residual, a MongoDB filter with a residual — and all three select the same
entries; a query that cannot be understood is a `KflError` with a position and a hint.
"""

from wiretide.common.kfl.errors import KflError, Problem
from wiretide.common.kfl.mongo import MongoPlan, compile_mongo
from wiretide.common.kfl.query import (
    Predicate,
    Query,
    compile_predicate,
    compile_value,
    parse_query,
    validate,
)
from wiretide.common.kfl.sql import SqlPlan, compile_sql
from wiretide.common.kfl.variables import FLAGS, VARIABLES

__all__ = [
    "FLAGS",
    "VARIABLES",
    "KflError",
    "MongoPlan",
    "Predicate",
    "Problem",
    "Query",
    "SqlPlan",
    "compile_mongo",
    "compile_predicate",
    "compile_sql",
    "compile_value",
    "parse_query",
    "validate",
]
