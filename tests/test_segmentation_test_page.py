"""The segmentation Test page: moving the opacity slider re-draws the masks; it does not run the model again."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.test_segmentation_core import make_set

ROOT = Path(__file__).resolve().parent.parent


def test_opacity_changes_do_not_predict_again(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core import runs
    from core.config import FreezeConfig, RunConfig
    from core.settings import runs_root
    from core.tasks.segmentation import TASK
    from core.tasks.segmentation.predict import SegPredictor

    root = make_set(tmp_path / "ds", n_train=4, n_val=2)
    tc = replace(TASK.default_train(), epochs=1, batch_size=4, lr=3e-3, train_size=64)
    cfg = RunConfig("test_efficientnet", str(root), FreezeConfig("all"), tc, task="segmentation", pretrained=False)
    run_dir = runs.create_run(cfg, TASK.resolve_data(str(root), 0, arch="fpn"), runs_root())
    assert TASK.fit(run_dir).state == "completed"
    calls: list[str] = []
    real = SegPredictor.predict

    def counted(self, source, name=""):
        calls.append(name)
        return real(self, source, name)

    monkeypatch.setattr(SegPredictor, "predict", counted)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.session_state["draft_task"] = "segmentation"
    at.session_state["draft_run_id"] = run_dir.name
    at.run()
    at.switch_page("views/segmentation_test.py").run()
    photo = next((root / "val" / "images").iterdir()).read_bytes()
    at.file_uploader(key="seg_test_files").set_value([("street.jpg", photo, "image/jpeg")]).run()
    assert not at.exception and calls == ["street.jpg"]
    for value in (0.2, 0.9):
        at.slider(key="seg_test_opacity").set_value(value).run()
        assert not at.exception
    assert calls == ["street.jpg"]


def test_class_shares_read_as_percentages() -> None:
    """The legend showed shares as 0.009; people read 0.9 %."""

    def page() -> None:
        from views.segmentation_results import legend

        legend(["road", "car"], [(10, 10, 10), (200, 0, 0)], {"road": 0.991, "car": 0.009}, key="t")

    at = AppTest.from_function(page).run()
    assert not at.exception
    assert '"percent"' in at.dataframe[0].proto.columns
