"""The Impact page (streamlit AppTest) against the real API on loopback: start a report from the form, then
read the computed report as a table and a chart of per-class deltas."""

from __future__ import annotations

import json

from sqlalchemy import update

from review_ui import state
from review_ui.render import plain
from tests.review_fixtures import live_api  # noqa: F401 (fixture)
from tests.test_impact_report import dataset_with_variants, drain, fast, import_small, variant
from tests.test_review_ui import no_errors, signed_in
from tests.trainer_fixtures import tiny_encoder  # noqa: F401 (fixture)

HOSTILE = "**wn** <b>x</b>"


def test_impact_page_starts_and_shows_a_report(
    live_api,
    lead_token,
    engine,
    tiny_encoder: str,
) -> None:
    from db.models import Sample
    from db.session import session_scope

    _, ids = dataset_with_variants(engine)
    with session_scope(engine) as s:  # a method name is user data: it must render as text
        s.execute(update(Sample).where(Sample.id.in_(ids["wordnet"])).values(method=HOSTILE))

    at = signed_in(lead_token, "annotator")
    at.switch_page("app_pages/impact.py").run()
    no_errors(at)
    assert any("No impact report yet" in i.value for i in at.info)
    at.text_input[0].set_value("1, 2")
    at.text_area[0].set_value(json.dumps(fast(tiny_encoder)))
    at.button[0].click().run()
    no_errors(at)
    # 4 arms × 2 seeds, and a TF-IDF member per arm (the API's default)
    assert "Queued impact report #1: 12 training runs." in at.success[0].value

    assert drain(engine).succeeded == 12
    at.run()
    no_errors(at)
    assert next(m for m in at.metric if m.label == "Status").value == "succeeded"
    frame = at.dataframe[0].value
    arms = {"originals", "all_approved", "without:backtranslation", f"without:{HOSTILE}"}
    assert set(frame["arm"]) == arms | {f"ensemble:{arm}" for arm in arms}
    assert set(frame["task"]) == {"bias", "message"} and "macro" in set(frame["class"])
    measured = frame[frame["test texts"] > 0]  # the small test split lacks some message classes: "no test text"
    assert set(frame[frame["test texts"] == 0]["Δ vs originals [95% CI]"]) <= {"no test text"}
    assert (measured[measured["arm"] == "originals"]["Δ vs originals [95% CI]"] == "—").all()
    assert measured[measured["arm"] == "all_approved"]["Δ vs originals [95% CI]"].str.contains(r"\[").all()
    assert len(at.get("arrow_vega_lite_chart") or at.get("vega_lite_chart")) == 1
    # each method's contribution, for the seeds alone and for the ensemble with the TF-IDF member
    assert set(at.dataframe[1].value["method"]) == {"backtranslation", HOSTILE} | {
        f"ensemble:{m}" for m in ("backtranslation", HOSTILE)
    }
    assert not at.warning  # every arm trained on what it says

    # Arms that trained on a dataset that changed between them (services/impact.training_sets): said above the table.
    from db.models import ImpactReport

    with session_scope(engine) as s:
        report = s.get_one(ImpactReport, 1)
        sets = {
            **report.result["training_sets"],
            "consistent": False,
            "warning": f"changed: without:{HOSTILE} (run 9: 1)",
        }
        report.result = {**report.result, "training_sets": sets}
    at.run()
    no_errors(at)
    assert [w.value for w in at.warning] == [plain(f"changed: without:{HOSTILE} (run 9: 1)")]


def test_impact_page_shows_api_errors(live_api, lead_token, engine) -> None:
    dataset_with_variants(engine)
    at = signed_in(lead_token, "annotator")
    at.switch_page("app_pages/impact.py").run()
    at.text_input[1].set_value("nope")
    at.button[0].click().run()
    assert not at.exception
    # the API's message and the field it names, no status code in front of it (an annotator reads the page)
    shown = at.error[0].value
    assert "methods" in shown and not shown.startswith("422"), shown


