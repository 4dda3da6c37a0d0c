"""Case-insensitive substring search over samples.text, with the trigram index of migration 0006.

What matches is defined by `contains_text`: LIKE '%q%' on SQLite (which folds the case of ASCII letters only)
and ILIKE '%q%' on Postgres, as before the index existed. The indexes only find the rows sooner:

- Postgres: the pg_trgm GIN index `ix_samples_text_trgm` serves ILIKE itself, short patterns included.
- SQLite: the FTS5 table `samples_text_fts` (trigram tokenizer, detail=none) yields the rows that hold every
  three-character piece of q. That is a superset of LIKE's rows: the pieces may lie in another order, and FTS5
  folds case over all of Unicode where LIKE folds ASCII only; LIKE then decides among those few. A query under
  three characters has no trigram: it is answered by LIKE alone, reading the rows the rest of the filter leaves.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, Select, column, func, select, table
from sqlalchemy.orm import Session

from db.models import Sample

TRIGRAM = 3
FTS_TABLE = "samples_text_fts"  # created by migration 0006
# FTS5 names a hidden column after the table: `samples_text_fts MATCH ...` searches the whole row.
samples_text_fts = table(FTS_TABLE, column("rowid"), column(FTS_TABLE))


def contains_text(dialect: str, query: str) -> ColumnElement[bool]:
    """samples.text contains `query`, ignoring case as the database's LIKE / ILIKE does."""
    if dialect == "sqlite":
        return Sample.text.contains(query, autoescape=True)
    return Sample.text.icontains(query, autoescape=True)


def indexed(dialect: str, query: str) -> bool:
    """Whether the SQLite trigram table can narrow a search for `query`."""
    return dialect == "sqlite" and len(query) >= TRIGRAM


def fts5_trigrams(query: str) -> str:
    """An FTS5 query for rows holding every trigram of `query`: each one a quoted string (inside double quotes
    every character is literal, and `"` is written twice), joined by AND."""
    trigrams = sorted({query[i : i + TRIGRAM] for i in range(len(query) - TRIGRAM + 1)})
    return " AND ".join('"' + trigram.replace('"', '""') + '"' for trigram in trigrams)


def candidate_ids(query: str) -> Select[tuple[int]]:
    """Ids of the samples whose text may contain `query` (SQLite, `indexed` queries): every one that does."""
    matching = samples_text_fts.c[FTS_TABLE].match(fts5_trigrams(query))
    return select(samples_text_fts.c.rowid).where(matching)


def count_candidates(session: Session, query: str, cap: int) -> int:
    """How many samples `candidate_ids` yields, counted no further than `cap`."""
    capped = candidate_ids(query).limit(cap).subquery()
    return session.scalar(select(func.count()).select_from(capped)) or 0
