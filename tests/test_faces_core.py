"""Face recognition core without real weights: threshold choice, gallery, open-set answers, data, the run machinery
(frozen and fine-tune paths, stop/resume) and deleting a person. A tiny colour embedder and a whole-image
detector stand in for dlib and MTCNN (they are passed in, nothing is patched)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core import runs
from core.config import FreezeConfig, RunConfig, TrainConfig
from core.events import BatchEnded, FitEnded
from core.recorder import RunRecorder
from core.tasks.faces import gallery as gal
from core.tasks.faces import threshold as thr
from core.tasks.faces.data import resolve, scan_people, split_person
from core.tasks.faces.detect import WholeImageDetector
from core.tasks.faces.embed import normalise_rows
from core.tasks.faces.train import fit_finetune, fit_frozen, read_photos
from core.trainset import DatasetProblem

PEOPLE = {"ada": 0, "bob": 1, "cy": 2}  # each person: a red patch in another quarter of a grey photo
STRANGER = 3


class ColourEmbedder:
    """Mean colour of the four quadrants of the photo, centred: same-colour photos land close together."""

    name = "test_colour"
    dim = 12

    def embed(self, photo: Image.Image, faces, crops) -> np.ndarray:  # noqa: ARG002
        a = np.asarray(photo.convert("RGB"), np.float32) / 255 - 0.5
        h, w = a.shape[0] // 2, a.shape[1] // 2
        v = np.concatenate([a[:h, :w].mean((0, 1)), a[:h, w:].mean((0, 1)), a[h:, :w].mean((0, 1)),
                            a[h:, w:].mean((0, 1))])
        return normalise_rows(np.stack([v for _ in faces]))


def _photo(quarter: int, rng: np.random.Generator, size: int = 40) -> Image.Image:
    a = np.full((size, size, 3), 128.0, np.float32)
    h = size // 2
    top, left = (quarter // 2) * h, (quarter % 2) * h
    a[top:top + h, left:left + h] = (220, 40, 40)
    return Image.fromarray(np.clip(a + rng.normal(0, 20, a.shape), 0, 255).astype(np.uint8))


def make_people(root: Path, n: int = 5, people: dict | None = None, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for person, colour in (people or PEOPLE).items():
        (root / person).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            _photo(colour, rng).save(root / person / f"{person}_{i}.png")
    return root


# --- threshold ----------------------------------------------------------------------------------------------------

def test_threshold_gives_the_requested_false_accept_rate_on_synthetic_scores() -> None:
    rng = np.random.default_rng(1)
    impostor = rng.normal(0.3, 0.1, 5000)
    for far in (0.1, 0.01, 0.001):
        t, achieved, note = thr.threshold_for_far(impostor, far)
        assert achieved == pytest.approx((impostor >= t).mean())
        assert achieved <= far and achieved >= far - 1 / len(impostor)
        assert note == ""
    t_small, achieved_small, note_small = thr.threshold_for_far(impostor[:50], 0.01)
    assert achieved_small == 0.0 and t_small > impostor[:50].max() and "cannot be measured" in note_small


def test_threshold_from_synthetic_embeddings_gives_the_requested_far_on_held_back_photos() -> None:
    emb, labels, _ = _clusters(n_people=40, per=5, dim=16, spread=0.3, seed=4)
    g = gal.build(sorted(set(labels)), emb, labels, "prototype")
    for far in (0.1, 0.05, 0.02):
        cal, scores = thr.calibrate_gallery(g, far)
        accepted = float((scores.impostor >= cal.threshold).mean())
        assert accepted == pytest.approx(cal.achieved_far)
        assert far - 1 / scores.n <= accepted <= far
    assert cal.n_strangers == 200 and 0 < cal.identification <= cal.rank1


def test_tar_at_far_needs_enough_impostors() -> None:
    rng = np.random.default_rng(2)
    genuine, impostor = rng.normal(0.8, 0.05, 300), rng.normal(0.2, 0.1, 3000)
    assert thr.tar_at_far(genuine, impostor, 1e-2) == pytest.approx(1.0, abs=0.01)
    assert thr.tar_at_far(genuine, impostor[:50], 1e-3) is None


def test_the_reference_strangers_raise_the_threshold_of_a_small_gallery_of_the_face_model() -> None:
    from core.tasks.faces.embed import DLIB_MODEL

    floors = [thr.reference_threshold(DLIB_MODEL, "prototype", n, 0.01) for n in (1, 2, 5, 50, 10**6)]
    assert all(0.5 < f < 1 for f in floors) and floors == sorted(floors)  # more people, more chances to match
    assert floors[-2] < floors[-1] == thr.reference_threshold(DLIB_MODEL, "prototype", 10**7, 0.01)  # table's end
    assert thr.reference_threshold(DLIB_MODEL, "prototype", 5, 0.001) > floors[2]  # a stricter rate, higher
    assert thr.reference_threshold("test_resnet", "prototype", 5, 0.01) is None  # no reference: photos alone
    emb, labels, _ = _clusters(n_people=3, per=6, dim=16, spread=0.6, seed=3)  # alike people: a low threshold
    alone, _ = thr.calibrate_gallery(gal.build(sorted(set(labels)), emb, labels, model="test_resnet"), 0.01)
    cal, _ = thr.calibrate_gallery(gal.build(sorted(set(labels)), emb, labels, model=DLIB_MODEL), 0.01)
    assert alone.measured_threshold is None and alone.threshold < floors[1]
    assert cal.threshold == pytest.approx(thr.reference_threshold(DLIB_MODEL, "prototype", 3, 0.01), abs=1e-6)
    assert cal.measured_threshold == alone.threshold and "3 people enrolled" in cal.note
    assert cal.reference_far == pytest.approx(0.01, abs=1e-6) and alone.reference_far is None
    pairs = thr.reference(DLIB_MODEL)["pairs"]  # one-to-one verification: never below the reference pairs either
    assert cal.verify_threshold >= thr.table_threshold(pairs, 1, 0.01) - 1e-6 > alone.verify_threshold


def _clusters(n_people: int = 6, per: int = 8, dim: int = 32, spread: float = 0.05, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = normalise_rows(rng.normal(size=(n_people + 1, dim)))
    emb = np.concatenate([normalise_rows(centres[p] + spread * rng.normal(size=(per, dim))) for p in range(n_people)])
    labels = [f"p{p}" for p in range(n_people) for _ in range(per)]
    stranger = normalise_rows(centres[n_people] + spread * rng.normal(size=(5, dim)))
    return emb, labels, stranger


@pytest.mark.parametrize("kind", ["prototype", "nearest"])
def test_a_stranger_is_answered_unknown_and_known_people_are_named(kind: str) -> None:
    emb, labels, stranger = _clusters()
    g = gal.build(sorted(set(labels)), emb, labels, kind)
    cal, scores = thr.calibrate_gallery(g, 0.05)
    assert cal.identification > 0.9 and cal.achieved_far <= 0.05
    assert np.nanmean(scores.genuine) > np.nanmean(scores.impostor)
    answers = g.identify(stranger, cal.threshold)
    assert all(a.label == gal.UNKNOWN for a in answers)
    own = g.identify(emb[:3], cal.threshold)
    assert [a.label for a in own] == ["p0"] * 3


def test_gallery_without_a_person_and_save_load_round_trip(tmp_path: Path) -> None:
    emb, labels, _ = _clusters(n_people=3, per=4)
    g = gal.build(["p0", "p1", "p2"], emb, labels, keys=[f"{i:016x}" for i in range(12)])
    g2 = g.without(["p1"])
    assert g2.people == ("p0", "p2") and len(g2.labels) == 8 and "p1" not in g2.counts()
    assert set(g2.keys) == {f"{i:016x}" for i in (*range(4), *range(8, 12))}
    gal.save(g2, tmp_path, {"threshold": 0.5})
    g3, meta = gal.load(tmp_path)
    assert g3.people == g2.people and np.array_equal(g3.embeddings, g2.embeddings) and meta["threshold"] == 0.5


# --- data ---------------------------------------------------------------------------------------------------------

def test_resolve_a_people_folder_splits_per_person_and_names_problems(tmp_path: Path) -> None:
    root = make_people(tmp_path / "people", n=4)
    (root / "loose.png").write_bytes((root / "ada" / "ada_0.png").read_bytes())
    (root / "ada" / "notes.txt").write_text("hi")
    (root / "empty").mkdir()
    manifest = resolve(str(root), seed=3)
    assert manifest["classes"] == ["ada", "bob", "cy"] and manifest["task"] == "faces"
    for person in PEOPLE:
        splits = [it["split"] for it in manifest["items"] if it["label"] == person]
        assert splits.count("val") == 1 and len(splits) == 4
    notes = " ".join(manifest["notes"])
    assert "ada/notes.txt" in notes and "empty" in notes and "1 photos directly" in notes
    assert split_person(2, 0, "x") == ["train", "train"]
    with pytest.raises(DatasetProblem, match="at least 2 people"):
        resolve(str(make_people(tmp_path / "one", people={"solo": 0})))
    assert scan_people(root)[0]["ada"][0].name == "ada_0.png"


# --- the run machinery --------------------------------------------------------------------------------------------

def _faces_run(data: str, tmp_path: Path, model: str = "dlib_resnet_face", **train) -> Path:
    cfg = RunConfig(model, data, FreezeConfig("all"),
                    TrainConfig(**{"epochs": 2, "batch_size": 4, "device": "cpu", "precision": "fp32", **train}),
                    task="faces", pretrained=False)
    manifest = resolve(data)
    manifest["faces"] = {"gallery": "prototype", "target_far": 0.05}
    return runs.create_run(cfg, manifest, tmp_path / "runs")


def test_frozen_enrolment_builds_a_gallery_and_a_threshold(tmp_path: Path) -> None:
    data = make_people(tmp_path / "people", n=5)
    run_dir = _faces_run(str(data), tmp_path)
    events = []
    res = fit_frozen(run_dir, [events.append, RunRecorder(run_dir)], detector=WholeImageDetector(),
                     embedder=ColourEmbedder())
    assert res.state == "completed" and res.best_val_accuracy == 1.0
    g, meta = gal.load(run_dir)
    assert g.people == ("ada", "bob", "cy") and len(g.labels) == 15 and meta["biometric"] is True
    assert meta["calibration"]["achieved_far"] <= 0.05 and meta["roc"]
    assert (run_dir / "checkpoints" / "best.safetensors").is_file()
    assert runs.read_status(run_dir)["state"] == "completed"
    assert isinstance(events[-1], FitEnded) and len(read_photos(run_dir)) == 15
    stranger = ColourEmbedder().embed(_photo(STRANGER, np.random.default_rng(9)), [None], [])
    assert g.identify(stranger, meta["threshold"])[0].label == gal.UNKNOWN


def test_frozen_enrolment_stops_and_resumes(tmp_path: Path) -> None:
    data = make_people(tmp_path / "people", n=5)
    run_dir = _faces_run(str(data), tmp_path)
    seen = []
    res = fit_frozen(run_dir, [seen.append], lambda: len([e for e in seen if isinstance(e, BatchEnded)]) >= 1,
                     detector=WholeImageDetector(), embedder=ColourEmbedder())
    assert res.state == "stopped"
    assert not (run_dir / "gallery.json").exists()
    again = fit_frozen(run_dir, [], detector=WholeImageDetector(), embedder=ColourEmbedder())
    assert again.state == "completed" and gal.load(run_dir)[0].people == ("ada", "bob", "cy")


def test_fine_tune_path_trains_stops_and_resumes_to_a_gallery(tmp_path: Path) -> None:
    data = make_people(tmp_path / "people", n=4, people={"ada": PEOPLE["ada"], "bob": PEOPLE["bob"]})
    run_dir = _faces_run(str(data), tmp_path, model="test_resnet", epochs=2)
    batches = []
    stopped = fit_finetune(run_dir, [lambda e: batches.append(e) if isinstance(e, BatchEnded) else None],
                           should_stop=lambda: len(batches) >= 1, detector=WholeImageDetector())
    assert stopped.state == "stopped"
    ckpt, _ = runs.load_checkpoint(run_dir)
    assert ckpt["pos"] == 4 and "loss" in ckpt
    done = fit_finetune(run_dir, [RunRecorder(run_dir)], detector=WholeImageDetector())
    assert done.state == "completed" and len(done.history) == 2
    g, meta = gal.load(run_dir)
    assert g.people == ("ada", "bob") and g.dim == 128 and meta["calibration"]["method"].startswith("held-back")
    assert (run_dir / "checkpoints" / "best.safetensors").is_file()


def test_fine_tune_out_of_memory_halves_the_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The face fine-tune shares the other loops' recovery: a batch that runs out of memory is halved, not fatal."""
    monkeypatch.setenv("TRANSFER_STUDIO_TEST_OOM_ABOVE", "2")  # batches above 2 photos fail like an OOM
    data = make_people(tmp_path / "people", n=4, people={"ada": PEOPLE["ada"], "bob": PEOPLE["bob"]})
    run_dir = _faces_run(str(data), tmp_path, model="test_resnet", epochs=1)
    events: list = []
    done = fit_finetune(run_dir, [events.append], detector=WholeImageDetector())
    assert done.state == "completed"
    notices = [e.message for e in events if e.type == "notice" and "Out of memory" in e.message]
    assert notices and notices[-1] == "Out of memory: the batch size is now 2."


