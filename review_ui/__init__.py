"""The Streamlit review UI. It talks to the API only (review_ui/client.py), never to the database."""

from pathlib import Path

APP_PATH = Path(__file__).parent / "app.py"
