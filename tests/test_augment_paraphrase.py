"""The paraphrase method: an instruction-tuned causal LM rewrites each source k times, locally through
transformers `generate` or through an OpenAI-compatible endpoint. Both paths run a tiny random Qwen2 model
with a tokenizer trained here (tests/tiny_models.py); the endpoint is a loopback server running that model."""

from __future__ import annotations

import base64
import json
import time

import pytest
from fastapi import Request  # at module level: the endpoint's annotation is resolved in this module's names

from tests.augment_fixtures import run_worker, train_ids
from tests.openai_server import LoopbackServer, make_app
from workers.augment.base import Variant

TEXTS = ["We passed the farm bill today to help rural families.", "Join me at the town hall on Friday!"]
LABELS = [{"bias": "neutral", "message": "policy"}, {"message": "mobilization"}]


@pytest.fixture
def local_paraphraser(tiny_causal_dir, one_torch_thread):  # type: ignore[no-untyped-def]
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workers.augment.models import LoadedModel
    from workers.augment.paraphrase import LocalGenerator, ParaphraseAugmenter

    tokenizer = AutoTokenizer.from_pretrained(tiny_causal_dir, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(tiny_causal_dir).eval()
    loaded = LoadedModel(str(tiny_causal_dir), tokenizer, model, torch.device("cpu"), torch.float32)
    return ParaphraseAugmenter(LocalGenerator(loaded))


def _hints(**extra):  # type: ignore[no-untyped-def]
    from workers.augment.base import SourceHints
    from workers.augment.textspans import ProtectedTerms

    return SourceHints(labels=LABELS, guidelines="Keep the **label**.", protected=ProtectedTerms(["farm"]), **extra)


def test_the_prompt_carries_text_labels_guidelines_and_protected_terms() -> None:
    from workers.augment.params import ParaphraseParams
    from workers.augment.paraphrase import build_messages, clean

    messages = build_messages(TEXTS[0], LABELS[0], _hints(), ParaphraseParams())
    assert [m["role"] for m in messages] == ["system", "user"]
    user = messages[1]["content"]
    assert "bias = neutral; message = policy" in user and "Keep the **label**." in user
    assert "Keep these words: farm" in user and user.endswith("Text:\n" + TEXTS[0])
    assert "same labels" in messages[0]["content"]
    # Guidelines can be left out; a term not in the text is not mentioned.
    plain = build_messages(TEXTS[1], LABELS[1], _hints(), ParaphraseParams(include_guidelines=False))[1]["content"]
    assert "guidelines" not in plain and "farm" not in plain
    assert clean('  Paraphrase: "Come to the town hall on Friday!" ') == "Come to the town hall on Friday!"


def test_local_generate_gives_k_rewrites_with_provenance_and_seeds(local_paraphraser, tiny_causal_dir) -> None:
    from workers.augment.params import ParaphraseParams

    model = local_paraphraser.generator.loaded.model
    generate, calls = model.generate, []

    def spy(**kwargs):  # type: ignore[no-untyped-def]
        out = generate(**kwargs)
        calls.append((kwargs["max_new_tokens"], out.shape[1] - kwargs["input_ids"].shape[1]))
        return out

    model.generate = spy
    params = ParaphraseParams(max_new_tokens=12)
    out = local_paraphraser.augment(TEXTS, [3, 2], seed=5, language="en", params=params, hints=_hints())
    # always a budget, never more than it: the model is random and never stops by itself
    assert calls and all(new <= budget <= 12 for budget, new in calls)
    assert [len(v) for v in out] <= [3, 2] and sum(len(v) for v in out) >= 4
    for i, variants in enumerate(out):
        assert sorted({v.variant_index for v in variants}) == [v.variant_index for v in variants]
        for v in variants:
            assert v.method == "paraphrase" and v.model_name == str(tiny_causal_dir) and v.seed == 5
            assert v.params["via"] == "local" and v.params["prompt_version"] == 1
            assert v.params["max_new_tokens"] == 12 and v.source_index == i
    again = local_paraphraser.augment(TEXTS, [3, 2], seed=5, language="en", params=params, hints=_hints())
    other = local_paraphraser.augment(TEXTS, [3, 2], seed=6, language="en", params=params, hints=_hints())

    def as_text(r: list[list[Variant]]) -> list[list[str]]:
        return [[v.text for v in vs] for vs in r]

    assert as_text(out) == as_text(again) and as_text(out) != as_text(other)
    assert len({v.text for v in out[0]}) > 1  # k sampled rewrites, not one repeated


def test_the_endpoint_path_against_a_loopback_server_running_the_model(tiny_causal_dir, one_torch_thread) -> None:
    from core.settings import Settings
    from workers.augment.availability import method_status
    from workers.augment.models import ModelUnavailable
    from workers.augment.params import ParaphraseParams
    from workers.augment.paraphrase import EndpointGenerator, ParaphraseAugmenter

    params = ParaphraseParams(max_new_tokens=10, temperature=0.9)
    with LoopbackServer(make_app(tiny_causal_dir, "tiny-instruct")) as server:
        augmenter = ParaphraseAugmenter(EndpointGenerator(server.url, "tiny-instruct", concurrency=2))
        out = augmenter.augment(TEXTS, [3, 1], seed=9, language="en", params=params, hints=_hints())
        assert sum(len(v) for v in out) >= 3 and all(v.params["via"] == server.url for vs in out for v in vs)
        requests = server.app.state.requests
        assert sorted(r["n"] for r in requests) == [1, 3] and all(r["max_tokens"] <= 10 for r in requests)
        assert {r["messages"][1]["content"].split("Text:\n")[1] for r in requests} == set(TEXTS)
        seeds = {r["messages"][1]["content"]: r["seed"] for r in requests}
        again = augmenter.augment(TEXTS, [3, 1], seed=9, language="en", params=params, hints=_hints())
        assert [[v.text for v in vs] for vs in again] == [[v.text for v in vs] for vs in out]
        assert {r["messages"][1]["content"]: r["seed"] for r in requests[2:]} == seeds
        # What the worker publishes: the endpoint answers and serves the model, or says what to change.
        ok = Settings(paraphrase_api_url=server.url, paraphrase_api_model="tiny-instruct")
        assert method_status("paraphrase", ok)["state"] == "ready"
        wrong = method_status("paraphrase", Settings(paraphrase_api_url=server.url, paraphrase_api_model="x"))
        assert wrong["state"] == "unavailable" and wrong["setting"] == "AUGLOOP_PARAPHRASE_API_MODEL"
        with pytest.raises(ModelUnavailable, match="AUGLOOP_PARAPHRASE_API_MODEL"):
            ParaphraseAugmenter(EndpointGenerator(server.url, "x")).augment(TEXTS, [1, 1], seed=0, language="en")
        url = server.url
    gone = method_status("paraphrase", Settings(paraphrase_api_url=url, paraphrase_api_model="tiny-instruct"))
    assert gone["state"] == "unavailable" and "did not answer" in gone["reason"]
    with pytest.raises(ConnectionError):  # a transient failure: the queue retries the job
        ParaphraseAugmenter(EndpointGenerator(url, "tiny-instruct")).augment(TEXTS, [1, 1], seed=0, language="en")


def _misbehaving_app():  # type: ignore[no-untyped-def]
    """An endpoint that answers every way a broken or hostile server might, by the model asked for."""
    import asyncio

    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

    app = FastAPI()
    app.state.queries = []

    @app.get("/v1/models")
    def models() -> list[str]:
        return ["not", "an", "object"]

    @app.post("/v1/chat/completions")
    async def chat(request: Request):  # type: ignore[no-untyped-def]
        app.state.queries.append(request.url.query)
        model = (await request.json())["model"]
        if model == "echo":  # refuses, repeating what it was sent
            return PlainTextResponse(f"bad key: {request.headers.get('authorization')}", status_code=401)
        if model == "echo-late":  # the key across the 300 characters an error keeps, and once in upper case
            sent = request.headers.get("authorization", "")
            said = "." * 250 + f" {sent.upper()} " + "." * 20 + f" {sent}"  # the key's "sk-s" at 296-299
            return PlainTextResponse(said, status_code=401)
        if model == "html":  # a proxy's page in place of the answer
            return PlainTextResponse("<html><body>502 Bad Gateway</body></html>", status_code=200)
        if model == "deep":  # JSON nested past what a reader follows
            return PlainTextResponse("[" * 200_000 + "]" * 200_000, media_type="application/json")
        if model == "trickle":

            async def drip():  # type: ignore[no-untyped-def]
                for _ in range(100):
                    yield b" "
                    await asyncio.sleep(0.2)

            return StreamingResponse(drip(), media_type="application/json")
        if model == "huge":
            return PlainTextResponse("x" * (9 * 1024 * 1024))
        choices = [{"index": 0, "message": {"content": {"evil": "object"}}}, {"index": 1, "message": {"content": "ok"}}]
        return JSONResponse({"choices": choices})

    return app


def test_a_misbehaving_endpoint_ends_in_a_clear_error_not_a_hang_a_leak_or_junk(one_torch_thread) -> None:
    """An echoed key stays out of the job's error; a server that trickles its answer is given up on at the
    request's timeout in all (httpx's bounds each read); 9 MB is refused; an object where text belongs gives no
    variant; the URL's credentials and query go to the server, never into provenance or errors; GET /models
    answering a list marks the method unavailable (the worker's announcement raised on it)."""
    from core.settings import Settings
    from workers.augment.availability import method_status
    from workers.augment.models import ModelUnavailable
    from workers.augment.paraphrase import EndpointGenerator, ParaphraseAugmenter

    with LoopbackServer(_misbehaving_app()) as server:
        url = server.url.replace("http://", "http://user:pw-secret@") + "?key=q-secret"

        def augment(model: str, timeout: float = 5.0) -> list[list[Variant]]:
            generator = EndpointGenerator(url, model, api_key="sk-secret", timeout=timeout)
            return ParaphraseAugmenter(generator).augment(TEXTS[:1], [2], seed=0, language="en")

        with pytest.raises(ModelUnavailable) as refused:
            augment("echo")
        assert "secret" not in str(refused.value) and "401" in str(refused.value)
        with pytest.raises(ModelUnavailable) as refused:  # the key's first characters stayed (an attacker's find)
            augment("echo-late")
        basic = base64.b64encode(b"user:pw-secret").decode()  # the URL's credentials go as HTTP Basic
        assert basic.lower() not in str(refused.value).lower() and "***" in str(refused.value), str(refused.value)
        for model in ("html", "deep"):  # a bare JSONDecodeError or RecursionError named no endpoint
            with pytest.raises(ConnectionError) as junk:
                augment(model)
            assert f"paraphrase endpoint {server.url}" in str(junk.value), str(junk.value)
            assert "no chat completion" in str(junk.value) and "secret" not in str(junk.value)
        started = time.monotonic()
        with pytest.raises(ConnectionError) as slow:
            augment("trickle", timeout=1.0)
        assert time.monotonic() - started < 5 and "secret" not in str(slow.value)
        with pytest.raises(ConnectionError):
            augment("huge")
        (variants,) = augment("objects")
        assert [v.text for v in variants] == ["ok"]
        assert "secret" not in json.dumps(variants[0].params) and variants[0].params["via"] == server.url
        assert set(server.app.state.queries) == {"key=q-secret"}
        status = method_status("paraphrase", Settings(paraphrase_api_url=url, paraphrase_api_model="m"))
        assert status["state"] == "unavailable" and "secret" not in json.dumps(status)
        plain = EndpointGenerator(server.url, "echo-late", api_key="sk-secret", timeout=5)  # the key goes as Bearer
        with pytest.raises(ModelUnavailable) as refused:
            ParaphraseAugmenter(plain).augment(TEXTS[:1], [2], seed=0, language="en")
        assert "sk-s" not in str(refused.value).lower() and "***" in str(refused.value), str(refused.value)[-80:]


pytestmark = pytest.mark.usefixtures("augment_env")


def _wait_job(lead, job_id: int) -> dict:  # type: ignore[no-untyped-def]
    for _ in range(200):
        job = lead.get(f"/api/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.05)
    raise AssertionError("job did not finish")


@pytest.mark.parametrize("via", ["local", "endpoint"])
def test_a_paraphrase_job_through_the_queue(via, lead, engine, mini_dataset, tiny_causal_dir, monkeypatch) -> None:
    """Same filters, provenance and storage as the other methods, locally and through the endpoint."""
    from core import settings as settings_mod
    from db.models import Sample
    from db.session import session_scope
    from workers.augment.models import clear_cache

    clear_cache()
    monkeypatch.setenv("AUGLOOP_PARAPHRASE_MODEL", str(tiny_causal_dir))
    ids = train_ids(engine, "mini", limit=6)
    body = {
        "dataset": "mini",
        "sample_ids": ids,
        "methods": ["paraphrase"],
        "n_per_text": 2,
        "seed": 3,
        "params": {"paraphrase": {"max_new_tokens": 24}},
        # a random model writes noise: open the length filter so that some of it is stored and can be checked
        "filters": {"min_length_ratio": 0.0, "max_length_ratio": 100.0},
    }
    app = make_app(tiny_causal_dir, "tiny-instruct")
    with LoopbackServer(app) as server:
        url = server.url
        if via == "endpoint":
            monkeypatch.setenv("AUGLOOP_PARAPHRASE_API_URL", server.url)
            monkeypatch.setenv("AUGLOOP_PARAPHRASE_API_MODEL", "tiny-instruct")
        settings_mod.get_settings.cache_clear()
        r = lead.post("/api/v1/augment", json=body)
        assert r.status_code == 202, r.text
        run_worker(engine)
        job = _wait_job(lead, r.json()["id"])
        assert (len(app.state.requests) > 0) == (via == "endpoint")
    clear_cache()
    assert job["status"] == "succeeded", job["last_error"]
    result = job["result"]
    assert result["per_method"]["paraphrase"]["generated"] > 0
    assert result["generated"] + result["dropped"]["no_candidate"] == 12
    with session_scope(engine) as s:
        stored = s.query(Sample).filter(Sample.method == "paraphrase").all()
        assert stored and all(v.review_status == "pending" and v.parent_id in ids for v in stored)
        for v in stored:
            assert v.method_params["via"] == ("local" if via == "local" else url)
            assert v.model_name == (str(tiny_causal_dir) if via == "local" else "tiny-instruct")
            assert v.seed == 3 and v.semantic_similarity is not None and v.novelty is not None
            parent = s.get(Sample, v.parent_id)
            assert v.labels == parent.labels
    json.dumps(result)  # the stored result is plain JSON


def test_the_planner_shares_classes_with_paraphrase(lead, mini_dataset) -> None:
    r = lead.post(
        "/api/v1/datasets/mini/augmentation-plans",
        json={"methods": ["wordnet", "paraphrase"], "target": {"min_fraction_of_largest": 0.5}},
    )
    assert r.status_code == 201, r.text
    plan = r.json()["plan"]
    assert set(plan["methods"]) == {"wordnet", "paraphrase"}
    assert abs(plan["methods"]["wordnet"] - plan["methods"]["paraphrase"]) <= len(plan["combinations"])
    assert {j["method"] for j in plan["jobs"]} == {"wordnet", "paraphrase"}
