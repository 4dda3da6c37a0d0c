"""Review fixtures: a small dataset with augmented variants inserted directly (no augmenter involved), extra
annotators, and a live API server on a loopback port for the Streamlit tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.pg_server import free_port

SOURCES = [
    ("We must protect Social Security for our seniors.", {"bias": "partisan", "message": "policy"}),
    ("Proud to meet with local farmers in Ames today.", {"bias": "neutral", "message": "constituency"}),
    ("Join us at the rally on Saturday!", {"bias": "neutral", "message": "mobilization"}),
    ("The other party has failed working families again.", {"bias": "partisan", "message": "attack"}),
    ("Watch my interview on CNN tonight.", {"bias": "neutral", "message": "media"}),
    ("Happy birthday to my wonderful wife.", {"bias": "neutral", "message": "personal"}),
]
# What back-translation, masked-LM substitution and WordNet synonyms typically make of each source (written
# by hand: these tests exercise review, not generation), good and bad alike.
VARIANTS = [
    [
        "We have to protect Social Security for our older people.",
        "We must defend Social Security for our seniors.",
        "We must protect Social Security for our elderly.",
    ],
    [
        "Proud to have met local farmers in Ames today.",
        "Proud to meet with local growers in Ames today.",
        "Proud to meet with local husbandmen in Ames today.",
    ],
    [
        "Join us at the rally this Saturday!",
        "Join us at the big rally on Saturday!",
        "Join us at the rally on Sat!",
    ],
    [
        "Once again the other party has failed working families.",
        "The other party has betrayed working families again.",
        "The other party has failed working households again.",
    ],
    [
        "Watch my CNN interview this evening.",
        "Watch my interview on Fox tonight.",
        "Watch my consultation on CNN tonight.",
    ],
    [
        "Happy birthday to my lovely wife.",
        "Happy birthday to my wonderful husband.",
        "Happy natal day to my wonderful wife.",
    ],
]
HOSTILE_TEXT = "<script>alert(1)</script> see [click me](http://evil.example) ![pic](http://evil.example/x.png)"


@dataclass
class ReviewData:
    dataset: str
    sources: list[int]
    variants: dict[int, list[int]] = field(default_factory=dict)  # source id → variant ids
    hostile: int | None = None


def make_dataset(session: Any, name: str = "rev", reviews_required: int = 1) -> list[int]:
    from db.models import Dataset

    ds = Dataset(
        name=name,
        display_name=name,
        project_id=1,  # the default project the migration creates
        language="en",
        reviews_required=reviews_required,
        guidelines="**Keep** the label.",
        tasks=[
            {"name": "bias", "labels": ["neutral", "partisan"]},
            {
                "name": "message",
                "labels": ["policy", "constituency", "mobilization", "attack", "media", "personal"],
            },
        ],
    )
    session.add(ds)
    session.flush()
    return [add_original(session, ds, text, labels, "train", f"src{i}") for i, (text, labels) in enumerate(SOURCES)]


def add_original(session: Any, dataset: Any, text: str, labels: dict[str, str], split: str, external_id: str) -> int:
    """An imported (original) text with its labels; returns its id."""
    from core.textnorm import content_hash
    from db.models import Sample, SampleLabel

    s = Sample(
        dataset_id=dataset.id,
        text=text,
        split=split,
        origin="original",
        content_hash=content_hash(text),
        external_id=external_id,
    )
    s.labels_rows = [SampleLabel(task=t, label=lab) for t, lab in labels.items()]
    session.add(s)
    session.flush()
    return int(s.id)


def add_val_texts(session: Any, dataset: Any) -> None:
    """Two labelled val originals: what a training request needs besides train texts (its early stopping, LR
    selection and decision rule read val)."""
    add_original(
        session,
        dataset,
        "Vote for the farm bill tomorrow.",
        {"bias": "partisan", "message": "mobilization"},
        "val",
        "val0",
    )
    add_original(
        session,
        dataset,
        "Thanks to everyone who came out tonight.",
        {"bias": "neutral", "message": "constituency"},
        "val",
        "val1",
    )


def add_variant(
    session: Any,
    parent_id: int,
    text: str,
    *,
    method: str = "wordnet",
    similarity: float = 0.8,
    consistency: float = 0.7,
    seed: int = 1,
    model_name: str | None = None,
    method_params: dict | None = None,
    origin: str = "augmented",
    flag: bool | None = False,
    semantic: float | None = None,
    novelty: float | None = None,
) -> int:
    """A variant the way the augmenters store one: pending, provenance filled, the parent's labels."""
    from core.textnorm import content_hash
    from db.models import Sample, SampleLabel

    parent = session.get(Sample, parent_id)
    v = Sample(
        dataset_id=parent.dataset_id,
        text=text,
        split=parent.split,
        origin=origin,
        content_hash=content_hash(text),
        parent_id=parent.id,
        method=method,
        seed=seed,
        model_name=model_name,
        method_params=method_params or {},
        generated_text=text,
        scores={"similarity": similarity, "label_consistency": consistency},
        similarity=similarity,
        label_consistency=consistency,
        label_flag=flag,
        semantic_similarity=semantic,
        novelty=novelty,
        review_status="pending",
    )
    v.labels_rows = [SampleLabel(task=row.task, label=row.label) for row in parent.labels_rows]
    session.add(v)
    session.flush()
    return v.id


