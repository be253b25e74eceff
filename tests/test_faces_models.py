"""The real face models (weights inside installed packages): MTCNN finds the astronaut's one face in the right place
and none in a texture; a photo without a face is reported by name; dlib embeds the same face close to itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

pytestmark = pytest.mark.weights


@pytest.fixture(scope="module")
def detector():
    from core.tasks.faces.detect import MTCNNDetector, mtcnn_weights_dir

    if not (mtcnn_weights_dir() / "onet.pt").is_file():
        pytest.skip("facenet-pytorch's MTCNN weights are not installed")
    return MTCNNDetector()


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.astronaut())


def test_the_astronaut_has_one_face_in_the_right_place_and_a_texture_none(detector, astronaut) -> None:
    from skimage import data

    faces = detector.detect(astronaut)
    assert len(faces) == 1
    x1, y1, x2, y2 = faces[0].box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    assert 190 < cx < 260 and 80 < cy < 150 and 50 < x2 - x1 < 140  # her face, upper middle of the 512 px photo
    left_eye, right_eye = faces[0].landmarks[:2]
    assert left_eye[0] < right_eye[0] and abs(left_eye[1] - right_eye[1]) < 15
    assert detector.detect(Image.fromarray(data.brick()).convert("RGB")) == []
    assert detector.detect(Image.fromarray(data.grass()).convert("RGB")) == []


def test_alignment_puts_the_eyes_on_the_template(detector, astronaut) -> None:
    from core.tasks.faces.detect import CROP_SIZE, align, template

    face = detector.detect(astronaut)[0]
    crop = align(astronaut, face)
    assert crop.size == (CROP_SIZE, CROP_SIZE)
    again = detector.detect(crop.resize((256, 256)))
    assert again, "the aligned crop still shows a face"
    eyes = np.array(again[0].landmarks[:2]) * CROP_SIZE / 256
    assert np.abs(eyes - template()[:2]).max() < 8


def test_a_photo_with_no_face_is_reported_by_name(detector, astronaut, tmp_path: Path) -> None:
    from skimage import data

    from core.tasks.faces.enrol import FaceCache, detect_all, summary_lines

    astronaut.save(tmp_path / "eileen.png")
    Image.fromarray(data.brick()).save(tmp_path / "wall_texture.png")
    items = [{"path": str(tmp_path / n), "label": "eileen", "name": n} for n in ("eileen.png", "wall_texture.png")]
    photos, _ = detect_all(items, FaceCache(tmp_path / "cache"), detector)
    assert [p.status for p in photos] == ["ok", "no_face"]
    assert summary_lines(photos) == ["eileen/wall_texture.png: no face found"]


def test_dlib_embeds_a_mirrored_photo_of_the_same_face_close_to_it(detector, astronaut) -> None:
    from core.tasks.faces.detect import align
    from core.tasks.faces.embed import DlibEmbedder, dlib_files

    if not all(p.is_file() for p in dlib_files().values()):
        pytest.skip("face-recognition-models files are missing")
    emb = DlibEmbedder()
    face = detector.detect(astronaut)[0]
    a = emb.embed(astronaut, [face], [align(astronaut, face)])[0]
    mirrored = ImageOps.mirror(astronaut)
    fm = detector.detect(mirrored)[0]
    b = emb.embed(mirrored, [fm], [align(mirrored, fm)])[0]
    assert a.shape == (128,) and abs(np.linalg.norm(a) - 1) < 1e-5
    assert float(a @ b) > 0.95