def test_a_refused_start_on_a_page_that_stops_is_said_once_and_then_gone(
    live_api, lead_token, engine, monkeypatch
) -> None:
    """The Impact page ends in st.stop() while it has no report; after st.stop() every session-state access
    raises the stop again, so the message clean-up at the run's end dropped nothing and each refusal stayed,
    piling up (three clicks: three copies, on every later run, and on the next page; an attacker's find). A
    message shown stays for the page's runs within PAGE_MESSAGE_SECONDS (a double click's late second run drew
    the page without it), never on another page, and is gone after."""
    from tests.test_impact_report import import_small

    import_small(engine, n_train=24, n_val=8, n_test=12, n_unlabelled=0)  # no approved variant: refused
    at = signed_in(lead_token, "annotator")
    at.switch_page("app_pages/impact.py").run()
    said = "has no approved variants: there is nothing to measure"

    def shown() -> list[str]:
        return [e.value.replace("\\", "") for e in at.error if said in e.value.replace("\\", "")]

    for _ in range(3):
        next(b for b in at.button if b.label == "Start impact report").click().run()
        assert len(shown()) == 1, shown()
    at.run()  # at once: still up, once
    assert len(shown()) == 1, shown()
    at.switch_page("app_pages/jobs.py").run()  # another page: not there
    assert not shown()
    at.switch_page("app_pages/impact.py").run()  # nor back on its own (it left with the switch)
    assert not shown()
    next(b for b in at.button if b.label == "Start impact report").click().run()
    assert len(shown()) == 1, shown()
    monkeypatch.setattr(state, "PAGE_MESSAGE_SECONDS", 0.0)  # its time up
    at.run()
    assert not shown()


def test_impact_page_estimates_the_report_before_it_starts_and_sends_the_budget(
    live_api, lead_token, engine, tiny_encoder: str
) -> None:
    """The page said nothing before "Start impact report" of what its defaults cost (3 seeds × 4 arms and their
    TF-IDF members at the trainer's 20 epochs, max length 320: hours on a laptop; a user's find), and had no
    budget field. It shows the estimate above Start, warns past an hour with a budget per run to suggest, and
    sends the minutes per run as config.budget_minutes (over one in the JSON)."""
    from db.models import ImpactReport
    from db.session import session_scope

    name = import_small(engine, n_train=120, n_val=8, n_test=12, n_unlabelled=0)
    for method in ("wordnet", "backtranslation"):
        variant(engine, name, method, f"an approved {method} variant on taxes and votes")
    at = signed_in(lead_token, "annotator")
    at.switch_page("app_pages/impact.py").run()
    no_errors(at)

    def headline() -> str:
        return next(m.value for m in at.markdown if m.value.startswith("Estimated time"))

    assert "for 12 runs (4 arms × 3 seeds) on one worker, then 4 TF-IDF members" in headline(), headline()
    assert any("Minutes of training per run" in w.value for w in at.warning), (headline(), at.caption)

    at.text_input[1].set_value("nope").run()  # refused: said as text, the page goes on
    [refused] = [w.value for w in at.warning if w.value.startswith("No estimate")]
    assert "methods" in refused and not at.exception
    at.text_input[1].set_value("").run()
    at.text_area[0].set_value('{"lr": 1e400}').run()  # infinity: the HTTP client's traceback at each keystroke
    assert not at.exception and any("too large for a number" in e.value for e in at.error), at.error
    at.text_area[0].set_value("{}").run()

    at.text_input[0].set_value("1, 2")
    at.text_area[0].set_value(json.dumps({**fast(tiny_encoder), "budget_minutes": 9}))
    at.number_input(key="impact_budget").set_value(2.0).run()
    no_errors(at)
    assert "for 8 runs (4 arms × 2 seeds) on one worker" in headline()
    at.switch_page("app_pages/jobs.py").run()  # a look at another page, and back: what was typed stays
    at.switch_page("app_pages/impact.py").run()
    no_errors(at)
    assert at.number_input(key="impact_budget").value == 2.0 and at.text_input[0].value == "1, 2"
    assert "for 8 runs (4 arms × 2 seeds) on one worker" in headline()
    assert not [w.value for w in at.warning if "Minutes of training per run" in w.value]
    next(b for b in at.button if b.label == "Start impact report").click().run()
    no_errors(at)
    assert "Queued impact report #1: 12 training runs." in at.success[0].value
    with session_scope(engine) as s:
        assert s.get_one(ImpactReport, 1).params["config"]["budget_minutes"] == 2.0
