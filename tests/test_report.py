"""The per-run HTML report: parses, embeds its photos as data: URIs, references nothing outside itself, escapes user
strings (class and file names), shows the numbers evaluation.json holds, and evaluates first when it must."""

from __future__ import annotations

import base64
import html
import io
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
from PIL import Image

from core import engine, report, runs, trainset
from core.config import FreezeConfig, RunConfig, TrainConfig
from core.evaluate import evaluate_run, load_evaluation
from core.events import BatchEnded
from core.recorder import RunRecorder
from core.report import REPORT_FILE, build_report, line_chart, needs_evaluation, thumbnail_data_uri, write_report
from core.tasks import get_task
from tests.synthetic import make_colour_folders

# Legal folder and file names on Linux (no "/"), hostile in HTML.
HOSTILE_CLASS = "<img src=x onerror=alert(1)>"
HOSTILE_FILE = "<b onmouseover=alert(2)>&\"it's\".png"
URL_ATTRS = {"src", "href", "action", "formaction", "data", "poster", "srcset", "background", "xlink:href",
             "cite", "longdesc", "manifest", "ping", "codebase"}


class Collector(HTMLParser):
    """Every start tag with its attributes, and the text, as html.parser sees them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(doc: str) -> Collector:
    p = Collector()
    p.feed(doc)
    p.close()
    return p


def plain(p: Collector) -> str:
    """The document's text as a reader sees it (whitespace collapsed)."""
    return re.sub(r"\s+", " ", "".join(p.text))


