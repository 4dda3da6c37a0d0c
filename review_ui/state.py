"""Session helpers shared by the pages: the signed-in client, one-shot messages, and API calls that report
their errors on the page instead of crashing it."""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import streamlit as st

from review_ui import sessions
from review_ui.client import ApiClient, ApiError
from review_ui.render import plain

T = TypeVar("T")


def browser_address() -> str | None:
    """The address of this session's browser as the UI server sees it (None on localhost, and where no
    browser is connected: Streamlit's test harness)."""
    address = st.context.ip_address
    return address if isinstance(address, str) else None


def api_client(token: str) -> ApiClient:
    """A client for `token` that passes on the browser's address (see ApiClient)."""
    return ApiClient(token, browser_address=browser_address())


def session_ended() -> bool:
    """Whether this tab's UI session is gone (signed out in another tab of the browser, or expired); its state,
    the token with it, is then cleared. Every sign-in and resume sets `_sid` (a test may set a token alone)."""
    if "_sid" in st.session_state and not sessions.alive(st.session_state["_sid"]):
        for key in list(st.session_state.keys()):
            del st.session_state[key]
        return True
    return False


def client() -> ApiClient:
    """The API client of the signed-in user; the token lives only in this session's state. Asked for by every
    call to the API, a full rerun's, a fragment's (the review cards, the refreshing panels) or a callback's: a
    tab whose session has ended makes no call with its token and shows the sign-in page (a fragment reruns the
    whole app for it; a callback, where a rerun cannot be asked for, stops, and the rerun after it shows it)."""
    if session_ended():
        st.rerun(scope="app")
    token = st.session_state.get("token")
    if not token:
        st.stop()
    cached = st.session_state.get("_client")
    if cached is None or cached[0] != token:
        signed_in = api_client(token)
        signed_in.on_unauthorized = token_refused
        cached = (token, signed_in)
        st.session_state["_client"] = cached
    return cached[1]


def token_refused() -> None:
    """The API refused the signed-in token (revoked or expired): the tab went on looking signed in, every page
    showing '401' until a reload (an attacker's find). The session ends on the next run (end_refused_session):
    now, from a page or a fragment; after it, from a callback (where a rerun cannot be asked for)."""
    st.session_state["_token_refused"] = True
    st.rerun(scope="app")


def end_refused_session() -> None:
    """At the top of every run: a session whose token was refused is closed (its cookie too: a reload would
    resume it), and the sign-in page says why."""
    if not st.session_state.pop("_token_refused", False):
        return
    sessions.close(st.session_state.get("_sid"))
    for key in list(st.session_state.keys()):
        del st.session_state[key]
    st.session_state["_cookie_action"] = {"sign_out": True, "nonce": sessions.new_nonce()}
    flash("warning", "Your token was refused (revoked or expired): sign in again.")


def user() -> dict[str, Any]:
    return st.session_state.get("user") or {}


USER_FRESH_SECONDS = 30.0  # a role an admin changes shows in the pages offered within this long
USER_READ_TIMEOUT = 3.0  # what a run waits on /me at most: the client's own timeout (60 s) outlasted the window


def refresh_user() -> None:
    """At the top of every run: the signed-in user as the API knows them now (their role decides the Admin
    pages), read again at most every USER_FRESH_SECONDS. The role read at sign-in held for the whole session: an
    admin made an annotator kept the Admin pages (every action there refused), and one made admin never got them
    until they signed in again. A refused token ends the session (`client`); an API that does not answer leaves
    the user as last read, and is asked again USER_FRESH_SECONDS after that answer (a run waits on it
    USER_READ_TIMEOUT at most: with the client's 60 s, an API that hung made every run wait a minute before the
    navigation and the Sign out button were drawn)."""
    if not st.session_state.get("token"):
        return
    if time.monotonic() - st.session_state.get("_user_read_at", -math.inf) < USER_FRESH_SECONDS:
        return
    try:
        me = client().me(timeout=USER_READ_TIMEOUT)
    except ApiError:
        return
    finally:
        st.session_state["_user_read_at"] = time.monotonic()
    st.session_state["user"] = me


def signed_in_as(me: dict[str, Any]) -> None:
    """The user the API just answered for this session's token (signing in, a session resumed): read now."""
    st.session_state["user"] = me
    st.session_state["_user_read_at"] = time.monotonic()


def is_admin() -> bool:
    return user().get("role") == "admin"


