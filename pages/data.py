"""Data: placeholder until the Data page lands."""

import streamlit as st

st.title("2 · Bring your photos")
st.info("The Data page is being built.")
