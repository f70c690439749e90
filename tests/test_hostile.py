"""Hostile files and environments, a table per door: nothing read from a data file names code to run,
secrets never reach a file, the report never replaces what it did not write, one owner per directory,
and every failure is one line naming the file or key (the traceback in train.log only)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transferlab.core.errors import TransferlabError
from transferlab.core.locks import DirectoryLock
from transferlab.data.folders import read_file
from transferlab.data.image_folder import ImageFolderDataModule
from transferlab.data.manifest import Manifest
from transferlab.report.cli import main as report_main
from transferlab.run.job import train
from transferlab.run.preflight import preflight

from .conftest import REPO, compose_cfg, fork_cli, write_image_folder
from .test_report_stats import write_sweep

TINY = [
    "dataset.classes=[0,1,2]",
    "dataset.samples_per_class=10",
    "trainer.num_sanity_val_steps=0",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
]


def tree(path: Path) -> dict[str, bytes]:
    """Every file below `path` (the lock file aside), byte for byte."""
    return {
        str(p.relative_to(path)): p.read_bytes()
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def one_line(text: str) -> bool:
    return "\n" not in text.strip() and "Traceback" not in text


# ----------------------------------------------------------------------------- the report's door
def _foreign_tool(d: Path) -> None:
    (d / "0").mkdir(parents=True)
    (d / "0" / "results.json").write_text(json.dumps({"loss": 0.1, "accuracy": 0.9}))
    (d / "results.csv").write_text("a,b\n1,2\n")
    (d / "report.md").write_text("# another tool's report\n")


def _file(content: bytes):
    def build(d: Path) -> None:
        (d / "0").mkdir(parents=True)
        (d / "0" / "results.json").write_bytes(content)

    return build


NOT_A_SWEEP = [
    ("foreign tool with its own report", _foreign_tool, "not a transferlab record"),
    ("damaged JSON", _file(b'{"status": "ok", '), "not valid JSON"),
    ("binary", _file(bytes(range(256)) * 8), "binary, not JSON"),
    ("list-shaped", _file(b"[1, 2, 3]"), "a JSON list"),
    ("dict without our keys", _file(b'{"status": "ok"}'), "not a transferlab record"),
    ("empty folder", lambda d: d.mkdir(parents=True), "no results.json below it"),
]


@pytest.mark.parametrize("name,build,named", NOT_A_SWEEP, ids=[c[0] for c in NOT_A_SWEEP])
def test_the_report_refuses_a_folder_without_a_transferlab_record(name, build, named, tmp_path, capsys):
    folder = tmp_path / "sweep"
    build(folder)
    before = tree(folder)
    with pytest.raises(SystemExit) as stopped:
        report_main([str(folder)])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and err.startswith("error: ") and one_line(err), err
    assert "holds no transferlab run record" in err and named in err
    assert tree(folder) == before  # nothing written, nothing replaced
    assert not (folder / ".lock").exists()


def test_the_report_moves_aside_files_it_did_not_write_and_lists_damaged_records(tmp_path, capsys):
    folder = write_sweep(tmp_path / "sweep", {"full": [0.8, 0.9, 0.85], "scratch": [0.7, 0.75, 0.72]})
    (folder / "9").mkdir()
    (folder / "9" / "results.json").write_text("{ damaged")
    foreign = b"# my own notes, not a transferlab report\n"
    (folder / "report.md").write_bytes(foreign)
    report_main([str(folder)])
    err = capsys.readouterr().err
    assert "warning: 9/results.json left out: not valid JSON" in err
    (aside,) = folder.glob(".replaced-*")
    assert (aside / "report.md").read_bytes() == foreign  # moved, byte for byte, never overwritten
    assert "full" in (folder / "report.md").read_text()
    report_main([str(folder)])  # its own files it replaces in place: nothing more moved aside
    assert len(list(folder.glob(".replaced-*"))) == 1 and len(list(aside.iterdir())) == 1


def test_the_report_refuses_a_sweep_directory_a_live_sweep_holds(tmp_path, capsys):
    folder = write_sweep(tmp_path / "sweep", {"full": [0.8, 0.9], "scratch": [0.7, 0.75]})
    with DirectoryLock(folder, "sweep"), pytest.raises(SystemExit) as stopped:
        report_main([str(folder)])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and "in use by another sweep (pid" in err and one_line(err)
    assert not (folder / "report.md").exists()


# ----------------------------------------------------------------------------- data files never run code
def _journal_with_pruner(tmp: Path, pruner) -> Path:
    import optuna

    from transferlab.tuning.storage import open_storage

    journal = tmp / "optuna.journal"
    study = optuna.create_study(study_name="default", storage=open_storage(journal), direction="maximize")
    study.set_user_attr("pruner", pruner)
    study.ask()  # trial 0
    return journal


def test_a_study_journal_that_names_code_is_refused_and_nothing_runs(tmp_path):
    secret, copy = tmp_path / "secret.txt", tmp_path / "copy.txt"
    secret.write_text("password hashes")
    hostile = {"_target_": "shutil.copyfile", "_args_": [str(secret), str(copy)]}
    journal = _journal_with_pruner(tmp_path, hostile)
    trial = ["test=false", "tuning.phase=trial", "tuning.arm=full", "tuning.study=default", "tuning.trial=0"]
    record = train(
        compose_cfg(tmp_path / "run", [*TINY, *trial, f"tuning.storage={journal}", "tuning.prune=true"])
    )
    assert not copy.exists()  # the named function was never called
    assert record["status"] == "failed" and one_line(record["error"])
    assert "is not a pruner record" in record["error"] and str(journal) in record["error"]


def test_a_pruner_record_builds_only_optunas_own_pruners():
    import optuna

    from transferlab.tuning.pruning import pruner_from_record, pruner_record

    record = pruner_record({"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 2})
    assert record == {"name": "MedianPruner", "kwargs": {"n_startup_trials": 2}}
    assert isinstance(pruner_from_record(record, "here"), optuna.pruners.MedianPruner)
    for bad in (
        {"name": "os.system", "kwargs": {}},
        {"name": "MedianPruner", "kwargs": {"n_startup_trials": {"_target_": "os.getcwd"}}},
        {"name": "MedianPruner", "kwargs": {}, "_target_": "x"},
        "MedianPruner",
    ):
        with pytest.raises(TransferlabError, match="here"):
            pruner_from_record(bad, "here")
    with pytest.raises(TransferlabError, match="hydra.sweeper.pruner._target_=shutil.copyfile"):
        pruner_record({"_target_": "shutil.copyfile"})


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """A finished tiny run: its exported backbone, head and backbone.json."""
    out = tmp_path_factory.mktemp("exported") / "run"
    record = train(compose_cfg(out, [*TINY]))
    assert record["status"] == "ok", record["error"]
    return out


def test_an_exported_runs_metadata_that_names_code_is_refused(exported, tmp_path):
    hostile = tmp_path / "hostile_run"
    shutil.copytree(exported, hostile, ignore=shutil.ignore_patterns("checkpoints", ".lock"))
    meta = json.loads((hostile / "backbone.json").read_text())
    marker = tmp_path / "was_called"
    meta["dataset_config"] = {"_target_": "pathlib.Path.touch", "_args_": [str(marker)]}
    (hostile / "backbone.json").write_text(json.dumps(meta))
    record = train(compose_cfg(tmp_path / "run", [*TINY, f"backbone.pretrained={hostile}"]))
    assert not marker.exists()
    assert record["status"] == "failed" and one_line(record["error"])
    assert "backbone.json names _target_='pathlib.Path.touch'" in record["error"]


def test_a_candidates_backbone_kwargs_that_name_code_are_refused(exported, tmp_path):
    """A run directory given to the selection: its backbone.json kwargs become the validation sweep's
    backbone.kwargs, which Hydra instantiates recursively, so a `_target_` there is refused."""
    from omegaconf import OmegaConf

    from transferlab.sources.candidates import resolve

    hostile = tmp_path / "hostile_run"
    shutil.copytree(exported, hostile, ignore=shutil.ignore_patterns("checkpoints", ".lock"))
    meta = json.loads((hostile / "backbone.json").read_text())
    meta["kwargs"] = {"x": {"_target_": "builtins.print", "_args_": ["called"]}}
    (hostile / "backbone.json").write_text(json.dumps(meta))
    base = OmegaConf.create({"name": "simple_cnn", "pretrained": False, "kwargs": {}})
    with pytest.raises(TransferlabError, match=r"backbone.json kwargs names _target_='builtins.print'"):
        resolve([str(hostile)], base)
    assert resolve([str(exported)], base)[0].backbone["name"] == meta["architecture"]  # the real one passes


WRONG_KIND = [
    ("optimizer._target_=shutil.copyfile", "optimizer._target_=shutil.copyfile is a function"),
    ("optimizer._target_=collections.OrderedDict", "is the class collections.OrderedDict, not a torch.optim"),
    ("+callbacks.x._target_=os.getcwd", "callbacks.x._target_=os.getcwd is a function"),
    ("strategy._target_=torch.nn.Linear", "not a transferlab.strategies.base.TransferStrategy"),
    ("scheduler._target_=time.sleep", "scheduler._target_=time.sleep is a function"),
]


@pytest.mark.parametrize("override,named", WRONG_KIND)
def test_a_target_of_the_wrong_kind_is_refused_before_it_is_called(override, named, tmp_path):
    record = train(compose_cfg(tmp_path / "run", [*TINY, override]))
    assert record["status"] == "failed" and named in record["error"] and one_line(record["error"])
    assert "traceback" not in record


# ----------------------------------------------------------------------------- secrets
SECRET = "s3cr3t-value-0123456789"
SECRET_CASES = [
    ("experiment_name=${oc.env:WANDB_API_KEY}", "${oc.env:WANDB_API_KEY}"),
    ("+x=${oc.env:MY_SERVICE_TOKEN}", "MY_SERVICE_TOKEN looks like a secret"),
    ("logger.csv.name=${oc.env:DB_PASSWORD}", "DB_PASSWORD looks like a secret"),
    (f"experiment_name=run-{SECRET}", "holds the value of $WANDB_API_KEY"),
    (f"+tags=[{SECRET}]", "holds the value of $WANDB_API_KEY"),
]


@pytest.mark.parametrize("override,named", SECRET_CASES)
def test_a_secret_is_refused_before_anything_is_written(override, named, tmp_path, monkeypatch):
    for name in ("WANDB_API_KEY", "MY_SERVICE_TOKEN", "DB_PASSWORD"):
        monkeypatch.setenv(name, SECRET)
    out = tmp_path / "run"
    with pytest.raises(TransferlabError) as refused:
        preflight([override, f"hydra.run.dir={out}"])
    assert named in str(refused.value) and SECRET not in str(refused.value) and one_line(str(refused.value))
    assert not out.exists()


def test_a_secret_in_a_users_config_dir_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    (tmp_path / "conf" / "experiment").mkdir(parents=True)
    (tmp_path / "conf" / "experiment" / "mine.yaml").write_text(
        "# @package _global_\nexperiment_name: ${oc.env:HF_TOKEN}\n"
    )
    with pytest.raises(TransferlabError, match="experiment_name=.*HF_TOKEN looks like a secret"):
        preflight(["--config-dir", str(tmp_path / "conf"), "experiment=mine"])


def test_a_job_never_resolves_a_secret_even_without_the_preflight(tmp_path, monkeypatch):
    """Jobs a sweeper or SLURM starts do not pass the pre-flight: the resolver itself refuses."""
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    cfg = compose_cfg(tmp_path / "run", [*TINY, "+note=${oc.env:WANDB_API_KEY}"])
    record = train(cfg)
    assert record["status"] == "failed" and "WANDB_API_KEY looks like a secret" in record["error"]
    assert not any(SECRET.encode() in data for data in tree(tmp_path).values())
    ordinary = compose_cfg(tmp_path / "run2", [*TINY, "+note=${oc.env:HOME}"])
    assert ordinary.note == os.environ["HOME"]  # other variables still resolve


# ----------------------------------------------------------------------------- one owner per directory
def test_a_second_sweep_into_a_live_sweep_directory_is_refused_before_any_job(tmp_path):
    sweep = tmp_path / "sweep"
    with DirectoryLock(sweep, "sweep"):  # a live sweep holds its directory
        out = fork_cli("-m", "seed=3,4", "trainer.max_epochs=1", f"hydra.sweep.dir={sweep}", cwd=REPO)
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    assert out.stderr.strip().splitlines()[-1].startswith(f"error: {sweep} is in use by another sweep (pid")
    assert not any(sweep.glob("*/results.json")) and not (sweep / "0").exists()


def test_multirun_flag_after_overrides_says_to_put_it_first(tmp_path):
    with pytest.raises(TransferlabError, match="-m comes after the override seed=1: put it first"):
        preflight(["seed=1", "-m", "strategy=full,scratch"])


# ----------------------------------------------------------------------------- a user's own classes
USER_CODE = {
    "door_user.py": """
