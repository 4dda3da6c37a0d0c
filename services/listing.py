"""The filters of list endpoints (jobs, training runs): comma-separated values, each checked against what exists."""

from __future__ import annotations

from collections.abc import Sequence

from core.errors import ValidationFailed


def listed_values(given: str | None, known: Sequence[str], field: str) -> list[str]:
    """A comma-separated filter's values, each one of `known` (a typo would list nothing and look like an answer)."""
    values = [v.strip() for v in (given or "").split(",") if v.strip()]
    for value in values:
        if value not in known:
            raise ValidationFailed(f"{field} must be one of {', '.join(known)}; got {value!r}", field=field)
    return values
