"""Transfer Studio core: plain Python + torch. Never imports streamlit (a test checks)."""

__version__ = "0.1.0"
