"""Protected terms: a dataset's topic words, which no augmenter replaces ("support abortion" must not become
"support miscarriage": the label would go with the word).

Seeded with the words most associated with each class of each task — per class, one-vs-rest chi² over the
train originals (a word's presence in a text, scikit-learn's `chi2`), keeping words over-represented in the
class, in at least `min_docs` of its texts, significant at p < 0.001, the `per_class` strongest — and edited
by leads (admins until roles land) through the API and `augloop terms`. A dataset is seeded once, on its first
augmentation request or plan, or again on request; a seeded term someone removed stays removed until then.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from core.errors import ValidationFailed
from core.textnorm import combining_marks, term_key
from db import protected_terms as db_terms
from db.augmentation import labels_of, texts_by_id, train_original_ids
from db.datasets import lock_dataset
from db.models import Dataset, User, utcnow
from services.access import Need
from services.variant_settings import locked_settings, store, variant_settings
from workers.augment.textspans import ProtectedTerms, words

# letters, with the combining marks a decomposed or case-folded letter carries ("İ" folds to "i" + U+0307) and
# the vowel signs of Indic and Arabic scripts (core.textnorm.combining_marks)
_LETTER = rf"(?:[^\W\d_]|[{combining_marks()}])"
_TERM = re.compile(rf"^[^\W\d_]{_LETTER}*(?:['’ -][^\W\d_]{_LETTER}*)*$")
MAX_TERMS = 5_000
# Train originals read to seed the terms, at most: a uniform sample, fixed per dataset, beyond that. It runs in the
# first augmentation request; at a million texts, reading and counting them all took a minute and 2 GB. A class
# of 1% still has 200 texts in the sample, more than chi² at p < 0.001 needs for its strongest words.
SEED_SAMPLE = 20_000


def normalise_term(raw: str, field: str) -> str:
    term = term_key(" ".join(raw.split()))  # "café" typed either way is one term
    if not term or len(term) > 100 or not _TERM.match(term):
        raise ValidationFailed(
            f"{raw!r} is not a term: letters, with apostrophes, hyphens or spaces between words, "
            "at most 100 characters",
            field=field,
        )
    return term


def class_terms(
    texts: Sequence[str],
    labels: Sequence[dict[str, str]],
    tasks: Sequence[dict[str, Any]],
    language: str,
    *,
    per_class: int = 10,
    min_docs: int = 3,
    max_p: float = 0.001,
) -> list[db_terms.SeededTerm]:
    """The words most associated with each class (see the module docstring), strongest first per class."""
    import numpy as np
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.feature_selection import chi2

    from workers.augment.textspans import stop_words

    stops = stop_words(language)
    docs = [
        sorted({term_key(w.text) for w in words(t) if term_key(w.text) not in stops and len(w.text) > 2}) for t in texts
    ]
    if not docs:
        return []
    vectorizer = CountVectorizer(analyzer=lambda d: d, binary=True, min_df=min_docs)
    try:
        matrix = vectorizer.fit_transform(docs).tocsc()
    except ValueError:  # no word in min_docs texts
        return []
    vocab = np.array(vectorizer.get_feature_names_out())
    out: list[db_terms.SeededTerm] = []
    for task in tasks:
        y_task = np.array([lab.get(task["name"]) for lab in labels], dtype=object)
        for label in task["labels"]:
            inside = y_task == label
            if inside.sum() < min_docs or inside.all():
                continue
            score, p = chi2(matrix, inside)
            rate_in = np.asarray(matrix[inside].mean(axis=0)).ravel()
            rate_out = np.asarray(matrix[~inside].mean(axis=0)).ravel()
            count_in = np.asarray(matrix[inside].sum(axis=0)).ravel()
            ok = (rate_in > rate_out) & (count_in >= min_docs) & (p < max_p) & np.isfinite(score)
            for j in np.flatnonzero(ok)[np.argsort(-score[ok], kind="stable")][:per_class]:
                out.append(db_terms.SeededTerm(str(vocab[j]), task["name"], label, round(float(score[j]), 3)))
    return out


def seed(session: Session, dataset: Dataset, *, per_class: int = 10, created_by: int | None = None) -> dict[str, Any]:
    """Replace the dataset's seeded terms with the words most associated with its classes now."""
    if not 1 <= per_class <= 200:
        raise ValidationFailed("per_class must be in [1, 200]", field="per_class")
    # Held before the terms are written: a first plan seeding at the same moment waits here, rather than each
    # waiting on the other (its terms' unique index, this one's settings row).
    settings = locked_settings(session, dataset)
    ids = train_original_ids(session, dataset.id)
    if len(ids) > SEED_SAMPLE:  # a sample, the same for the same dataset: this runs in a request
        ids = sorted(random.Random(dataset.id).sample(ids, SEED_SAMPLE))
    labels = labels_of(session, ids)
    texts = texts_by_id(session, ids)
    ids = [i for i in ids if i in labels and i in texts]
    seeded = class_terms(
        [texts[i] for i in ids],
        [labels[i] for i in ids],
        dataset.tasks,
        dataset.language,
        per_class=per_class,
    )
    best: dict[str, db_terms.SeededTerm] = {}
    for s in seeded:  # a word marking two classes is stored once, with its strongest class
        if s.term not in best or s.score > best[s.term].score:
            best[s.term] = s
    db_terms.replace_seeded(session, dataset.id, list(best.values()), created_by)
    settings.protected_terms_seeded_at = utcnow().isoformat()
    store(session, dataset, settings)
    return terms_view(session, dataset)