def admin_page(title: str) -> None:
    """The top of a page for admins only: its title, then (for anyone else) a refusal that ends the script
    run, else the messages the last action left."""
    st.title(title)
    if not is_admin():
        st.error("This page is for admins.")
        st.stop()
    show_flash()


def leads(dataset: str) -> bool:
    """Whether the signed-in user may do a lead's work on `dataset` (an admin may): the pages offer those actions
    only then, rather than a button the API refuses."""
    return is_admin() or role_in_project_of(dataset) == "lead"


def role_in_project_of(dataset: str) -> str | None:
    """The signed-in user's role (annotator, lead) in the project that holds `dataset`; None: not a member."""
    for project in call(client().projects) or []:
        if dataset in project["datasets"]:
            return project["my_role"]
    return None


def flash(kind: str, message: str, outbox: str = "_flash") -> None:
    """A message for the next run (callbacks run before the page, which then shows it); one already waiting is
    not added again (the second click of a double click on a refused action repeated its error). `outbox`: a
    fragment's own (`fragment_messages`), for its buttons."""
    _say(st.session_state.setdefault(outbox, []), (kind, message))


def _say(messages: list[tuple[str, str]], entry: tuple[str, str]) -> None:
    """Add `entry` to an outbox unless it is already waiting there."""
    if entry not in messages:
        messages.append(entry)


def _drop(messages: list[tuple[str, str]], gone: list[tuple[str, str]]) -> None:
    """Take out of an outbox, in place (callbacks hold the list), the very entries of `gone` (by identity)."""
    messages[:] = [entry for entry in messages if not any(entry is g for g in gone)]


PAGE_MESSAGE_SECONDS = 3.0  # a page's message is drawn again by its page's runs this soon after it was shown


def show_flash(outbox: str = "_flash") -> None:
    """Draw the messages waiting in `outbox`, in one container (one element at the top however many: a count
    that changed moved every element below it, and Streamlit rebuilt the Manage tabs on their first tab, hiding
    a refusal drawn in another). They leave the outbox when the run that drew them ends (`end_flash`: the app
    after its page, a fragment after its body), not when drawn: a run that a click cuts short (Streamlit stops it
    at its next element once another click has come) leaves them to the next run, which draws them again. Dropped
    once drawn, the message of a double click's first click was lost under load: the first run drew it and
    went on drawing the page, the second drew the page without it. A message shown by a run that ended is drawn
    again by the runs of the same page that start within PAGE_MESSAGE_SECONDS of that end: a double click's second
    click can reach the server after the first click's runs have ended (a busy machine), and its run drew the page
    without "Created project …", which the first had shown for a moment. A submission still under way
    (`submit_once`) is waited for first: its message is one of them. One call per outbox and run."""
    settle_submissions()
    waiting = st.session_state.setdefault(outbox, [])
    # [(entry, when the run that showed it ended, its page)]
    recent = st.session_state.setdefault("_recent", {}).setdefault(outbox, [])
    page, now = st.session_state.get("_page"), time.monotonic()
    recent[:] = [r for r in recent if r[2] == page and now - r[1] < PAGE_MESSAGE_SECONDS]
    if waiting:  # an action has spoken since the last run ended: what the ones before it said is over (a refusal
        recent.clear()  # drawn beside the corrected attempt's success; a double click's second click says nothing)
    shown = [entry for entry, _, _ in recent] + list(waiting)
    box = st.container()
    for kind, message in shown:
        {"success": box.success, "warning": box.warning, "error": box.error}.get(kind, box.info)(message)
    # the lists themselves: end_flash may touch no session state (after st.stop)
    st.session_state.setdefault("_drawn", {})[outbox] = (waiting, list(waiting), recent, page)


def end_flash(*outboxes: str, drawn: dict[str, Any] | None = None) -> None:
    """The run ends: the messages its `show_flash` drew leave `outboxes` (none named: every outbox drawn), kept a
    little while for the page's next runs (PAGE_MESSAGE_SECONDS). `drawn`: the run's own record, taken before the
    page ran (review_ui/app.py): after `st.stop()` every access to the session state raises the stop again, and
    the messages of a page that stops stayed, piling up."""
    if drawn is None:
        drawn = st.session_state.setdefault("_drawn", {})
    now = time.monotonic()
    for outbox in outboxes or tuple(drawn):
        waiting, fresh, recent, page = drawn.pop(outbox, ([], [], [], None))
        _drop(waiting, fresh)
        recent.extend((entry, now, page) for entry in fresh)


