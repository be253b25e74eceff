"""Runs: every run with its facts; compare several; open one for results, export, report, and housekeeping."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from functools import partial
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core import jobs, runs
from core.evaluate import load_evaluation, set_threshold
from core.progress import read_run
from core.run_table import dataset_cell, recorded_source, run_row, stored_name
from core.settings import PROJECT_ROOT, runs_root
from core.storage import read_json, write_json_atomic
from views.common import (
    STORE_ID,
    TASK_DRAFTS,
    current_task,
    download_stem,
    draft,
    esc,
    forget_widget_values,
    results_not_computed,
    set_draft,
    step_page,
)
from views.results import cli_error

if goto := st.session_state.pop("runs_goto", None):  # a run adopted in the previous run of this page (open_on)
    st.switch_page(step_page(goto))
st.title("6 · Runs, results and export")


def _cli(args: list[str], timeout: float = 1800) -> tuple[dict | None, str]:
    """Run a `transfer-studio` command in its own process; (last JSON line, error text)."""
    proc = subprocess.run([sys.executable, "-m", "core.cli", *args], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=timeout, check=False)
    for line in reversed(proc.stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line), ""
    return None, cli_error(proc.stderr)


def _meta(run_dir) -> dict:
    return read_json(run_dir / "meta.json", {}) or {}


@st.cache_data(show_spinner=False, ttl=60)
def _stored_name(dataset: str) -> str | None:
    """A stored dataset's name (None for a folder path or a dataset deleted since), read at most once a minute."""
    return stored_name(dataset)


@st.cache_data(show_spinner=False)
def _recorded_source(run_dir: str, stamp: float) -> dict:  # noqa: ARG001 - stamp: read again when the file changes
    """What the run recorded about its photos (dataset.json's "source")."""
    return recorded_source(Path(run_dir))


def _dataset_cell(run_dir: Path, dataset: str) -> str:
    """The runs table's dataset (`core.run_table.dataset_cell`), from cached reads."""
    stored = _stored_name(dataset)
    if stored is not None:
        return stored
    try:
        stamp = (run_dir / "dataset.json").stat().st_mtime
    except OSError:
        stamp = 0.0
    return dataset_cell(dataset, None, _recorded_source(str(run_dir), stamp))


def _is_zoo_backbone(name: str) -> bool:
    """True for an ImageNet backbone of the zoo (a frozen face embedder has no 'from scratch' to compare with)."""
    from core import zoo

    try:
        zoo.get_spec(name)
    except zoo.ZooError:
        return False
    return True


def open_on(step: str, run_dir: Path) -> None:
    """Adopt the run (`adopt_run`) and show it on a step's page. Through a rerun: the pages of a task the run brings
    are only known to the app's navigation from its next run (switching at once raised "Could not find page
    views/segmentation_test.py")."""
    adopt_run(run_dir)
    st.session_state["runs_goto"] = step
    st.rerun()


def adopt_run(run_dir: Path) -> None:
    """Make a run the session's choice (its task, model, photos and layers, and the run itself), so the Train page
    opened next shows it instead of "Choose a model first" (or the page of another task)."""
    cfg = runs.read_json_config(run_dir)
    task = str(cfg.get("task") or "classification")
    if task != current_task():  # as the task picker does: the left task keeps its own choices
        st.session_state.setdefault("task_drafts", {})[current_task()] = {k: draft(k) for k in TASK_DRAFTS}
        set_draft("task", task)
        forget_widget_values()
    if _is_zoo_backbone(str(cfg.get("backbone") or "")):
        set_draft("backbone", cfg["backbone"])
    if cfg.get("dataset"):
        set_draft("dataset_id", str(cfg["dataset"]))
    if isinstance(cfg.get("freeze"), dict):
        set_draft("freeze", json.dumps(cfg["freeze"]))
    set_draft("run_id", run_dir.name)


COLUMNS = ["task_title", "date", "status", "best_val_accuracy", "backbone", "dataset", "freeze", "pretrained", "epochs",
           "epochs_done", "batch", "lr", "seconds", "device", "note"]  # the runs table's order, also the compare rows
