"""Column types that behave the same on SQLite and PostgreSQL.

- `Money`: exact USD. `NUMERIC(20, 9)` on PostgreSQL; on SQLite, which has no
  exact decimal type (SQLAlchemy would go through `float`), an integer count
  of nano-USD. Python always sees a `Decimal` with nine places.
- `UtcDateTime`: timezone-aware UTC datetimes in and out. SQLite stores naive
  text, so naive values read back are taken as UTC.
- `JSON_DOC`: JSON, stored as `JSONB` on PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Dialect, Numeric
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator, TypeEngine

__all__ = ["JSON_DOC", "MONEY_PLACES", "Money", "UtcDateTime"]

MONEY_PLACES = 9
"""Decimal places kept for money (nano-USD, as in the ledger)."""

_QUANTUM = Decimal(1).scaleb(-MONEY_PLACES)

JSON_DOC = JSON().with_variant(JSONB(), "postgresql")
"""JSON column type; `JSONB` on PostgreSQL."""


class Money(TypeDecorator[Decimal]):
    """Exact USD with nine decimal places (rounded half away from zero, as PostgreSQL does)."""

    impl = Numeric(20, MONEY_PLACES)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        """Integer nano-USD on SQLite, `NUMERIC(20, 9)` elsewhere."""
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(Numeric(20, MONEY_PLACES, asdecimal=True))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Decimal | int | None:
        """Quantize to nine places; nano-USD integer on SQLite."""
        if value is None:
            return None
        exact = Decimal(value).quantize(_QUANTUM, rounding=ROUND_HALF_UP)
        if dialect.name == "sqlite":
            return int(exact.scaleb(MONEY_PLACES))
        return exact

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        """Back to `Decimal` USD with nine places."""
        if value is None:
            return None
        if dialect.name == "sqlite":
            return Decimal(int(value)).scaleb(-MONEY_PLACES).quantize(_QUANTUM)
        return Decimal(value).quantize(_QUANTUM)


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Convert to UTC; naive values are taken as UTC already."""
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        # SQLite keeps text without an offset; store the UTC wall time.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Aware UTC datetime."""
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