FRAGMENT_MESSAGE_SECONDS = 10.0  # a fragment's message outlives its timer's ticks this long


@contextmanager
def fragment_messages(outbox: str) -> Iterator[None]:
    """In a fragment: its buttons' messages (`outbox`, its own: the page's outbox is drawn at the top of the
    page), drawn first and dropped when a body that drew them ends, once they have been up for
    FRAGMENT_MESSAGE_SECONDS: a fragment's timer re-runs it every few seconds, and "Asked job #N to stop" was
    gone a second after the click. A body a click cuts short leaves them to the next run."""
    show_flash(outbox)
    drawn = st.session_state.setdefault("_drawn", {})
    since = st.session_state.setdefault("_first_drawn", {})  # id(message entry) → when first drawn
    yield
    waiting, shown, _, _ = drawn.pop(outbox, ([], [], [], None))  # not reached when the run is stopped
    now = time.monotonic()
    old = []
    for entry in shown:
        if now - since.setdefault(id(entry), now) >= FRAGMENT_MESSAGE_SECONDS:
            old.append(entry)
            since.pop(id(entry), None)
    _drop(waiting, old)


_CLAIMS = threading.Lock()  # one claim at a time in this UI server (a claim is a few dictionary operations)
SUBMISSION_WAIT_SECONDS = 300.0  # the client's own timeout is 60 s a request; an import polls its job longer
# A submission this soon after the form's previous one succeeded is the second click of a double click that landed on
# the form drawn anew (a slow browser or a busy machine lets the page redraw between the two clicks): nobody reads
# what was made, types the next one and submits it in this time
DOUBLE_CLICK_SECONDS = 1.5


def settle_submissions() -> None:
    """Wait for the submissions (`submit_once`) this session has under way, so that what they make is drawn.

    Streamlit starts the page again for a second click while the run the first click started is still inside
    its API request (a run stops only at its next element or session-state touch), so the two overlap: the new
    run drew the form's next generation without the token or the runs' message, and nothing drew them after."""
    for event in list(st.session_state.setdefault("_in_flight", {}).values()):
        event.wait(SUBMISSION_WAIT_SECONDS)


def generation(form: str) -> int:
    """The generation of a form that makes or deletes something: part of its submit button's key (`submit_key`)
    or its callback's arguments, moved on by `submit_once` when its request succeeds. See `submit_once`. A
    submission still under way is waited for first (`settle_submissions`)."""
    settle_submissions()
    current = int(st.session_state.setdefault("_generations", {}).get(form, 0))
    drawn = st.session_state.setdefault("_drawn_at", {})
    if drawn.get(form, (None, 0.0))[0] != current:  # the first run that asks draws this generation
        drawn[form] = (current, time.monotonic())
    return current


def new_generation(form: str, generations: dict[str, int] | None = None) -> None:
    """Move `form` on to a fresh generation (its fields and button drawn anew). `generations`: the session's,
    taken beforehand, for a caller that may touch no session state (after a request: `submit_once`)."""
    if generations is None:
        generations = st.session_state.setdefault("_generations", {})
    generations[form] = generations.get(form, 0) + 1


def double_clicks_tail(form: str) -> bool:
    """Whether a submission of `form` now, within DOUBLE_CLICK_SECONDS of its last success (or of the first draw
    of the fresh form, where that came later), is the second click of a double click that landed on the form
    drawn anew: the page then sends nothing and says nothing. Asked where the fresh form's submission would be
    refused (the token form's second click came with an empty name: "Type the user name" beside the token it
    had made) or would repeat the request (a form that keeps its fields), not for every submission: a different
    request made at once is the user's (a test's) own."""
    made = st.session_state.setdefault("_made_at", {}).get(form)
    if made is None:
        return False
    # From the later of the success and the first draw of the fresh form: a page that reads the API before it
    # draws its button (Training) can take longer than the window to show it, and the click lands after that
    current, drawn = st.session_state.setdefault("_drawn_at", {}).get(form, (None, 0.0))
    since = max(made, drawn) if current == int(st.session_state.setdefault("_generations", {}).get(form, 0)) else made
    return time.monotonic() - since < DOUBLE_CLICK_SECONDS