def hostile_colours(root: Path, train: int = 8, val: int = 3) -> Path:
    """Synthetic colour folders with the red class renamed to HOSTILE_CLASS and one photo to HOSTILE_FILE."""
    data = make_colour_folders(root, train=train, val=val)
    for split in ("train", "val"):
        (data / split / "red").rename(data / split / HOSTILE_CLASS)
    (data / "val" / HOSTILE_CLASS / "red_0.png").rename(data / "val" / HOSTILE_CLASS / HOSTILE_FILE)
    return data


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A tiny run trained for 2 epochs (gradual: two phases) and its report, written by write_report."""
    root = tmp_path_factory.mktemp("report")
    data = hostile_colours(root / "data")
    cfg = RunConfig("test_resnet", str(data), FreezeConfig("gradual"),
                    TrainConfig(epochs=2, batch_size=4, precision="fp32", device="cpu"), pretrained=False)
    run_dir = runs.create_run(cfg, trainset.resolve(str(data)), root / "runs")
    engine.fit(run_dir, [RunRecorder(run_dir)])
    assert not (run_dir / "evaluation.json").exists()
    path = write_report(run_dir)
    assert path == run_dir / REPORT_FILE
    return run_dir, path.read_text(encoding="utf-8")


def test_the_report_parses_and_has_every_section(trained: tuple[Path, str]) -> None:
    run_dir, doc = trained
    p = parse(doc)
    assert doc.startswith("<!DOCTYPE html>") and p.tags[0][0] == "html"
    text = plain(p)
    for heading in ("Summary", "Dataset", "Problems found", "Model and frozen layers", "Training", "Results",
                    "Confusion matrix", "Examples", "Can its confidence be trusted?", 'The "not sure" threshold',
                    "How to use the model"):
        assert heading in text, heading
    assert "This model recognises 3 classes" in text
    assert "could not be made" not in text  # no section failed
    assert "transfer-studio predict" in text and "transfer-studio train" in text and "predict_example" in text
    assert text.count("frozen") >= 2 and "trains" in text  # gradual: the frozen/trained layer groups per phase
    assert "phase 2" in text and "From epoch 2" in text
    fit = runs.load_config(run_dir).train.image_fit
    assert "photos made square by" in text
    assert {"crop": "cropping the centre", "squash": "stretching the whole photo",
            "pad": "adding borders to the whole photo"}[fit] in text
    train = runs.load_config(run_dir).train
    assert "crop" in train.augment and "random crops keep" in text
    assert f"{train.crop_min_area * 100:g}–100 % of the photo" in text
    assert sum(1 for tag, _ in p.tags if tag == "svg") >= 3  # loss, accuracy, reliability
    assert not list(run_dir.glob(f".{REPORT_FILE}.*"))  # atomic write: no temporary file left


def test_photos_are_embedded_as_data_uris(trained: tuple[Path, str]) -> None:
    _, doc = trained
    imgs = [attrs for tag, attrs in parse(doc).tags if tag == "img"]
    assert 3 <= len(imgs) <= 16  # a few correct (and wrong, if any) validation photos
    for attrs in imgs:
        src = attrs["src"] or ""
        assert src.startswith("data:image/jpeg;base64,")
        im = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        assert im.format == "JPEG" and max(im.size) <= 128


def test_there_are_no_external_references(trained: tuple[Path, str]) -> None:
    _, doc = trained
    low = doc.lower()
    assert "http://" not in low and "https://" not in low
    assert "<script" not in low and "<link" not in low and "@import" not in low and "url(" not in low
    for tag, attrs in parse(doc).tags:
        assert tag not in ("script", "link", "iframe", "object", "embed", "base", "frame", "audio", "video")
        for name, value in attrs.items():
            assert not name.startswith("on"), (tag, name)
            if name in URL_ATTRS:
                assert (value or "").startswith("data:"), (tag, name, value)
            assert not (value or "").lstrip().startswith("//"), (tag, name, value)


def test_user_strings_are_escaped(trained: tuple[Path, str]) -> None:
    run_dir, doc = trained
    assert HOSTILE_CLASS in runs.load_dataset(run_dir)["classes"]  # the hostile name really is a class
    assert HOSTILE_CLASS not in doc and html.escape(HOSTILE_CLASS) in doc
    assert HOSTILE_CLASS in plain(parse(doc))  # shown to the reader as text, not markup
    every = build_report(run_dir, max_examples=100)  # every validation photo, so the hostile file name is shown
    assert "<b onmouseover" not in every and html.escape(HOSTILE_FILE) in every
    for tag, attrs in parse(every).tags:
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
    assert any(tag == "img" and (attrs.get("alt") or "").endswith(HOSTILE_FILE) for tag, attrs in parse(every).tags)


def test_the_numbers_are_those_of_evaluation_json(trained: tuple[Path, str]) -> None:
    run_dir, doc = trained
    ev = load_evaluation(run_dir)
    assert ev is not None and not ev["stale"]
    block = ev["splits"][ev["primary_split"]]
    assert ev["primary_split"] == "val" and "accuracy (validation)" in doc  # the split is named

    def pct(x: float) -> str:
        return f"{x * 100:.1f} %"

    assert pct(block["accuracy"]) in doc
    assert pct(block["balanced_accuracy"]) in doc
    assert f"{block['macro_f1']:.3f}" in doc
    assert f"{block['calibration']['ece']:.3f}" in doc
    assert f"{block['n_images']} validation photos" in doc
    for row in block["per_class"]:
        cells = [html.escape(row["class"]), str(row["support"])]
        cells += [pct(row[k]) if row[k] is not None else "–" for k in ("recall", "precision")]
        cells.append(f"{row['f1']:.3f}" if row["f1"] is not None else "–")
        pattern = r"</t[dh]>\s*<t[dh][^>]*>".join(re.escape(c) for c in cells)
        assert re.search(r"<td>" + pattern + "</td>", doc), row
    table = doc[doc.index('<table class="cm">'):]
    table = table[:table.index("</table>")]
    counts = [int(v) for v in re.findall(r"<td [^>]*>(\d+)</td>", table)]
    assert counts == [v for row in block["confusion_matrix"] for v in row]
    th = ev["unknown_threshold"]
    if th.get("threshold"):
        assert pct(th["threshold"]) in doc


def test_write_report_evaluates_again_when_the_weights_change(trained: tuple[Path, str], tmp_path: Path) -> None:
    run_dir, _ = trained
    copy = tmp_path / run_dir.name
    shutil.copytree(run_dir, copy)
    assert not needs_evaluation(copy)
    state = runs.load_weights(copy)
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first] = state[first] + 0.5
    runs.save_weights(copy, state, {"epoch": 2, "val_accuracy": 0.1})
    assert load_evaluation(copy)["stale"] and needs_evaluation(copy)
    write_report(copy)
    assert not load_evaluation(copy)["stale"]
    assert "The model's weights changed" not in (copy / REPORT_FILE).read_text(encoding="utf-8")


def test_a_run_without_a_model_still_gets_a_report(tmp_path: Path) -> None:
    data = make_colour_folders(tmp_path / "data", train=3, val=2)
    cfg = RunConfig("test_resnet", str(data), FreezeConfig("head"), TrainConfig(epochs=1), pretrained=False)
    run_dir = runs.create_run(cfg, trainset.resolve(str(data)), tmp_path / "runs")
    assert not needs_evaluation(run_dir)
    doc = write_report(run_dir).read_text(encoding="utf-8")
    text = plain(parse(doc))
    assert "no trained model yet" in text and "not been evaluated" in text
    assert "could not be made" not in text and "<img" not in doc


def test_unreadable_photos_are_skipped(tmp_path: Path) -> None:
    data = make_colour_folders(tmp_path / "data", train=3, val=3)
    cfg = RunConfig("test_resnet", str(data), FreezeConfig("head"),
                    TrainConfig(epochs=1, batch_size=4, precision="fp32", device="cpu"), pretrained=False)
    run_dir = runs.create_run(cfg, trainset.resolve(str(data)), tmp_path / "runs")
    torch.manual_seed(0)
    net = get_task("classification").build_model("test_resnet", 3, pretrained=False)
    runs.save_weights(run_dir, net.state_dict(), {"epoch": 1, "val_accuracy": 0.3})
    evaluate_run(run_dir, with_learning_curve=False, device="cpu")
    broken = data / "val" / "green" / "green_0.png"
    broken.write_bytes(b"not an image any more")
    assert thumbnail_data_uri(broken) is None
    assert thumbnail_data_uri(data / "val" / "blue" / "blue_0.png").startswith("data:image/jpeg;base64,")
    doc = build_report(run_dir)
    alts = [attrs.get("alt") for tag, attrs in parse(doc).tags if tag == "img"]
    assert alts and "val/green/green_0.png" not in alts


def test_problems_of_a_stored_dataset_are_listed(tmp_path: Path, home: Path) -> None:
    from core.data import store
    from core.data.validate import ValidationConfig

    src = hostile_colours(tmp_path / "src", train=4, val=2)
    dup = src / "train" / "green"
    shutil.copy(dup / "green_0.png", dup / "green_copy.png")
    ds = store.import_folder(src, "My <i>set</i>", config=ValidationConfig(workers=0)).dataset
    cfg = RunConfig("test_resnet", ds.id, FreezeConfig("head"), TrainConfig(epochs=1), pretrained=False)
    run_dir = runs.create_run(cfg, trainset.resolve(ds.id), tmp_path / "runs")
    doc = build_report(run_dir)
    text = plain(parse(doc))
    assert "Stored dataset My <i>set</i>" in text and "<i>set" not in doc
    assert "Duplicates in 'green'" in text
    assert HOSTILE_CLASS not in doc and html.escape(HOSTILE_CLASS) in doc


def test_line_chart_skips_missing_values_and_draws_nothing_without_data() -> None:
    svg = line_chart([{"name": "a", "colour": "#000", "points": [(1, 0.5), (2, float("nan")), (3, None), (4, 0.7)]}],
                     x_label="epoch", y_label="loss", integer_x=True, vlines=[(2.5, "<phase>")])
    assert svg.startswith("<svg") and svg.count("<circle") == 2 and "&lt;phase&gt;" in svg and "nan" not in svg
    assert "No data" in line_chart([{"name": "a", "colour": "#000", "points": []}], x_label="x", y_label="y")


def test_the_training_time_of_a_stopped_and_resumed_run_counts_both_sessions(tmp_path: Path) -> None:
    data = make_colour_folders(tmp_path / "data", train=4, val=2)
    cfg = RunConfig("test_resnet", str(data), FreezeConfig("head"),
                    TrainConfig(epochs=2, batch_size=4, precision="fp32", device="cpu"), pretrained=False)
    run_dir = runs.create_run(cfg, trainset.resolve(str(data)), tmp_path / "runs")
    batches: list[BatchEnded] = []
    engine.fit(run_dir, [lambda e: batches.append(e) if isinstance(e, BatchEnded) else None, RunRecorder(run_dir)],
               should_stop=lambda: len(batches) >= 3)  # Stop between the two epochs, then Resume
    assert engine.fit(run_dir, [RunRecorder(run_dir)]).state == "completed"
    log = run_dir / "events.jsonl"
    events = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    first_end = next(e for e in events if e["type"] == "fit_ended")
    first_end["seconds"] += 600  # as if the first session had trained for ten minutes before the stop
    log.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    total = report.format_duration(sum(e["seconds"] for e in events if e["type"] == "fit_ended"))
    assert total.startswith("10 min")
    texts = [t.strip() for t in parse(build_report(run_dir)).text if t.strip()]
    card = texts.index("training time")  # the summary card: its value, then its name
    assert texts[card - 1] == f"{total} on cpu"  # the status holds the resumed session's seconds only
    row = texts.index("time", texts.index("seed"))  # the training settings table: a name, then its value
    assert texts[row + 1] == total


def test_a_run_whose_dataset_was_deleted_gets_a_plain_report(tmp_path: Path, home: Path) -> None:
    """No exception name, no advice that cannot work: its photos are gone, so the report has no evaluation."""
    from core.data import store
    from core.data.validate import ValidationConfig

    data = make_colour_folders(tmp_path / "data", train=3, val=2)
    ds = store.import_folder(data, "colours", config=ValidationConfig(workers=0)).dataset
    cfg = RunConfig("test_resnet", ds.id, FreezeConfig("head"), TrainConfig(epochs=1), pretrained=False)
    run_dir = runs.create_run(cfg, trainset.from_store(ds.id), tmp_path / "runs")
    net = get_task("classification").build_model("test_resnet", 3, pretrained=False)
    runs.save_weights(run_dir, net.state_dict(), {"epoch": 1, "val_accuracy": 0.5})
    store.delete_dataset(ds.id)
    doc = write_report(run_dir).read_text(encoding="utf-8")
    text = plain(parse(doc))
    assert ("The photos this run was trained on (dataset 'colours') are no longer on this machine, so this report has "
            "no evaluation") in text and "can still be tested and exported" in text
    assert "Stored dataset colours (deleted since this run was trained)" in text
    assert "This report has no evaluation" in text[text.index("Results"):]
    assert "Error" not in text and "could not be evaluated" not in text and "could not be made" not in text
    assert "make the report" not in text.lower() and "making the report" not in text.lower()
    assert not (run_dir / "evaluation.json").exists()


def test_the_report_names_the_apps_real_places(trained: tuple[Path, str], tmp_path: Path) -> None:
    from core.evaluate import EVALUATION_FILE, SUGGESTION_NOTE

    run_dir, doc = trained
    text = plain(parse(doc))
    assert "Export the model (in the app: 6 · Runs & export, Export and share tab; or on the command line)" in text
    assert "Export page" not in text and "Runs page" not in text
    copy = tmp_path / run_dir.name
    shutil.copytree(run_dir, copy)
    ev = json.loads((copy / EVALUATION_FILE).read_text())
    ev["unknown_threshold"] = {"threshold": None, "suggested": 0.8, "chosen_by": None,
                               "reason": f"It would keep 90 % of the photos. {SUGGESTION_NOTE}"}
    (copy / EVALUATION_FILE).write_text(json.dumps(ev))
    text = plain(parse(build_report(copy)))
    assert "not in use until you choose it (in the app: 6 · Runs & export, Results tab)" in text
    assert "Not in use: the model always answers." in text and "None:" not in text  # was "None: the model …"
    assert "Runs page" not in text
    (copy / EVALUATION_FILE).unlink()  # not evaluated (photos still here): how to get the evaluation
    text = plain(parse(build_report(copy)))
    assert ("making the report again (in the app: 6 · Runs & export, Export and share tab, Make the HTML report) "
            "computes it first") in text
    assert "make the report with evaluation" not in text
