"""Names (issue 13): dataset and project names are slugs (they reach URLs, file names and CSV headers), with a
separate display name for people; and the CLI manages projects and members like the API."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

CSV = b"text,label\nfirst text,a\nsecond text,b\n"


def _import(admin, name: str, **form):
    return admin.post(
        f"/api/v1/datasets/{name}/import", files={"file": ("x.csv", CSV, "text/csv")}, data={"task": "label", **form}
    )


@pytest.mark.parametrize("name", ["memos\u202egpj.exe", "x" * 300, "Memos", "two words", "-lead", "a.b"])
def test_dataset_names_are_slugs(admin, name) -> None:
    r = _import(admin, name)
    assert r.status_code in (404, 422), r.text  # a name with "/" or "." may not even reach the route
    if r.status_code == 422:
        assert r.json()["field"] == "name"
    assert admin.get("/api/v1/datasets").json() == []


def test_a_display_name_says_more_but_stays_printable(admin) -> None:
    bad = _import(admin, "memos", display_name="Memos \u202eFDP.exe")
    assert bad.status_code == 422 and bad.json()["field"] == "display_name"
    assert _import(admin, "memos", display_name="x" * 201).status_code == 422
    ok = _import(admin, "memos", display_name="Confidential memos (2026)")
    assert ok.status_code == 201, ok.text
    dataset = admin.get("/api/v1/datasets/memos").json()
    assert dataset["display_name"] == "Confidential memos (2026)"
    export = admin.get("/api/v1/datasets/memos/export")
    assert export.status_code == 200 and 'filename="memos.csv"' in export.headers["content-disposition"]


CSV2 = b"text,label\nthird text,a\nfourth text,b\n"


def test_an_import_into_a_dataset_does_not_silently_drop_a_language_or_display_name_it_differs_from(admin) -> None:
    """A second file's language or display name was ignored unsaid (German texts imported with --language de
    into an English dataset); now one that differs is refused naming it, and nothing of the file is stored."""

    def add(**form):
        return admin.post(
            "/api/v1/datasets/memos/import",
            files={"file": ("y.csv", CSV2, "text/csv")},
            data={"task": "label", **form},
        )

    assert _import(admin, "memos", language="de", display_name="Memos").status_code == 201
    for field, value in (("language", "en"), ("display_name", "Other memos")):
        r = add(**{field: value})
        assert r.status_code == 422 and r.json()["field"] == field, r.text
        assert "PATCH" in r.json()["detail"], r.text
    totals = admin.get("/api/v1/datasets/memos/stats").json()["totals"]
    assert sum(split.get("original", 0) for split in totals.values()) == 2  # nothing of the refused file
    ok = add(language="de", display_name=" Memos ")  # the same, as it was given when the dataset was made
    assert ok.status_code == 201, ok.text
    assert add().status_code == 201  # neither given: the dataset's own (its texts are duplicates now)
    assert add(display_name="  ").status_code == 201  # blank is not given (the CLI's --display-name "")
    dataset = admin.get("/api/v1/datasets/memos").json()
    assert (dataset["language"], dataset["display_name"]) == ("de", "Memos")
    renamed = admin.patch("/api/v1/datasets/memos", json={"display_name": "  Memos 2026 "})
    assert renamed.status_code == 200 and renamed.json()["display_name"] == "Memos 2026", renamed.text
    bad = admin.patch("/api/v1/datasets/memos", json={"display_name": "Memos \u202eFDP.exe"})
    assert bad.status_code == 422 and bad.json()["field"] == "display_name", bad.text


def test_the_cli_manages_projects_and_members(settings, engine, example_dataset) -> None:
    from augloop.cli import app
    from db.auth import create_token
    from db.session import session_scope
    from services.datasets import dataset_named

    with session_scope(engine) as s:
        create_token(s, "carla", "annotator")
    runner = CliRunner()
    assert runner.invoke(app, ["project", "create", "Bad Name"]).exit_code == 2
    assert runner.invoke(app, ["project", "create", "team-c", "--display-name", "Team C"]).exit_code == 0
    assert runner.invoke(app, ["project", "add-member", "default", "carla", "--role", "lead"]).exit_code == 0
    assert runner.invoke(app, ["project", "add-member", "default", "carla", "--role", "owner"]).exit_code == 2
    # a user is made with a token: "user 'nobody' not found" left a new operator stuck
    nobody = runner.invoke(
        app, ["project", "add-member", "default", "nobody", "--role", "lead"], env={"COLUMNS": "200"}
    )
    assert nobody.exit_code == 2 and "augloop token create --name nobody" in nobody.output, nobody.output
    listed = runner.invoke(app, ["project", "members", "default"])
    assert "carla" in listed.output and "lead" in listed.output
    with session_scope(engine) as s:
        from db.models import User

        carla = s.query(User).filter(User.name == "carla").one()
        assert dataset_named(s, example_dataset, carla).name == example_dataset
    assert runner.invoke(app, ["project", "remove-member", "default", "carla"]).exit_code == 0
    again = runner.invoke(app, ["project", "remove-member", "default", "carla"])  # no member any more
    assert again.exit_code == 2 and "no member of project 'default'" in again.output, again.output
    with session_scope(engine) as s:
        from core.errors import NotFoundError

        carla = s.query(User).filter(User.name == "carla").one()
        with pytest.raises(NotFoundError):
            dataset_named(s, example_dataset, carla)


def test_a_user_name_with_a_slash_is_addressable(admin) -> None:
    """User names are free text; the routes that name a user in the path take it percent-encoded, "/" too."""
    from urllib.parse import quote

    name = "root![U](http://evil.example/u.png)"
    assert admin.post("/api/v1/tokens", json={"name": name, "role": "annotator"}).status_code == 201
    assert admin.put("/api/v1/projects/default/members", json={"user": name, "role": "lead"}).status_code == 200
    assert admin.patch(f"/api/v1/users/{quote(name, safe='')}", json={"role": "admin"}).json()["role"] == "admin"
    assert admin.delete(f"/api/v1/projects/default/members/{quote(name, safe='')}").status_code == 204
    assert admin.get("/api/v1/projects/default/members").json() == []


@pytest.mark.parametrize(
    "name", ["ann\u202egpj", "ann\x07", "ann\nbob", "\u2066ann", "ann\u200b", " ", "x" * 121, ".", ".."]
)
def test_user_names_are_printable(admin, name) -> None:
    r = admin.post("/api/v1/tokens", json={"name": name, "role": "annotator"})
    assert r.status_code == 422 and r.json()["field"] == "name", r.text
    assert name not in [t["name"] for t in admin.get("/api/v1/tokens").json()]


def test_names_spelled_with_zero_width_joiners_are_taken(admin) -> None:
    """U+200C and U+200D are format characters, but Persian and Indic names and emoji sequences need them."""
    for name in ("\u0639\u0644\u06cc\u200c\u0631\u0636\u0627", "ann \U0001f469\u200d\U0001f4bb"):
        r = admin.post("/api/v1/tokens", json={"name": name, "role": "annotator"})
        assert r.status_code == 201, r.text


@pytest.mark.parametrize(
    "name", ["auto", "AUTO", "auto\u200d", "a\u200cuto", "\uff41\uff55\uff54\uff4f", "auto\ufe0f", "auto\u3164"]
)
def test_no_user_passes_for_the_automatic_reviewer(admin, name) -> None:
    """`auto` signs automatic decisions in the audit trail; a person named `auto` with a zero-width joiner, in
    capitals or in full-width letters reads the same there."""
    r = admin.post("/api/v1/tokens", json={"name": name, "role": "annotator"})
    assert r.status_code == 422 and r.json()["field"] == "name" and "reserved" in r.json()["detail"], r.text


def test_the_cli_refuses_an_unprintable_user_name(settings, engine) -> None:
    from augloop.cli import app

    result = CliRunner().invoke(app, ["token", "create", "--name", "ann\u202egpj", "--role", "annotator"])
    assert result.exit_code == 2 and "name" in result.output


BAD_LANGUAGES = ["../../etc", "en\u202e", "en\n", "EN", "e", "en-", "en_GB", "x" * 17, "en-" + "a" * 9, "1a"]


@pytest.mark.parametrize("language", BAD_LANGUAGES)
def test_an_import_takes_a_language_tag(admin, language) -> None:
    r = _import(admin, "memos", language=language)
    assert r.status_code == 422 and r.json()["field"] == "language", r.text
    assert admin.get("/api/v1/datasets").json() == []


def test_a_datasets_language_stays_a_language_tag(admin) -> None:
    assert _import(admin, "memos", language="pt-BR").status_code == 201
    for language in BAD_LANGUAGES:
        r = admin.patch("/api/v1/datasets/memos", json={"language": language})
        assert r.status_code == 422 and r.json()["field"] == "language", (language, r.text)
    assert admin.get("/api/v1/datasets/memos").json()["language"] == "pt-BR"
    for language in ["en", "de", "en-US", "zh-Hant-TW", "gsw"]:
        r = admin.patch("/api/v1/datasets/memos", json={"language": language})
        assert r.status_code == 200 and r.json()["language"] == language, r.text