def submit_key(form: str) -> str:
    """The key of `form`'s submit button (and of its fields, with a suffix) in its current generation."""
    return f"_submit_{form}_{generation(form)}"


def submit_once(
    form: str,
    fn: Callable[..., T],
    *args: Any,
    seen: int | None = None,
    said: Callable[[T], tuple[str, str]] | None = None,
    refused: Callable[[ApiError], tuple[str, str]] | None = None,
    keep: str | None = None,
    outbox: str = "_flash",
) -> T | None:
    """`fn(*args)`, the API request of `form`'s submission, made once per generation of the form; its result, or
    None when it failed or was not made.

    A double click's second click leaves the browser before the page has re-run, and Streamlit then stops the
    run the first click started at its next element *or its next touch of st.session_state*, and runs the page
    again for the second: a request made there again issued a second token (and showed neither), queued the
    training runs twice, or answered a made ensemble with "pick at least two runs". So everything this needs is
    taken from the session state before the request (its generations, its `outbox` of messages and its `keep`
    box, plain objects kept there), the generation is claimed before the request, and after it only those plain
    objects are written: no stop can fall between the request and what it records. The second click then names
    the generation before (a submit button the page no longer draws, or a callback's `seen` that is outdated)
    and nothing is sent. When the page was drawn anew before the second click, the click lands on the fresh
    form: a page whose fresh form would refuse it (no name yet), or send the same request again (its fields
    kept), asks `double_clicks_tail` first. Callers evaluate everything that reads the session state (the client,
    the fields) before calling this. Streamlit may run the page for the second click while this request is still
    under way: that run waits for it (`settle_submissions`, from `generation` and `show_flash`) and draws what it
    made.

    On success: `said(result)` (kind, message) goes to `outbox`, and the result into
    st.session_state["_kept"][keep]; on an API error the generation is given back (the same form, corrected,
    may be sent again) and `refused(error)`, or the API's message, goes to `outbox`."""
    generations = st.session_state.setdefault("_generations", {})
    messages = st.session_state.setdefault(outbox, [])
    kept = st.session_state.setdefault("_kept", {})
    in_flight = st.session_state.setdefault("_in_flight", {})
    made_at = st.session_state.setdefault("_made_at", {})
    with _CLAIMS:  # the run of a second click may be on another thread already (Streamlit's fast reruns)
        current = int(generations.get(form, 0))
        if seen is not None and seen != current:
            return None
        in_flight[form] = done = threading.Event()  # before the claim: a run that sees the claim waits for it
        generations[form] = current + 1
    try:
        result = fn(*args)
    except ApiError as err:
        generations[form] = current
        _say(messages, refused(err) if refused is not None else ("error", plain(str(err))))  # said once
        return None
    except BaseException:
        generations[form] = current
        raise
    else:
        made_at[form] = time.monotonic()
        if keep is not None:
            kept[keep] = result
        if said is not None:
            messages.append(said(result))
        return result
    finally:
        if in_flight.get(form) is done:
            del in_flight[form]
        done.set()


def kept(box: str) -> Any:
    """What `submit_once` kept under `box` (None: nothing)."""
    return st.session_state.setdefault("_kept", {}).get(box)


def drop_kept(box: str) -> None:
    st.session_state.setdefault("_kept", {}).pop(box, None)


def give_back_typed(keys: Iterable[str]) -> None:
    """What the user typed into these widgets, given back when their page comes back: Streamlit drops a widget's
    value once a run does not draw it (a look at another page), and a start form came back at its defaults (a
    budget typed came back 0: an estimate of hours). Before the widgets; remember_typed after them."""
    for key in keys:
        if key not in st.session_state and (typed := st.session_state.get(f"_kept_{key}")) is not None:
            st.session_state[key] = typed


def remember_typed(keys: Iterable[str]) -> None:
    for key in keys:
        st.session_state[f"_kept_{key}"] = st.session_state.get(key)


def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """Run an API call; on failure show the API's message (as text) and return None."""
    try:
        return fn(*args, **kwargs)
    except ApiError as err:
        st.error(plain(str(err)))
        return None


def call_and_flash(success: str, fn: Callable[..., T], *args: Any, outbox: str = "_flash", **kwargs: Any) -> T | None:
    """`call` for a button's callback: the API's error, or `success`, is shown on the next run (in `outbox`)."""
    try:
        result = fn(*args, **kwargs)
    except ApiError as err:
        flash("error", plain(str(err)), outbox)
        return None
    flash("success", success, outbox)
    return result