def ensure_seeded(session: Session, dataset: Dataset) -> None:
    """Seed a dataset's protected terms the first time it is augmented. Two first requests at once take turns
    (the dataset's row is locked until the caller commits), and the second one finds the terms seeded."""
    if variant_settings(dataset).protected_terms_seeded_at is not None:
        return
    if locked_settings(session, dataset).protected_terms_seeded_at is None:  # as the row's last holder left it
        seed(session, dataset)


def edit(
    session: Session, dataset: Dataset, add: Sequence[str], remove: Sequence[str], created_by: int | None
) -> dict[str, Any]:
    to_add = [normalise_term(t, f"add.{i}") for i, t in enumerate(add)]
    to_remove = [normalise_term(t, f"remove.{i}") for i, t in enumerate(remove)]
    lock_dataset(session, dataset.id)  # a first seeding at the same moment: one after the other
    # the terms the dataset would hold: what it removes makes room, a term it holds already takes none
    after = (set(db_terms.term_strings(session, dataset.id)) - set(to_remove)) | set(to_add)
    if len(after) > MAX_TERMS:
        raise ValidationFailed(f"a dataset holds at most {MAX_TERMS} protected terms", field="add")
    db_terms.remove_terms(session, dataset.id, to_remove)
    db_terms.add_terms(session, dataset.id, to_add, "manual", created_by)
    return terms_view(session, dataset)


def terms_view(session: Session, dataset: Dataset) -> dict[str, Any]:
    return {
        "dataset": dataset.name,
        "seeded_at": variant_settings(dataset).protected_terms_seeded_at,
        "terms": [
            {
                "term": t.term,
                "origin": t.origin,
                "task": t.task,
                "label": t.label,
                "score": t.score,
                "created_at": t.created_at,
            }
            for t in db_terms.list_terms(session, dataset.id)
        ],
    }


def protected_for(session: Session, dataset: Dataset) -> ProtectedTerms:
    return ProtectedTerms(db_terms.term_strings(session, dataset.id))


# The doors name datasets -------------------------------------------------------------------------------


def terms_of(session: Session, name: str, user: User | None) -> dict[str, Any]:
    from services.datasets import dataset_named

    return terms_view(session, dataset_named(session, name, user))


def edit_terms(
    session: Session, name: str, add: Sequence[str], remove: Sequence[str], user: User | None
) -> dict[str, Any]:
    """The project's leads (None: the operator)."""
    from services.datasets import dataset_named

    return edit(session, dataset_named(session, name, user, Need.lead), add, remove, user.id if user else None)


def seed_terms(session: Session, name: str, per_class: int, user: User | None) -> dict[str, Any]:
    """The project's leads (None: the operator)."""
    from services.datasets import dataset_named

    return seed(
        session,
        dataset_named(session, name, user, Need.lead),
        per_class=per_class,
        created_by=user.id if user else None,
    )
