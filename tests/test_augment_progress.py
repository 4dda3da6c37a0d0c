"""Progress from inside the augmenters: each call reports the share of its work done after every model batch,
so that a job of one call (a small job: up to 64 sources) moves while the model works, and a cancellation
stops the call at the next batch instead of after it."""

from __future__ import annotations

import time

import pytest

from tests.augment_fixtures import bt_routes, run_worker, train_ids
from tests.openai_server import LoopbackServer, make_app
from tests.tiny_models import example_texts

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Stop(Exception):
    pass


def _moves(shares: list[float]) -> None:
    """What a progress bar needs: several steps, never backwards, ending at the whole call."""
    assert len(shares) >= 3, shares
    assert all(0.0 < s <= 1.0 for s in shares), shares
    assert shares == sorted(shares), shares
    assert shares[-1] == pytest.approx(1.0)


def _texts(v) -> list[list[str]]:  # type: ignore[no-untyped-def]
    return [[x.text for x in vs] for vs in v]


def _stop_after(n: int):  # type: ignore[no-untyped-def]
    heard: list[float] = []

    def callback(share: float) -> None:
        heard.append(share)
        if len(heard) >= n:
            raise Stop

    return heard, callback


def test_masked_lm_reports_each_batch_and_stops_at_the_next(tiny_mlm_dir) -> None:
    from core.settings import Settings
    from workers.augment.masked_lm import MaskedLMAugmenter
    from workers.augment.models import load_masked_lm
    from workers.augment.params import MaskedLMParams

    mlm = MaskedLMAugmenter(load_masked_lm(str(tiny_mlm_dir), Settings(augment_device="cpu")), batch_tokens=256)
    texts, params = example_texts(24), MaskedLMParams(min_prob=0.0)
    shares: list[float] = []
    out = mlm.augment(texts, [2] * 24, seed=3, language="en", params=params, progress=shares.append)
    batches = mlm.prepare(texts, [2] * 24, seed=3, language="en", params=params)
    assert len(shares) == len(batches) > 2
    _moves(shares)
    # Reporting changes nothing that is made.
    assert _texts(out) == _texts(mlm.augment(texts, [2] * 24, seed=3, language="en", params=params))

    forwards: list[int] = []
    hook = mlm.model.register_forward_hook(lambda *_: forwards.append(1))
    try:
        heard, callback = _stop_after(1)
        with pytest.raises(Stop):
            mlm.augment(texts, [2] * 24, seed=3, language="en", params=params, progress=callback)
    finally:
        hook.remove()
    assert heard == shares[:1] and len(forwards) <= 1  # the batches after the first never ran


def test_back_translation_counts_both_legs(tiny_marian_dirs) -> None:
    from core.settings import Settings
    from workers.augment.back_translation import BackTranslationAugmenter
    from workers.augment.models import load_seq2seq
    from workers.augment.params import BackTranslationParams

    settings = Settings(augment_device="cpu")
    bt = BackTranslationAugmenter(
        bt_routes(*tiny_marian_dirs, pivots=("de", "fr")), lambda name: load_seq2seq(name, settings), batch_tokens=300
    )
    texts, params = [*example_texts(10), "   "], BackTranslationParams(max_new_tokens=8)
    shares: list[float] = []
    out = bt.augment(texts, [3] * 11, seed=1, language="en", params=params, progress=shares.append)
    _moves(shares)
    # The forward leg of the first pivot is not the whole call: the share grows leg by leg, pivot by pivot.
    assert min(shares) < 0.5 < max(shares[:-1])
    assert _texts(out) == _texts(bt.augment(texts, [3] * 11, seed=1, language="en", params=params))

    heard, callback = _stop_after(2)
    with pytest.raises(Stop):
        bt.augment(texts, [3] * 11, seed=1, language="en", params=params, progress=callback)
    assert heard == shares[:2]


def test_wordnet_reports_drafting_then_reading_in_context(augment_nltk_dir, tiny_mlm_dir) -> None:
    from core.settings import Settings
    from workers.augment.models import get_sentence_encoder
    from workers.augment.params import WordNetParams
    from workers.augment.wordnet import WordNetAugmenter

    settings = Settings(
        _env_file=None, similarity_model=str(tiny_mlm_dir), augment_device="cpu", augment_batch_tokens=256
    )
    wordnet = WordNetAugmenter(augment_nltk_dir, encoder=lambda: get_sentence_encoder(settings))
    texts, params = example_texts(30), WordNetParams(context="encoder")
    shares: list[float] = []
    out = wordnet.augment(texts, [2] * 30, seed=0, language="en", params=params, progress=shares.append)
    assert any(vs for vs in out)
    _moves(shares)
    drafting = [s for s in shares if s <= 0.5]
    in_context = [s for s in shares if s > 0.5]
    assert len(drafting) == 30 and len(in_context) >= 2  # a step per source, then per batch of the encoder