#: as the runs table heads them
COLUMN_TITLES = {"best_val_accuracy": "best score", "seconds": "seconds training", "task_title": "task",
                 "epochs_done": "epochs done"}


def _row(run_dir: Path) -> dict:
    """The run's row of the table (`core.run_table.run_row`, also `transfer-studio runs list`)."""
    return run_row(run_dir, _dataset_cell)


def export_contents(formats: list[str]) -> str:
    """What the export download holds, in words (every checked format exported for the run's current weights)."""
    if not formats:
        return "The zip holds no model file: none passed its check."
    return (f"The zip holds every format exported for these weights ({', '.join(formats)}), with manifest.json "
            "(classes and how photos are prepared) and predict_example.py.")


def example_steps(formats: list[str], needs: dict[str, str]) -> str:
    """How to run predict_example.py from the download, as numbered steps (markdown)."""
    fmt = next((f for f in ("onnx", "torchscript", "safetensors") if f in formats), "safetensors")
    return (f"1. Unzip the download and open a terminal in its folder.\n"
            f"2. `pip install pillow numpy {needs.get(fmt, '')}`\n"
            f"3. `python predict_example.py photo.jpg --format {fmt}` (several photos at once work too).")


def _cell(value: object) -> str:
    if value is None or value != value:  # None or NaN
        return ""
    if isinstance(value, float):  # a column with a missing value turns whole numbers into floats: 1.0 -> "1"
        return str(int(value)) if value.is_integer() else f"{value:.3f}" if abs(value) < 1 else f"{value:.1f}"
    return str(value)


def run_label(name: str, run_id: str) -> str:
    """A run in a picker or a legend: its name and id (names need not be unique), the id alone for a run never named
    (it read "20261208-031748-… (20261208-031748-…)")."""
    return run_id if name == run_id else f"{name} ({run_id})"


#: what each task's "best score" measures on the validation photos (the runs table's help says the same)
SCORE_WORDS = {"classification": "accuracy", "detection": "mAP@0.5", "segmentation": "mIoU", "faces": "named correctly"}


def score_text(value: object, task: str) -> str:
    """A best score for the compare table with what it measures ("0.065 mIoU"): runs of several tasks are compared
    side by side, and a bare 1.0 read "1" beside "0.948"."""
    if value is None or value != value:  # None or NaN
        return ""
    return f"{float(value):.3f} {SCORE_WORDS.get(task, 'score')}"


def _side_by_side(table: pd.DataFrame, chosen: list[str]) -> pd.DataFrame:
    """One column per chosen run, in the order chosen (headed by its name and id: names need not be unique), one
    row per setting named as the runs table names it, as text (each row mixes numbers and words)."""
    rows = table.set_index("run").loc[[r for r in chosen if r in set(table["run"])]].reset_index()
    labels = [run_label(name, run) for name, run in zip(rows["name"], rows["run"], strict=True)]
    shown = rows[COLUMNS].copy()
    shown["best_val_accuracy"] = [score_text(v, t) for v, t in zip(rows["best_val_accuracy"], rows["task"],
                                                                   strict=True)]
    shown["pretrained"] = ["yes" if p is True else "no" if p is False else "" for p in rows["pretrained"]]
    return shown.set_axis(labels).T.map(_cell).rename(index=COLUMN_TITLES)


if deleted := st.session_state.pop("runs_deleted", None):
    st.success(f"Deleted the run {esc(deleted)} and its files.")
all_runs = runs.list_runs()
if not all_runs:
    st.info("No runs yet.")
    st.page_link(step_page("train"), label="Go to the Train page", icon=":material/model_training:")
    st.stop()

table = pd.DataFrame([_row(p) for p in all_runs])
st.dataframe(table, hide_index=True, key="runs_table",
             column_order=["name", *COLUMNS, "run"],
             column_config={"task_title": "task", "best_val_accuracy": st.column_config.ProgressColumn(
                 "best score", min_value=0, max_value=1, format="%.3f",
                 help="On the validation photos: accuracy (classification), mAP@0.5 (detection), mean IoU "
                      "(segmentation), share named correctly (faces)."),
                 "epochs": st.column_config.NumberColumn("epochs", help="Planned."),
                 "epochs_done": st.column_config.NumberColumn("epochs done", help="Fewer than planned: stopped, "
                                                              "cancelled or crashed (Resume continues it)."),
                 "seconds": st.column_config.NumberColumn("seconds", help="Spent training (all sessions).")})