# --- privacy ------------------------------------------------------------------------------------------------------

def _text_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and p.suffix in (".json", ".jsonl", ".html", ".py", ".txt")]


def test_deleting_a_person_leaves_no_file_of_theirs(home: Path, tmp_path: Path) -> None:
    from core.data.store import dataset_dir, import_folder, load_dataset, set_task
    from core.tasks.faces.enrol import FaceCache
    from core.tasks.faces.privacy import delete_person

    data = make_people(tmp_path / "people", n=4)
    (data / "bob" / "bob_blank.png").write_bytes((data / "bob" / "bob_0.png").read_bytes()[:10])  # unreadable
    ds = import_folder(data, "Team").dataset
    set_task(ds.id, "faces")
    bob_keys = [it.sha256[:16] for it in ds.items if it.label == "bob"]
    run_dir = _faces_run(ds.id, tmp_path)
    fit_frozen(run_dir, [RunRecorder(run_dir)], detector=WholeImageDetector(), embedder=ColourEmbedder())
    cache = FaceCache(dataset_dir(ds.id) / "faces")
    assert all(cache.crop_path(k).is_file() for k in bob_keys) and len(list(cache.folder.glob("*.npy"))) == 12
    (run_dir / "exports" / "model").mkdir(parents=True)
    (run_dir / "exports" / "model" / "manifest.json").write_text('{"people": ["bob"]}')

    report = delete_person(ds.id, "bob", tmp_path / "runs")

    assert report.photos_removed == 4 and run_dir.name in report.galleries_updated
    assert "bob" not in load_dataset(ds.id).classes and len(load_dataset(ds.id).items) == 8
    g, meta = gal.load(run_dir)
    assert g.people == ("ada", "cy") and len(g.labels) == 8 and not set(g.keys) & set(bob_keys)
    assert meta["threshold"] == meta["calibration"]["threshold"]  # chosen again without bob
    for root in (home, tmp_path / "runs"):
        leftovers = [p for p in root.rglob("*") if any(k in p.name for k in bob_keys)]
        assert leftovers == []
        for path in _text_files(root):
            text = path.read_text(encoding="utf-8", errors="replace")
            assert '"bob"' not in text and "bob_" not in text, path
    assert not (run_dir / "exports" / "model").exists()
    assert len(list(cache.folder.glob("*.npy"))) == 8


def test_a_photo_needing_attention_is_named_with_its_folder_once() -> None:
    from core.tasks.faces.enrol import FacePhoto, summary_lines

    stored = FacePhoto("Laura_Bush/Laura_Bush_0002.jpg", "Laura_Bush", "/x/a.jpg", "k1", "ok", 2, note="2 faces")
    folder = FacePhoto("Laura_Bush_0003.jpg", "Laura_Bush", "/x/b.jpg", "k2", "no_face", note="no face")
    assert summary_lines([stored, folder]) == ["Laura_Bush/Laura_Bush_0002.jpg: 2 faces",
                                               "Laura_Bush/Laura_Bush_0003.jpg: no face"]
