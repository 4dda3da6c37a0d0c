"""The Streamlit review UI. It talks to the API only (review_ui/client.py), never to the database."""

from pathlib import Path

APP_PATH = Path(__file__).parent / "app.py"  # the pages (what AppTest runs)
SERVER_PATH = Path(__file__).parent / "server.py"  # the pages plus the session-cookie route (what `augloop ui` runs)
STREAMLIT_FLAGS = [
    "--server.headless=true",
    "--browser.gatherUsageStats=false",
    "--client.toolbarMode=viewer",
    # Streamlit runs gc.collect(2) after every script run, holding the GIL while the decision's answer waits
    # to be sent: most of a review keystroke's server time (py-spy). Python's own GC still runs as usual.
    "--runner.postScriptGC=false",
]


def upload_limit_mb() -> int:
    """The largest file the Import tab takes, in Streamlit's megabytes (MiB), rounded up: the API's cap on a file
    imported now (AUGLOOP_MAX_REQUEST_BYTES). Streamlit's own default said "200MB per file", and a file past the
    API's cap was refused only after its upload, with the API's bare 413."""
    from core.settings import get_settings

    return max(1, -(-get_settings().max_request_bytes // 2**20))