def fetch_or_stop(missing: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """An API read the page cannot go on without. An API server without the endpoint (404/405 that names no
    field) gets `missing` as information; any other error the API's message; the page stops either way."""
    try:
        return fn(*args, **kwargs)
    except ApiError as err:
        if err.status in (404, 405) and not err.body.get("field"):
            st.info(missing)
        else:
            st.error(plain(str(err)))
        st.stop()
        raise  # st.stop() raises; this only tells type checkers so


def dataset_with_work(api: ApiClient, names: list[str]) -> str | None:
    """Of `names`, the dataset with the most pending variants the signed-in member can still review (those
    they have not voted on), or None where none has any: where a session lands when it has chosen no dataset
    yet (the first by name was often an empty one while another held the member's work). One page-of-one
    queue read per dataset, once per session; a dataset the API refuses is passed over."""
    best, most = None, 0
    for name in names:
        try:
            queue = api.review_queue(name, status="pending", unreviewed="true", page=1, page_size=1)
        except ApiError:
            continue
        total = int(queue.get("total") or 0)
        if total > most:
            best, most = name, total
    return best


def pick_dataset(where: Any = None, key: str = "dataset") -> dict[str, Any] | None:
    """A dataset chooser shared by the pages (the choice follows the user from page to page). When the API
    cannot say which datasets there are, its error is all the page shows: not "no dataset yet"."""
    items = call(client().datasets)
    if items is None:
        return None
    if not items:
        st.info("No dataset yet. An admin imports one on the Datasets page or with `augloop import`.")
        return None
    names = [d["name"] for d in items]
    current = st.session_state.get("current_dataset")
    if current not in names:  # no choice yet in this session (or its dataset is gone): where there is work
        current = dataset_with_work(client(), names)
    index = names.index(current) if current in names else 0
    chosen = (where or st).selectbox("Dataset", names, index=index, key=key)
    st.session_state["current_dataset"] = chosen
    return items[names.index(chosen)]


def page_with_dataset(title: str) -> dict[str, Any] | None:
    """A page's title, the messages its previous run left, and the dataset chooser (None: no dataset yet)."""
    st.title(title)
    show_flash()
    return pick_dataset()


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is no number JSON knows")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 reads as inf
        raise ValueError(f"{text[:40]} is too large for a number")
    return value


def json_object(text: str) -> tuple[dict[str, Any] | None, str | None]:
    """A JSON object typed into a form, strictly: NaN and Infinity (Python's reader takes them, and sending them
    raised a traceback on the page), a number too large for one (1e400: infinity, the same traceback on every
    keystroke of the Impact page, whose estimate follows the fields) and nesting too deep to read are errors to
    show, as bad JSON is."""
    try:
        value = json.loads(text or "{}", parse_constant=_no_constant, parse_float=_finite)
    except (ValueError, RecursionError) as err:
        said = str(err) if isinstance(err, ValueError) else "nested too deep"
        return None, f"not JSON ({said[:200]})"
    if not isinstance(value, dict):
        return None, "not a JSON object"
    return value, None


# Seeds: ASCII digits (str.isdigit takes "²" and "①", which int() refuses), at most 19 of them.
_SEED = re.compile(r"[0-9]{1,19}")


def seed_list(text: str) -> tuple[list[int] | None, str | None]:
    """Seeds typed as "1, 2, 3": the whole numbers, or what is wrong."""
    parts = [s for s in (text or "").replace(" ", "").split(",") if s]
    wrong = [s for s in parts if not _SEED.fullmatch(s)]
    if wrong:
        return None, f"Seeds are whole numbers separated by commas, e.g. 42, 43, 44; not {wrong[0][:30]!r}"
    return [int(s) for s in parts], None


def run_inputs(seeds: str, config: str) -> tuple[list[int], dict[str, Any]] | None:
    """The seeds ("1, 2, 3") and trainer-config overrides (JSON) typed into a start form; None, with the
    reason shown, if they do not parse."""
    overrides, problem = json_object(config)
    if overrides is None:
        st.error(plain(f'The config is {problem}; write an object, e.g. {{"epochs": 5}}'))
        return None
    parsed, problem = seed_list(seeds)
    if parsed is None:
        st.error(plain(problem or ""))
        return None
    return parsed, overrides
