"""Train: placeholder until the Train page lands."""

import streamlit as st

st.title("4 · Train")
st.info("The Train page is being built.")