import torch
from pydantic import BaseModel, ConfigDict, field_validator
from transferlab.strategies import TransferStrategy


class Strict(TransferStrategy):
    class Settings(BaseModel):
        model_config = ConfigDict(extra="forbid")
        name: str
        train_bn: bool = False
        backbone_lr_mult: float = 1.0
        head_lr_mult: float = 1.0
        layer_decay: float = 1.0
        width: int = 1

        @field_validator("width")
        @classmethod
        def odd(cls, value):
            raise RuntimeError("width must be odd")
""",
    "door_broken.py": "import a_package_nobody_installed\nclass S: pass\n",
}
PRECISION = "torchmetrics.classification.MulticlassPrecision"
USER_DOOR = [
    (
        "a Settings validator that raises RuntimeError",
        ["strategy._target_=door_user.Strict", "+strategy.width=2"],
        "strategy: checking the settings of door_user.Strict raised RuntimeError: width must be odd",
    ),
    (
        "a module that fails to import",
        ["strategy._target_=door_broken.S"],
        "strategy._target_=door_broken.S: importing it failed (ModuleNotFoundError: No module named "
        "'a_package_nobody_installed')",
    ),
    (
        "a nested source of the wrong kind",
        ["dataset._target_=transferlab.data.DataModule", "+dataset.source._target_=collections.OrderedDict"],
        "dataset.source._target_=collections.OrderedDict is the class collections.OrderedDict, not a "
        "transferlab.data.sources.DataSource",
    ),
    (
        "a metric named like a logged one",
        [f"+metrics.samples._target_={PRECISION}"],
        "metrics.samples: the name",
    ),
    ("a metric named acc", [f"+metrics.acc._target_={PRECISION}"], "metrics.acc: the name is taken"),
    ("a metric with a slash", ["+metrics={a/b: {_target_: " + PRECISION + "}}"], "metrics.a/b: the name"),
    ("a metric without _target_", ["+metrics.p.average=macro"], "a metric is a config node with a _target_"),
    ("a metric that is a number", ["+metrics.p=3"], "metrics.p=3: a metric is a config node"),
    ("metrics that are a number", ["metrics=3"], "metrics=3: the metrics config maps names to metric nodes"),
]


@pytest.fixture(scope="module")
def user_code(tmp_path_factory):
    folder = tmp_path_factory.mktemp("user_code")
    for name, text in USER_CODE.items():
        (folder / name).write_text(text)
    sys.path.insert(0, str(folder))
    yield folder
    sys.path.remove(str(folder))


@pytest.mark.parametrize("name,overrides,named", USER_DOOR, ids=[c[0] for c in USER_DOOR])
def test_a_users_class_or_metric_that_cannot_work_is_refused_at_the_door(
    name, overrides, named, user_code, tmp_path
):
    out = tmp_path / "run"
    with pytest.raises(TransferlabError) as caught:
        preflight(["backbone=simple_cnn", *overrides, f"hydra.run.dir={out}"])
    assert named in str(caught.value) and one_line(str(caught.value))
    assert not out.exists()


# ----------------------------------------------------------------------------- the data folder
def _png16(path: Path) -> np.ndarray:
    values = (np.arange(32 * 32).reshape(32, 32) * 64).astype(np.uint16)
    Image.fromarray(values).save(path)
    return values


def test_wide_images_are_rescaled_not_clipped(tmp_path):
    values = _png16(tmp_path / "g16.png")
    rgb = np.asarray(read_file(tmp_path / "g16.png"))
    assert np.abs(rgb[..., 0].astype(float) - values / 257).max() <= 0.5 + 1e-9  # 0-65535 -> 0-255
    assert (rgb == 255).mean() < 0.01  # PIL's own convert made 99% of it white
    floats = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    Image.fromarray(floats).save(tmp_path / "f.tif")
    assert np.asarray(read_file(tmp_path / "f.tif"))[..., 0].max() == 255
    Image.fromarray(np.full((4, 4), -7, np.int32)).save(tmp_path / "neg.tif")
    with pytest.raises(TransferlabError, match=r"neg.tif.*outside 0-1, 0-255 and 0-65535"):
        read_file(tmp_path / "neg.tif")


def _datamodule(root: Path, cache: Path, **kwargs) -> ImageFolderDataModule:
    dm = ImageFolderDataModule(
        root=str(root), image_size=16, classes=None, manifest_dir=str(cache), num_workers=0, **kwargs
    )
    dm.setup("fit")
    return dm


def test_hidden_and_appledouble_files_are_skipped_and_counted(tmp_path, caplog):
    root = write_image_folder(tmp_path / "images", classes=("a", "b"), per_class=4, test_per_class=2, size=16)
    (root / "train" / "a" / "._a_000.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # not an image
    shutil.copy(root / "train" / "a" / "a_000.png", root / "train" / "a" / ".hidden.png")
    (root / "train" / ".DS_Store").write_bytes(b"\x00")
    (root / "train" / "__MACOSX").mkdir()
    with caplog.at_level("INFO"):
        dm = _datamodule(root, tmp_path / "cache")
    assert sum(dm.describe()["sizes"][s] for s in ("train", "val")) == 8
    assert "skipped 2 hidden file(s)" in caplog.text


def test_a_newline_in_a_class_name_and_a_symlink_loop_work_run_after_run(tmp_path, caplog):
    root = write_image_folder(tmp_path / "images", classes=("a", "b"), per_class=4, test_per_class=2, size=16)
    for split in ("train", "test"):
        (root / split / "b").rename(root / split / "b\nc")
    os.symlink(root / "train", root / "train" / "a" / "loop")  # a folder that contains itself
    first = _datamodule(root, tmp_path / "cache").describe()
    with caplog.at_level("WARNING"):
        second = _datamodule(root, tmp_path / "cache").describe()  # warm: read back from the manifest
    assert first["split_sha256"] == second["split_sha256"] and "b\nc" in first["class_names"]
    assert "Symbolic link loop" in caplog.text


def _damage(column: str, value):
    def damage(path: Path) -> None:
        with np.load(path) as z:
            data = dict(z)
        data[column] = value(data[column])
        np.savez(path, **data)

    return damage


DAMAGED_MANIFESTS = [
    ("wrong dtype", _damage("size", lambda a: a.astype(np.float32))),
    ("wrong length", _damage("mtime_ns", lambda a: a[:-1])),
    ("wrong column shape", _damage("sha256", lambda a: a.reshape(-1))),
    ("names cut short", _damage("keys", lambda a: a[: len(a) // 2])),
    ("names not bytes", _damage("keys", lambda a: a.astype(np.int64))),
    ("not a zip", lambda p: p.write_bytes(b"garbage")),
]


@pytest.mark.parametrize("name,damage", DAMAGED_MANIFESTS, ids=[c[0] for c in DAMAGED_MANIFESTS])
def test_a_damaged_manifest_is_rebuilt_not_fatal(name, damage, tmp_path, caplog):
    root = write_image_folder(tmp_path / "images", classes=("a", "b"), per_class=3, test_per_class=1, size=16)
    first = _datamodule(root, tmp_path / "cache").describe()
    (manifest,) = (tmp_path / "cache").glob("*.npz")
    damage(manifest)
    with caplog.at_level("WARNING"):
        again = _datamodule(root, tmp_path / "cache").describe()
    assert again["split_sha256"] == first["split_sha256"] and "rebuilding it" in caplog.text
    third = Manifest(root, tmp_path / "cache")
    third.digests(sorted(str(p) for p in root.rglob("*.png")))
    assert third.read == 0  # rewritten whole by the second set-up


def test_a_truncated_jpeg_that_passes_verification_fails_in_one_line_from_a_worker(tmp_path):
    root = write_image_folder(tmp_path / "images", classes=("a", "b"), per_class=6, test_per_class=2, size=32)
    bad = root / "train" / "a" / "broken.jpg"
    Image.open(root / "train" / "a" / "a_000.png").convert("RGB").save(bad, quality=95)
    bad.write_bytes(bad.read_bytes()[:-200])  # the header and most scans are intact
    folder = ["dataset=image_folder", f"dataset.root={root}", "dataset.classes=null", "dataset.image_size=16"]
    cfg = compose_cfg(
        tmp_path / "run", [*folder, "dataset.num_workers=1", "dataset.verify=full", "dataset.batch_size=64"]
    )
    record = train(cfg)
    assert record["status"] == "failed" and one_line(record["error"]), record["error"]
    assert f"Cannot read image {bad}" in record["error"] and "worker" not in record["error"]
    assert "traceback" not in record


def test_a_replaced_hf_arrow_cache_is_not_trusted(tmp_path):
    from transferlab.data.hf import HFDataModule

    def hf(root: Path) -> HFDataModule:
        dm = HFDataModule(
            path=str(root),
            image_size=16,
            classes=None,
            hf_cache_dir=str(tmp_path / "hf"),
            manifest_dir=str(tmp_path / "cache"),
            num_workers=0,
        )
        dm.setup("fit")
        return dm

    mine = write_image_folder(tmp_path / "mine", classes=("a", "b"), per_class=4, test_per_class=2, size=16)
    other = write_image_folder(
        tmp_path / "other", classes=("x", "y", "z"), per_class=7, test_per_class=3, size=16
    )
    first, foreign = hf(mine), hf(other)
    record_dir = tmp_path / "hf" / "transferlab"

    def record_of(root: Path) -> dict:
        name = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
        return json.loads((record_dir / f"{name}.json").read_text())

    mine_record, other_record = record_of(mine), record_of(other)
    for split, files in mine_record["splits"].items():  # swap in another dataset's valid Arrow file
        shutil.copy(other_record["splits"].get(split, other_record["splits"]["train"])[0], files[0])
    again = hf(mine)
    assert again.loaded_from == "load_dataset"
    assert again.describe()["sizes"] == first.describe()["sizes"] != foreign.describe()["sizes"]


# ----------------------------------------------------------------------------- disks that refuse
def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    return done.returncode == 0


@pytest.fixture
def small_disk(tmp_path):
    disk = tmp_path / "disk"
    if os.geteuid() != 0 or not _mount_tmpfs(disk, "40m"):
        pytest.skip("needs root to mount a small tmpfs")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.mark.slow
def test_a_disk_that_fills_during_training_ends_in_one_line_and_a_final_record(small_disk, tmp_path):
    out = small_disk / "run"
    done = fork_cli(
        *TINY,
        "trainer.max_epochs=2",
        "paths.disk_reserve_mb=0",
        f"hydra.run.dir={out}",
        cwd=REPO,
        env={"TRANSFERLAB_FILL_DISK_AT": f"train_step@2:{small_disk}"},
    )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: No space left on the device") and "resume=true" in last
    assert "Logging error" not in done.stderr and "Traceback" not in done.stderr
    record = json.loads((out / "results.json").read_text())
    assert record["status"] == "failed" and record["error"] == last.removeprefix("error: ")


def test_a_read_only_cache_dir_is_named(small_disk, tmp_path):
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    record = train(compose_cfg(tmp_path / "run", [*TINY, f"paths.cache_dir={small_disk / 'cache'}"]))
    assert record["status"] == "failed" and one_line(record["error"])
    assert "paths.cache_dir must be writable" in record["error"] and str(small_disk) in record["error"]


def test_wandb_online_without_a_key_says_how_to_stay_offline(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))  # no stored login
    record = train(compose_cfg(tmp_path / "run", [*TINY, "logger=wandb", "logger.wandb.mode=online"]))
    assert record["status"] == "failed" and one_line(record["error"])
    assert "logger.wandb.mode=offline" in record["error"] and "wandb login" in record["error"]


def test_ctrl_c_during_the_report_leaves_whole_files_and_one_line(tmp_path, capsys):
    import signal
    import threading

    folder = write_sweep(
        tmp_path / "sweep", {f"arm{i}": [0.5 + 0.01 * i + 0.001 * s for s in range(5)] for i in range(6)}
    )
    for delay in (0.3, 0.1, 0.02):
        timer = threading.Timer(delay, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        try:
            report_main([str(folder)])
        except SystemExit as stopped:
            err = capsys.readouterr().err
            assert stopped.code == 130 and one_line(err) and err.startswith("error: interrupted"), err
            break
        finally:
            timer.join()
    else:
        pytest.skip("the report finished before every interrupt")
    assert not list(folder.glob("**/.*.tmp"))  # no half-written file left behind
    for png in folder.glob("*.png"):
        Image.open(png).verify()
    if (folder / "results.csv").exists():
        import pandas as pd

        assert len(pd.read_csv(folder / "results.csv")) == 30
