"""`transfer-studio runs`: the Runs page's table on the command line, and stop / cancel of a run that trains."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from core import runs, trainset
from core.cli import main
from core.config import FreezeConfig, RunConfig, TrainConfig
from core.settings import runs_root
from tests.synthetic import make_colour_folders


def _json_out(capsys: pytest.CaptureFixture) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _run(folder: Path, name: str, task: str = "classification", quick: bool = False) -> Path:
    """A run folder (never started) named `name` on the colour photos in `folder`."""
    config = RunConfig("test_resnet", str(folder), FreezeConfig("all"), TrainConfig(epochs=3), pretrained=False,
                       name=name, task=task, quick=quick)
    return runs.create_run(config, trainset.resolve(str(folder)))


@pytest.fixture()
def colours(home: Path, tmp_path: Path) -> Path:
    return make_colour_folders(tmp_path / "colours", train=4, val=2)


def _training(run_dir: Path) -> subprocess.Popen:
    """Make `run_dir` look like a job the app started: a live process in its own group, its status 'running'."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    created = psutil.Process(proc.pid).create_time()
    (run_dir / "job.json").write_text(json.dumps({"pid": proc.pid, "create_time": created, "started": time.time()}))
    runs.write_status(run_dir, state="running", message="Epoch 1")
    return proc


def test_runs_list_shows_each_run_newest_first_with_its_state(colours: Path, capsys) -> None:
    first = _run(colours, "first")
    time.sleep(1.1)  # run ids sort by the second they were made
    second = _run(colours, "second", quick=True)
    runs.write_status(first, state="completed", best_val_accuracy=0.8125, seconds=12.34)
    assert main(["runs", "list", "--json"]) == 0
    rows = _json_out(capsys)["runs"]
    assert [r["run"] for r in rows] == [second.name, first.name]
    done = rows[1]
    assert (done["name"], done["status"], done["best_val_accuracy"], done["epochs"]) == ("first", "completed",
                                                                                         0.812, 3)
    assert done["dataset"] == "colours" and done["task"] == "classification"
    assert done["task_title"] == "Image classification"
    assert rows[0]["freeze"] == "quick" and rows[0]["epochs"] is None
    assert main(["runs", "list", "--limit", "1", "--json"]) == 0
    assert [r["name"] for r in _json_out(capsys)["runs"]] == ["second"]
    assert main(["runs", "list", "--task", "detection", "--json"]) == 0
    assert _json_out(capsys)["runs"] == []
    assert main(["runs", "list"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["run", "name", "task"] and "first" in table[2] and "completed" in table[2]
    assert main(["runs", "list", "--task", "nonsense"]) == 2
    assert "unknown task 'nonsense'" in capsys.readouterr().err


def test_runs_stop_asks_a_training_run_to_stop_and_cancel_ends_its_process(colours: Path, capsys) -> None:
    run_dir = _run(colours, "busy")
    proc = _training(run_dir)
    try:
        assert main(["runs", "stop", "--run", run_dir.name, "--json"]) == 0
        assert _json_out(capsys) == {"run": run_dir.name, "action": "stop", "status": "stopping"}
        assert runs.stop_requested(run_dir)
        assert main(["runs", "cancel", "--run", str(run_dir)]) == 0  # a folder works as well as an id
        assert "busy: Cancelled." in capsys.readouterr().out
        assert proc.wait(10) is not None and runs.read_status(run_dir)["state"] == "cancelled"
    finally:
        proc.kill()


def test_runs_stop_of_a_run_that_does_not_train_or_does_not_exist_explains(colours: Path, capsys) -> None:
    done = _run(colours, "done")
    runs.write_status(done, state="completed")
    assert main(["runs", "stop", "--run", done.name]) == 2
    assert "run 'done' is not training (it is completed): nothing to stop" in capsys.readouterr().err
    assert not runs.stop_requested(done)
    assert main(["runs", "cancel", "--run", "20990101-000000-000000000000"]) == 2
    err = capsys.readouterr().err
    assert "'20990101-000000-000000000000' is not a run" in err and str(runs_root()) in err
