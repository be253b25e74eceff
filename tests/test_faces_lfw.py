"""Face recognition end to end on real people (../shared/datasets/lfw_faces, read in place, never copied into the
repo): enrol through the CLI, identify, answer "unknown" for strangers, export and report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from core.cli import main
from tests.conftest import shared_dataset

pytestmark = [pytest.mark.datasets, pytest.mark.weights]


@pytest.fixture(scope="module")
def lfw_split(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[str]]:
    """3 enrolled people (5 photos each; 2 more each to probe) and 2 strangers (2 photos each), as symlink-free
    copies in a tmp folder (outside the repo)."""
    src = shared_dataset("lfw_faces")
    people = sorted(p.name for p in src.iterdir() if p.is_dir())
    root = tmp_path_factory.mktemp("lfw")
    enrol, probe = root / "enrol", root / "probe"
    for i, person in enumerate(people[:5]):
        photos = sorted((src / person).iterdir())
        (probe / person).mkdir(parents=True)
        for f in photos[5:7]:
            shutil.copy(f, probe / person / f.name)
        if i < 3:
            (enrol / person).mkdir(parents=True)
            for f in photos[:5]:
                shutil.copy(f, enrol / person / f.name)
    return enrol, probe, people[3:5]


def _json(capsys: pytest.CaptureFixture) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_enrol_identify_and_reject_strangers_from_the_command_line(lfw_split, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    from PIL import Image
    from skimage import data

    enrol, probe, strangers = lfw_split
    person = sorted(p.name for p in enrol.iterdir())[0]
    Image.fromarray(data.brick()).save(enrol / person / "not_a_face.png")
    try:
        assert main(["train", "--task", "faces", "--data", str(enrol), "--runs-dir", str(tmp_path / "runs"),
                     "--json"]) == 0
    finally:
        (enrol / person / "not_a_face.png").unlink()
    out = _json(capsys)
    assert out["model"] == "dlib_resnet_face" and len(out["people"]) == 3 and out["device"] == "cpu"
    assert out["no_face"] == [f"{person}/not_a_face.png"] and isinstance(out["threshold"], float)
    run = out["run_dir"]

    assert main(["evaluate", "--run", run, "--data", str(probe), "--json"]) == 0
    ev = _json(capsys)
    assert ev["n_images"] == 10 and ev["n_unknown_images"] == 4 and ev["strangers"] == strangers
    assert ev["unknown_rejection"] == 1.0 and ev["accuracy"] >= 5 / 6

    stranger_photo = sorted((probe / strangers[0]).iterdir())[0]
    assert main(["predict", "--run", run, str(stranger_photo), "--json"]) == 0
    faces = _json(capsys)["predictions"][0]["faces"]
    assert faces and faces[0]["label"] == "unknown" and len(faces[0]["box"]) == 4

    assert main(["export", "--run", run, "--format", "safetensors", "--out", str(tmp_path / "exp"), "--json"]) == 0
    exp = _json(capsys)
    assert exp["ok"] and exp["biometric"] is True
    manifest = json.loads((tmp_path / "exp" / "manifest.json").read_text())
    assert manifest["biometric"] is True and "biometric data" in manifest["notice"]
    assert main(["predict", "--run", str(tmp_path / "exp"), str(stranger_photo), "--json"]) == 0
    assert _json(capsys)["predictions"][0]["faces"][0]["label"] == "unknown"

    assert main(["report", "--run", run, "--json"]) == 0
    html = Path(_json(capsys)["report"]).read_text()
    assert "biometric data" in html and person in html and "strangers answered" in html


def test_a_few_people_enrolled_still_keep_strangers_out(tmp_path: Path) -> None:
    """5 people enrolled (the browser tour's set): the held-back photos of 5 people are too few strangers, and
    their threshold alone let 26 of 57 other people in. The reference strangers keep the answer honest."""
    import numpy as np

    from core.tasks.faces import gallery as gal
    from core.tasks.faces import threshold as thr
    from core.tasks.faces.detect import MTCNNDetector
    from core.tasks.faces.embed import DlibEmbedder
    from core.tasks.faces.enrol import FaceCache, detect_all

    src = shared_dataset("lfw_faces")
    enrolled = ["Hugo_Chavez", "Laura_Bush", "Serena_Williams", "Tony_Blair", "Vladimir_Putin"]
    others = [p.name for p in sorted(src.iterdir()) if p.is_dir() and p.name not in enrolled][::3]
    items = [{"path": str(f), "label": p, "name": f.name} for p in enrolled for f in sorted((src / p).iterdir())[:8]]
    items += [{"path": str(sorted((src / p).iterdir())[0]), "label": p, "name": p} for p in others]
    photos, vectors = detect_all(items, FaceCache(tmp_path / "cache"), MTCNNDetector(), (embedder := DlibEmbedder()))
    ok = [p for p in photos if p.ok and p.key in vectors]
    mine = [p for p in ok if p.label in enrolled]
    g = gal.build(enrolled, np.stack([vectors[p.key] for p in mine]), [p.label for p in mine], model=embedder.name)
    cal, _ = thr.calibrate_gallery(g, 0.01)
    strangers = g.scores(np.stack([vectors[p.key] for p in ok if p.label not in enrolled])).max(1)
    alone = int((strangers >= cal.measured_threshold).sum())
    assert alone >= 4, alone  # what the photos alone gave: many strangers named as somebody
    assert int((strangers >= cal.threshold).sum()) <= 1 and "other people's faces" in cal.note
    # "Same person?" on two photos: pairs of different people stay "different" at about the rate set
    others_emb = np.stack([vectors[p.key] for p in ok if p.label not in enrolled])
    sims = others_emb @ others_emb.T
    different = sims[np.triu_indices(len(others_emb), 1)]
    assert (different >= cal.verify_threshold).mean() <= 0.03, (different >= cal.verify_threshold).sum()
    same = np.stack([vectors[p.key] for p in mine if p.label == "Tony_Blair"])
    assert (same @ same.T)[np.triu_indices(len(same), 1)].mean() > cal.verify_threshold  # the same man still is