ids = [p.name for p in all_runs]
names = dict(zip(table["run"], table["name"], strict=True))
# Runs to compare chosen by a button lower down (it cannot write the widget's key once the widget is drawn)
# The key changes with each rename so the chips are drawn anew with the new name (the browser kept the old one);
# the choice moves to the new key through runs_compare_next.
COMPARE_KEY = "runs_compare" + (f"_{st.session_state['runs_renames']}" if st.session_state.get("runs_renames") else "")
if preset := [r for r in st.session_state.pop("runs_compare_next", []) if r in ids]:
    st.session_state[COMPARE_KEY] = preset
compare = st.multiselect("Compare runs (curves and metrics side by side)", ids, key=COMPARE_KEY,
                         format_func=lambda r: run_label(names[r], r), max_selections=6)
if compare:
    fig = go.Figure()
    for rid in compare:
        view = read_run(runs_root() / rid)
        if view.history:
            xs = [h["elapsed"] for h in view.history]  # across stops and resumes, without the time stopped
            task = str(table.set_index("run").loc[rid, "task"])
            fig.add_trace(go.Scatter(x=xs, y=[h["val_accuracy"] for h in view.history], mode="lines+markers",
                                     name=run_label(names[rid], rid),  # names need not be unique
                                     hovertemplate=f"%{{y:.3f}} {SCORE_WORDS.get(task, 'score')} after "
                                                   "%{x:.0f} s<extra>%{fullData.name}</extra>"))
    tasks = {str(t) for t in table.set_index("run").loc[compare, "task"]}
    title = ("Validation accuracy over time" if tasks == {"classification"} else "Validation score over time ("
             + ", ".join(SCORE_WORDS.get(t, t) for t in sorted(tasks)) + ")")  # not "accuracy" for mIoU or mAP
    fig.update_layout(height=320, xaxis_title="seconds of training", yaxis_title="validation score",
                      yaxis_autorangeoptions=dict(maxallowed=1.02, minallowed=0),
                      margin=dict(l=10, r=10, t=30, b=10), title=title)
    st.plotly_chart(fig, key="runs_compare_chart")
    st.dataframe(_side_by_side(table, compare), key="runs_compare_table", height="content")  # every row in sight

current = draft("run_id")
# a rename gives the picker a new key: the browser kept showing the old name in the closed box otherwise (its
# choice is the run open here, kept in runs_opened)
OPEN_KEY = f"runs_open_{st.session_state.get('runs_renames', 0)}"
opened = st.session_state.get("runs_opened")
if current in ids and current != st.session_state.get("runs_draft_seen"):  # chosen elsewhere meanwhile: open it
    opened = current
    if st.session_state.get(OPEN_KEY) not in (None, current):
        st.session_state[OPEN_KEY] = current  # the picker kept the old one
start = opened if opened in ids else current if current in ids else ids[0]
run_id = st.selectbox("Open a run", ids, index=ids.index(start), format_func=lambda r: run_label(names[r], r),
                      key=OPEN_KEY)
st.session_state["runs_opened"] = run_id
if runs.run_task(runs_root() / run_id) == current_task():
    # the session's run, as the Train and Test pages show it; a run of another task is only looked at here (it
    # became the classification pages' run: the Test page offered a detection model to classify photos). The
    # buttons below make it the session's run, its task included.
    set_draft("run_id", run_id)
st.session_state["runs_draft_seen"] = draft("run_id")
RUN = runs_root() / run_id
STEM = download_stem(names[run_id], run_id)  # downloads are named after the run
status = jobs.state(RUN)
has_weights = (RUN / "checkpoints" / "best.safetensors").exists()
if status.get("state") in runs.ACTIVE_STATES:  # results and exports would be of weights that still change
    st.info(f"**{esc(names[run_id])}** is still training ({esc(status.get('state'))}): results and exports below are "
            "of its best epoch so far.", icon=":material/model_training:")
go_train, go_test, _ = st.columns(3)  # this run on the other pages, chosen there (its task, model and photos too)
if go_train.button("Show it on the Train page", key="runs_to_train", icon=":material/model_training:"):
    open_on("train", RUN)
