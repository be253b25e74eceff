"""Transfer Studio: only a router. Each page is a short view over `core`."""

# pandas is imported whole before any page runs: plotly reads sys.modules["pandas"] without waiting for it, so a live
# chart's fragment crashed ("partially initialized module 'pandas'") while another session's first run imported it
import pandas  # noqa: F401
import streamlit as st

from views.common import (
    app_icon,
    current_task,
    draft_to_url,
    keep_widget_values,
    page_file,
    restore_draft_from_url,
    sidebar_status,
)

st.set_page_config(page_title="Transfer Studio", page_icon=app_icon(), layout="wide")

restore_draft_from_url()  # a reload (F5) of any page keeps the chosen task, model, data and run
keep_widget_values()  # and visiting another page keeps the Train page's settings
TASK = current_task()
PAGES = {
    # Streamlit serves the default page at "/" only; a hidden twin answers an address typed as /home
    "": [st.Page("views/home.py", title="Home", icon=":material/home:", default=True, url_path="start"),
         st.Page("views/home.py", title="Home", icon=":material/home:", url_path="home", visibility="hidden")],
    "Steps": [  # a task may replace a step's view with views/<task>_<step>.py (same URL, same place in the flow)
        st.Page(page_file("model", TASK), title="1 · Model", icon=":material/view_in_ar:", url_path="model"),
        st.Page(page_file("data", TASK), title="2 · Data", icon=":material/photo_library:", url_path="data"),
        st.Page(page_file("layers", TASK), title="3 · Layers", icon=":material/layers:", url_path="layers"),
        st.Page(page_file("train", TASK), title="4 · Train", icon=":material/model_training:", url_path="train"),
        st.Page(page_file("test", TASK), title="5 · Test", icon=":material/science:", url_path="test"),
        st.Page(page_file("runs", TASK), title="6 · Runs & export", icon=":material/inventory_2:", url_path="runs"),
    ],
}

page = st.navigation(PAGES)
draft_to_url()  # moving to another page clears the address's parameters: put the draft's ids back
slot = st.sidebar.empty()
sidebar_status(slot)  # shown even when the page stops early (st.stop ends the script run)
page.run()
sidebar_status(slot)  # again after the page, with the choices it made in this run
