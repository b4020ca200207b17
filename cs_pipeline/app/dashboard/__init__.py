"""The customer-success dashboard (WS-168): a Streamlit app that reads only the marts as the read-only
BI role. ``connection`` resolves its connection, ``data`` reads and shapes the marts (pure functions
beside thin queries), ``actions`` talks to Dagster for the quick actions, ``streamlit_app`` is the UI."""

from pathlib import Path

#: The Streamlit script (``streamlit run`` it; importing it renders the app).
APP_SCRIPT = Path(__file__).with_name("streamlit_app.py")