if has_weights and go_test.button("Try it on the Test page", key="runs_to_test", icon=":material/science:"):
    open_on("test", RUN)
results, export, manage = st.tabs(["Results", "Export and share", "Manage"])

RUN_TASK = runs.read_json_config(RUN).get("task", "classification")
with results:
    if not has_weights:
        st.info("This run has no saved weights yet.")
    elif RUN_TASK != "classification":  # the task's own results view: views/<task>_results.py, show(run_dir)
        import importlib

        try:
            task_view = importlib.import_module(f"views.{RUN_TASK}_results")
        except ModuleNotFoundError:
            st.info(f"Results for {esc(RUN_TASK)} runs are not available in this version.")
        else:
            task_view.show(RUN)
    else:
        ev = load_evaluation(RUN)
        label = "Compute results" if ev is None else ("Recompute (the weights changed)" if ev.get("stale")
                                                      else "Recompute")
        if st.button(label, key="runs_evaluate", type="primary" if ev is None or ev.get("stale") else "secondary"):
            with st.spinner("Measuring the model on its validation photos…"):
                _, err = _cli(["evaluate", "--run", str(RUN), "--quiet", "--json"])
            ev = load_evaluation(RUN)
            if err:
                results_not_computed(err, ev is not None)
            else:
                st.rerun()  # the button's label ("Recompute") and everything above follow the new results
        if ev is not None:
            from views.results import show_results

            show_results(RUN, ev, set_threshold)

with export:
    if not has_weights:
        st.info("Train this run first.")
    else:
        from core.export import EXAMPLE_NEEDS, out_of_date, read_export_record, reproduce_command, zip_export
        from core.tasks import export_formats, get_task

        # only what this run can export (detection: no TorchScript; the frozen face model: its gallery alone)
        formats = list(export_formats(get_task(RUN_TASK), runs.read_json_config(RUN).get("backbone", "")))
        fmt = st.radio("Format", formats, horizontal=True, key="runs_export_fmt",
                       help="safetensors + manifest: for this app and plain PyTorch; ONNX: for onnxruntime and "
                            "other tools" + ("; TorchScript: for C++/mobile PyTorch." if "torchscript" in formats
                                             else "."))
        out = RUN / "exports" / "model"
        if st.button("Export and check", key="runs_export", icon=":material/download:"):
            with st.spinner("Exporting and checking the file against PyTorch…"):
                res, err = _cli(["export", "--run", str(RUN), "--format", fmt, "--out", str(out), "--json"])
            if err and not res:
                st.error(f"Export failed: {err}")
        record = read_export_record(out) if out.exists() else None
        if record:
            for name, entry in (record.get("formats") or {}).items():
                check = entry.get("check") or {}
                diff = check.get("max_abs_diff") or 0.0
                detail = check.get("summary") or f"max difference {diff:.2g}"  # a task's own words when it has them
                if check.get("ok") and check.get("headline"):  # a check in its task's own words (a face gallery)
                    st.success(f"{name}: checked — {check['headline']}")
                elif check.get("ok"):
                    st.success(f"{name}: checked — outputs match PyTorch on {check.get('n_images', '?')} images "
                               f"({detail})")
                else:
                    st.error(f"{name}: the check FAILED ({detail}); do not use this file. It is left out of the "
                             "download below.")
            if stale := out_of_date(out, RUN):
                st.warning("This export is out of date: " + "; ".join(esc(w) for w in stale) + ". Click “Export "
                           "and check” again before downloading it.", icon=":material/warning:")
            checked = [name for name, entry in (record.get("formats") or {}).items()
                       if (entry.get("check") or {}).get("ok")]
            # the zip is made when the button is clicked, not on every rerun of the page (0.5–1 s for a small
            # model; more with several formats)
            st.download_button("Download the export (.zip)", partial(zip_export, out), file_name=f"{STEM}-model.zip",
                               key="runs_download", mime="application/zip")
            st.caption(export_contents(checked))
            example = out / "predict_example.py"
            if example.exists():
                with st.expander("Use it in Python"):
                    st.markdown(example_steps(checked, EXAMPLE_NEEDS))
                    st.code(example.read_text(), language="python")
        st.subheader("Reproduce")
        st.code(reproduce_command(RUN), language="bash")
        trained_on = str(runs.read_json_config(RUN).get("dataset") or "")
        if STORE_ID.fullmatch(trained_on):  # the command names the photos by their id in this app's store
            stored = _stored_name(trained_on)
            st.caption(f"`{trained_on}` is " + (f"the dataset **{esc(stored)}** in this app's store (`transfer-studio "
                       "data list` shows it)" if stored else "a dataset deleted since") + "; on another machine, "
                       "give the folder of the photos instead.")
        with st.expander("The run's config file (config.json)"):
            st.code(json.dumps(runs.read_json_config(RUN), indent=2), language="json")
        st.subheader("Report for people")
        if st.button("Make the HTML report", key="runs_report", icon=":material/description:"):
            with st.spinner("Writing the report (results are computed first when needed)…"):
                _, err = _cli(["report", "--run", str(RUN), "--json"])
            if err:
                st.error(f"Could not write the report: {err}")
        report = RUN / "report.html"
        if report.exists():
            st.download_button("Download report.html", report.read_bytes(), file_name=f"{STEM}-report.html",
                               mime="text/html", key="runs_report_download")

