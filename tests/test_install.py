"""The wheel works on its own: configs inside it, from an empty directory, offline."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

from .conftest import REPO

pytestmark = pytest.mark.slow


def run(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    out = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return out


def test_the_wheel_runs_from_an_empty_directory(tmp_path):
    run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        str(tmp_path / "dist"),
        str(REPO),
        cwd=tmp_path,
    )
    (wheel,) = (tmp_path / "dist").glob("transferlab-*.whl")
    run(sys.executable, "-m", "venv", str(tmp_path / "venv"), cwd=tmp_path)
    python = tmp_path / "venv" / "bin" / "python"
    site = Path(
        run(
            str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path
        ).stdout.strip()
    )
    # The dependencies come from the test environment (.pth files there, such as an editable install of
    # transferlab itself, are not read); transferlab itself only from the wheel.
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel), cwd=tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    where = run(
        str(python), "-c", "import transferlab, os; print(os.path.dirname(transferlab.__file__))", cwd=empty
    )
    assert (
        where.stdout.strip().startswith(str(site))
        and Path(where.stdout.strip(), "conf", "train.yaml").is_file()
    )
    started = time.perf_counter()
    job = run(str(python), "-m", "transferlab.train", "--cfg", "job", "strategy=partial", cwd=empty)
    assert "name: partial" in job.stdout and time.perf_counter() - started < 10
    run(
        str(python),
        "-m",
        "transferlab.train",
        "debug=fast",
        "hydra.run.dir=run",
        "trainer.enable_progress_bar=false",
        cwd=empty,
    )
    assert json.loads((empty / "run" / "results.json").read_text())["status"] == "ok"
    sweepers = run(str(python), "-m", "transferlab.train", "--info", "plugins", cwd=empty).stdout
    assert "TransferlabOptunaSweeper" in sweepers
