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