with manage:
    meta = _meta(RUN)
    if st.session_state.get("runs_manage_for") != run_id or "runs_name" not in st.session_state:
        # another run opened (or the fields were forgotten on another page): its own name and note and an unticked
        # delete box, written into the widgets' state: a new default alone left the browser showing the previous
        # run's name (Save then renamed this run after it) and a ticked box
        st.session_state.update(runs_name=runs.display_name(RUN, fallback=""), runs_note=meta.get("note", ""),
                                runs_delete_confirm=False, runs_manage_for=run_id)
    new_name = st.text_input("Name", key="runs_name", max_chars=120)
    note = st.text_area("Note", key="runs_note", max_chars=2000)
    if st.button("Save name and note", key="runs_save_meta"):
        write_json_atomic(RUN / "meta.json", {**meta, "name": new_name.strip(), "note": note})
        st.session_state["runs_meta_saved"] = run_id
        st.session_state["runs_renames"] = st.session_state.get("runs_renames", 0) + 1
        st.session_state["runs_compare_next"] = compare  # kept under the compare box's new key
        st.rerun()  # the table, the pickers and the labels above show the new name at once
    if st.session_state.pop("runs_meta_saved", None) == run_id:
        st.success("Saved.")
    state = status.get("state")
    cfg = runs.read_json_config(RUN)
    if state in ("stopped", "crashed", "cancelled", "failed") and not cfg.get("quick"):
        if st.button("Resume this run", key="runs_resume", icon=":material/play_arrow:"):
            jobs.start(RUN)
            open_on("train", RUN)
    if cfg.get("pretrained", True) and not cfg.get("quick") and _is_zoo_backbone(cfg.get("backbone", "")):
        st.write("**What does transfer learning buy?** Train the same model with the same settings from random "
                 "weights and compare both runs above.")
        if st.button("Train the same from scratch", key="runs_scratch", icon=":material/compare_arrows:"):
            new_cfg = runs.load_config(RUN)
            from dataclasses import replace

            scratch = replace(new_cfg, pretrained=False, name=f"{runs.display_name(RUN)} · from scratch")
            new_dir = runs.create_run(scratch, runs.load_dataset(RUN))
            jobs.start(new_dir)
            st.session_state["runs_compare_next"] = [run_id, new_dir.name]  # compared when the user comes back
            open_on("train", new_dir)
    st.divider()
    confirm = st.checkbox(f"Yes, delete {esc(names[run_id])} and its files", key="runs_delete_confirm")
    if st.button("Delete this run", key="runs_delete", disabled=not confirm or status.get("state") in
                 runs.ACTIVE_STATES, icon=":material/delete:"):
        shutil.rmtree(RUN, ignore_errors=True)
        if draft("run_id") == run_id:  # (a run of another task open here is not the session's run)
            set_draft("run_id", None)
        st.session_state["runs_deleted"] = names[run_id]
        st.rerun()