def test_paraphrase_reports_each_batch_locally_and_each_answer_from_an_endpoint(tiny_causal_dir) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workers.augment.models import LoadedModel
    from workers.augment.params import ParaphraseParams
    from workers.augment.paraphrase import EndpointGenerator, LocalGenerator, ParaphraseAugmenter

    texts, params = example_texts(6), ParaphraseParams(max_new_tokens=6)
    tokenizer = AutoTokenizer.from_pretrained(tiny_causal_dir, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(tiny_causal_dir).eval()
    loaded = LoadedModel(str(tiny_causal_dir), tokenizer, model, torch.device("cpu"), torch.float32)
    local = ParaphraseAugmenter(LocalGenerator(loaded, batch_tokens=64))
    shares: list[float] = []
    local.augment(texts, [2] * 6, seed=0, language="en", params=params, progress=shares.append)
    _moves(shares)

    with LoopbackServer(make_app(tiny_causal_dir, "tiny-instruct")) as server:
        remote = ParaphraseAugmenter(EndpointGenerator(server.url, "tiny-instruct", concurrency=1))
        shares = []
        remote.augment(texts, [2] * 6, seed=0, language="en", params=params, progress=shares.append)
        assert len(shares) == 6
        _moves(shares)
        # A cancellation heard at the first answer: the requests not yet sent are never sent.
        server.app.state.requests.clear()
        _, callback = _stop_after(1)
        with pytest.raises(Stop):
            remote.augment(texts, [2] * 6, seed=1, language="en", params=params, progress=callback)
        assert len(server.app.state.requests) <= 2
    # A slow endpoint: the call stops at the first answer, without waiting for the request still in flight.
    with LoopbackServer(make_app(tiny_causal_dir, "tiny-instruct", delays=[0.2, 6.0])) as slow:
        remote = ParaphraseAugmenter(EndpointGenerator(slow.url, "tiny-instruct", concurrency=2))
        _, callback = _stop_after(1)
        started = time.monotonic()
        with pytest.raises(Stop):
            remote.augment(texts, [2] * 6, seed=2, language="en", params=params, progress=callback)
        assert time.monotonic() - started < 4.0
        assert len(slow.app.state.requests) <= 3  # the rest were never sent


@pytest.mark.usefixtures("augment_env")
def test_a_job_of_one_call_moves_while_the_model_works(lead, engine, mini_dataset, monkeypatch) -> None:
    """24 variants from 12 sources are one masked-LM call: the job's progress moves between 0 and 24 before it
    ends, never backwards, and reaches 24 only when the variants are filtered."""
    from core import settings as settings_mod
    from workers.registry import JobContext

    monkeypatch.setenv("AUGLOOP_AUGMENT_BATCH_TOKENS", "128")  # a tiny model's batches: several per call
    settings_mod.get_settings.cache_clear()
    heard: list[tuple[int, int]] = []
    original = JobContext.report

    def recording(self, done=None, total=None, **info):  # type: ignore[no-untyped-def]
        if done is not None and self.kind == "augment":
            heard.append((done, total if total is not None else self.total))
        original(self, done, total, **info)

    monkeypatch.setattr(JobContext, "report", recording)
    r = lead.post(
        "/api/v1/augment",
        json={
            "dataset": "mini",
            "sample_ids": train_ids(engine, mini_dataset, limit=12),
            "methods": ["mlm"],
            "n_per_text": 2,
            "params": {"mlm": {"min_prob": 0.0}},
        },
    )
    assert r.status_code == 202, r.text
    run_worker(engine)
    job = lead.get(f"/api/v1/jobs/{r.json()['id']}").json()
    assert job["status"] == "succeeded", job["last_error"]
    done = [d for d, _ in heard]
    assert all(t == 24 for _, t in heard) and done == sorted(done) and done[-1] == 24
    assert len({d for d in done if 0 < d < 24}) >= 2, done
