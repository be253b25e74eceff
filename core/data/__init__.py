"""Dataset ingest and validation: safe decoding (images), safe zip extraction (archive), folder indexing (scan),
the validation report (validate), train/val/test splits (splits), the app's dataset store (store) and
which runs were trained on a stored dataset (usage).

Plain Python: nothing here imports streamlit. Submodules are imported explicitly (``from core.data import store``).
"""
