"""The Augment page (streamlit AppTest) against the real API on loopback, as on an offline laptop: WordNet is
installed, the masked LM and the back-translation models are hub models that are not cached. The page says
which augmenters run and names the setting to change for the others, then plans and queues WordNet jobs."""

from __future__ import annotations

import pytest

from tests.augment_fixtures import run_worker
from tests.review_fixtures import live_api  # noqa: F401 (fixture)
from tests.test_review_ui import no_errors, signed_in

pytestmark = pytest.mark.usefixtures("augment_env")


def announce_offline_worker(engine, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Publish what a worker with the default (hub) models computes on a machine without them."""
    from core.settings import Settings
    from db.session import session_scope
    from db.worker_presence import announce
    from workers.augment.availability import capabilities

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    defaults = Settings(
        mlm_model=Settings.model_fields["mlm_model"].default,
        bt_routes=Settings.model_fields["bt_routes"].default_factory(),  # type: ignore[misc]
    )
    with session_scope(engine) as s:
        announce(
            s,
            "laptop:1:abc",
            hostname="laptop",
            pid=1,
            kinds=["augment", "train"],
            capabilities=capabilities(defaults),
            refresh_seconds=60,
        )


def test_augment_page_names_the_missing_models_and_queues_a_plan(
    live_api, lead_token, engine, example_dataset, tmp_path, monkeypatch
) -> None:
    at = signed_in(lead_token, "annotator")
    at.switch_page("app_pages/augment.py").run()
    no_errors(at)
    statuses = at.dataframe[0].value
    assert set(statuses["status"]) == {"no worker running"}

    announce_offline_worker(engine, tmp_path, monkeypatch)
    at.run()
    no_errors(at)
    statuses = at.dataframe[0].value.set_index("method")
    assert statuses.loc["wordnet", "status"] == "ready"
    assert statuses.loc["mlm", "status"] == "unavailable"
    assert statuses.loc["mlm", "setting to change"] == "AUGLOOP_MLM_MODEL"
    assert statuses.loc["backtranslation", "setting to change"] == "AUGLOOP_BT_ROUTES"
    warnings = " ".join(w.value for w in at.warning)
    assert "AUGLOOP\\_MLM\\_MODEL" in warnings and "HF\\_HUB\\_OFFLINE" in warnings
    assert "Helsinki" in warnings
    assert at.multiselect[0].options == ["wordnet"] and at.multiselect[0].value == ["wordnet"]

    at.button[0].click().run()  # preview: a dry run
    no_errors(at)
    assert "1579 variants" in at.info[0].value
    preview = at.dataframe[1].value
    assert {"partisan", "other"} <= set(preview["class"])
    at.number_input[0].set_value(600)  # "bring every rare class up to 600"
    at.button[0].click().run()
    no_errors(at)
    floor = at.dataframe[1].value.set_index("class")
    assert floor.loc["other", "target"] == 600 and floor.loc["media", "target"] == 600
    at.number_input[0].set_value(0)
    at.slider[0].set_value(0.05)  # every class is past 5% of its task's largest: an empty plan says why
    at.button[0].click().run()
    no_errors(at)
    assert any(i.value.startswith("Nothing to generate: every class already reaches") for i in at.info), at.info
    at.slider[0].set_value(0.4)

    at.button[1].click().run()  # plan and queue
    no_errors(at)
    assert any("Queued plan #4: 1579 variants in 1 job. " in s.value for s in at.success)  # #2, #3: previews
    assert run_worker(engine).succeeded == 1
    at.run()
    no_errors(at)
    progress = at.dataframe[-1].value
    partisan = progress[progress["label"] == "partisan"].iloc[0]
    assert partisan["pending"] > 0 and partisan["goal"] == 1181  # the size the plan wants (raised: its target)


def test_the_plan_form_keeps_its_values_when_the_user_comes_back_from_another_page(
    live_api, lead_token, engine, example_dataset, tmp_path, monkeypatch
) -> None:
    """A target previewed, a look at the Jobs page, back to Augment: the form read 0 texts and 5 per source
    again (Streamlit drops the state of widgets a page does not draw), and "Plan and queue" sent the defaults."""
    announce_offline_worker(engine, tmp_path, monkeypatch)
    at = signed_in(lead_token, "annotator")
    at.switch_page("app_pages/augment.py").run()
    at.number_input[0].set_value(600)
    at.number_input[1].set_value(3)
    at.slider[0].set_value(0.3)
    at.button[0].click().run()  # preview
    no_errors(at)
    at.switch_page("app_pages/jobs.py").run()
    at.switch_page("app_pages/augment.py").run()
    no_errors(at)
    assert [n.value for n in at.number_input[:3]] == [600, 3, 0]
    assert at.slider[0].value == 0.3 and at.multiselect[0].value == ["wordnet"]