def record_review(session: Any, variant_id: int, user_id: int, approved: bool) -> None:
    """A person's decision on a variant, as the review flow stores it (status, count, the audit row)."""
    from db.models import Review, Sample

    v = session.get(Sample, variant_id)
    v.review_status, v.review_count = ("approved" if approved else "rejected"), 1
    session.add(
        Review(
            sample_id=variant_id,
            user_id=user_id,
            decision="approve" if approved else "reject",
            reason=None if approved else "meaning_changed",
            text_before=v.text,
            text_after=v.text,
            version_seen=1,
        )
    )


def seed_review_data(
    engine: Any, name: str = "rev", per_source: int = 3, reviews_required: int = 1, hostile: bool = True
) -> ReviewData:
    from db.session import session_scope

    methods = [
        ("backtranslation", "Helsinki-NLP/opus-mt-en-de", {"pivot": "de"}),
        ("mlm", "bert-base-multilingual-cased", {"aug_p": 0.15}),
        ("wordnet", None, {}),
    ]
    with session_scope(engine) as s:
        sources = make_dataset(s, name, reviews_required)
        data = ReviewData(dataset=name, sources=sources)
        for i, sid in enumerate(sources):
            for j in range(per_source):
                method, model, params = methods[j % len(methods)]
                text = VARIANTS[i][j % 3] + (f" ({j})" if j >= 3 else "")
                data.variants.setdefault(sid, []).append(
                    add_variant(
                        s,
                        sid,
                        text,
                        method=method,
                        model_name=model,
                        method_params=params,
                        seed=j,
                        similarity=round(0.5 + 0.1 * j, 2),
                        consistency=round(0.9 - 0.1 * i, 2),
                    )
                )
        if hostile:
            data.hostile = add_variant(s, sources[-1], HOSTILE_TEXT, method="mlm", similarity=0.95)
            data.variants[sources[-1]].append(data.hostile)
    return data


def issue_token(engine: Any, name: str, role: str = "annotator", project_role: str = "annotator") -> str:
    """A token for a new user; a non-admin joins the default project (where the review data is)."""
    from db.auth import create_token
    from db.session import session_scope
    from services.projects import add_member

    with session_scope(engine) as s:
        token = create_token(s, name, role).token
        if role != "admin":
            add_member(s, "default", name, project_role)
        return token


@pytest.fixture
def review_data(engine) -> ReviewData:
    return seed_review_data(engine)


@pytest.fixture
def carol(app, engine) -> Iterator:
    """A second annotator."""
    from fastapi.testclient import TestClient

    with TestClient(app, headers={"Authorization": f"Bearer {issue_token(engine, 'carol')}"}) as c:
        yield c


@contextmanager
def serve(app: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Serve `app` with uvicorn on a free loopback port in a thread; point AUGLOOP_API_URL (the UI) at it."""
    import uvicorn

    from core import settings as settings_mod

    port = free_port()
    # proxy_headers off, as `augloop serve` runs it: the API decides whom to believe (AUGLOOP_TRUSTED_PROXIES)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", proxy_headers=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    url = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("AUGLOOP_API_URL", url)
    settings_mod.get_settings.cache_clear()
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def live_api(app, monkeypatch) -> Iterator[str]:
    """The real API on loopback (the UI and concurrent clients reach it over HTTP)."""
    with serve(app, monkeypatch) as url:
        yield url


def write_meanwhile(engine: Any, calls: list[str]) -> Any:
    """A function that commits a write of its own to the SQLite database, with a short busy timeout, and notes
    in `calls` whether it could ("wrote") or the error it met: called inside a request's slow step, it shows
    whether the request held the database's only write lock meanwhile."""
    import sqlite3

    def write() -> None:
        other = sqlite3.connect(engine.url.database, timeout=0.5)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("UPDATE projects SET name = name")
            other.commit()
            calls.append("wrote")
        except sqlite3.OperationalError as err:
            calls.append(str(err))
        finally:
            other.close()

    return write
