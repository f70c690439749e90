"""Every door guarded: bad input is one clear line naming the key, never a traceback, and an earlier
run's directory is byte-for-byte what it was. A table of hostile inputs, then Hypothesis fuzzing."""

from __future__ import annotations

import hashlib
import json
import shlex
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from transferlab.core import schema
from transferlab.core.errors import TransferlabError
from transferlab.run.job import train
from transferlab.run.preflight import preflight
from transferlab.train import main

from .conftest import REPO, compose_cfg, fork_cli, run_cli, write_image_folder

# The earlier run every case is pointed at: it must come out of the table untouched.
BASE = [
    "dataset.classes=[0,1,2]",
    "dataset.samples_per_class=10",
    "trainer.max_epochs=2",
    "trainer.num_sanity_val_steps=0",
    "trainer.enable_progress_bar=false",
]

# (command-line arguments, what the one-line error must name). The run directory is the earlier run's
# unless the case names its own; {file} is a plain file, {tmp} a scratch folder.
REFUSED = [
    # trainer: wrong types and values out of range
    ("trainer.max_epochs=abc", "trainer.max_epochs=abc: must be a whole number"),
    ("trainer.max_epochs=0", "trainer.max_epochs=0"),
    ("trainer.max_epochs=-5", "trainer.max_epochs=-5"),
    ("trainer.min_epochs=-1", "trainer.min_epochs=-1"),
    ("trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches=0"),
    ("trainer.log_every_n_steps=abc", "trainer.log_every_n_steps=abc"),
    ("trainer.gradient_clip_val=-1", "trainer.gradient_clip_val=-1"),
    ("trainer.num_nodes=0", "trainer.num_nodes=0"),
    ("trainer.limit_train_batches=-1", "trainer.limit_train_batches=-1"),
    ("trainer.limit_val_batches=abc", "trainer.limit_val_batches=abc: must be a number"),
    ("trainer.check_val_every_n_epoch=0", "trainer.check_val_every_n_epoch=0"),
    ("trainer.num_sanity_val_steps=-2", "trainer.num_sanity_val_steps=-2"),
    ("trainer.precision=banana", "trainer.precision=banana"),
    ("trainer.devices=0", "trainer.devices=0"),
    ("trainer.accelerator=tpux", "trainer.accelerator=tpux"),
    ("trainer.deterministic=maybe", "trainer.deterministic=maybe"),
    ("trainer.fast_dev_run=-1", "trainer.fast_dev_run=-1"),
    # dataset
    ("dataset.batch_size=abc", "dataset.batch_size=abc"),
    ("dataset.batch_size=0", "dataset.batch_size=0"),
    ("dataset.eval_batch_size=0", "dataset.eval_batch_size=0"),
    ("dataset.image_size=-3", "dataset.image_size=-3"),
    ("dataset.image_size=60000", "GiB, this machine has"),
    ("dataset.val_fraction=0", "dataset.val_fraction=0"),
    ("dataset.val_fraction=1.5", "dataset.val_fraction=1.5"),
    ("dataset.samples_per_class=0", "dataset.samples_per_class=0"),
    ("dataset.classes=[3]", "dataset.classes=[3]: needs at least 2"),
    ("dataset.classes=abc", "dataset.classes=abc"),
    ("dataset.augment.zoom=[2,1]", "dataset.augment.zoom=[2,1]"),
    ("dataset.augment.hflip=2", "dataset.augment.hflip=2"),
    ("dataset.augment.rotation=abc", "dataset.augment.rotation=abc"),
    ("dataset.augment.enabled=maybe", "dataset.augment.enabled=maybe"),
    ("dataset.num_workers=-1", "dataset.num_workers=-1"),
    ("dataset.verify=maybe", "dataset.verify=maybe"),
    ("dataset.recheck=sometimes", "dataset.recheck=sometimes"),
    ("dataset.decoder=cv2", "dataset.decoder=cv2"),
    ("dataset.mean=[1,2]", "dataset.mean=[1,2]: has too few values"),
    ("dataset=image_folder", "dataset.root is required"),
    ("dataset=image_folder dataset.root={tmp}/nowhere", "dataset.root={tmp}/nowhere: no such directory"),
    # optimizer, head
    ("optimizer.lr=-1", "optimizer.lr=-1: must be > 0"),
    ("optimizer.lr=0", "optimizer.lr=0"),
    ("optimizer.lr=abc", "optimizer.lr=abc: must be a number"),
    ("optimizer.weight_decay=-0.1", "optimizer.weight_decay=-0.1"),
    ("head.dropout=1.5", "head.dropout=1.5"),
    ("head.dropout=abc", "head.dropout=abc"),
    ("head.label_smoothing=1", "head.label_smoothing=1"),
    # strategy
    ("strategy.backbone_lr_mult=0", "strategy.backbone_lr_mult=0"),
    ("strategy.head_lr_mult=-2", "strategy.head_lr_mult=-2"),
    ("strategy.train_bn=maybe", "strategy.train_bn=maybe"),
    ("strategy.layer_decay=1.5", "strategy.layer_decay=1.5"),
    ("strategy=partial strategy.trainable_stages=-1", "strategy.trainable_stages=-1"),
    ("strategy=partial strategy.trainable_stages=abc", "strategy.trainable_stages=abc"),
    ("strategy=lora strategy.rank=0", "strategy.rank=0"),
    ("strategy=gradual_unfreeze strategy.unfreeze_every=0", "strategy.unfreeze_every=0"),
    ("strategy=lp_ft strategy.probe_epochs=-1", "strategy.probe_epochs=-1"),
    ("strategy=knn strategy.k=0", "strategy.k=0"),
    ("strategy=multitask strategy.source_weight=-1", "strategy.source_weight=-1"),
    # backbone
    ("backbone.in_chans=0", "backbone.in_chans=0"),
    ("+backbone.kwargs.num_classes=5", "num_classes is set by transferlab"),
    ("backbone.name=resnet1", "Unknown backbone 'resnet1' (backbone.name). Did you mean"),
    (
        "backbone.pretrained={tmp}/missing.safetensors",
        "backbone.pretrained={tmp}/missing.safetensors: no such",
    ),
    ("backbone.pretrained={file}", "unsupported weights file type"),
    # scheduler, callbacks, regularizer, tuning, report, top level
    ("scheduler.warmup_fraction=1.5", "scheduler.warmup_fraction=1.5"),
    ("scheduler.min_lr_ratio=-1", "scheduler.min_lr_ratio=-1"),
    ("callbacks.early_stopping.patience=3", "choose callbacks=early_stopping"),
    ("callbacks=early_stopping callbacks.early_stopping.patience=-1", "callbacks.early_stopping.patience=-1"),
    ("callbacks.model_checkpoint.save_top_k=-2", "callbacks.model_checkpoint.save_top_k=-2"),
    ("callbacks.model_checkpoint.every_n_epochs=abc", "callbacks.model_checkpoint.every_n_epochs=abc"),
    ("regularizer=l2_sp regularizer.alpha=-1", "regularizer.alpha=-1"),
    ("regularizer=bss regularizer.k=0", "regularizer.k=0"),
    ("tuning.n_trials=0", "tuning.n_trials=0"),
    ("tuning.n_jobs=abc", "tuning.n_jobs=abc"),
    ("tuning.final_seeds=abc", "tuning.final_seeds=abc"),
    ("report.alpha=2", "report.alpha=2"),
    ("report.test=anova", "report.test=anova"),
    ("seed=-1", "seed=-1: must be >= 0"),
    ("seed=abc", "seed=abc"),
    ("seed=99999999999", "seed=99999999999: must be <= 4294967295"),
    ("optimized_mode=maximize", "optimized_mode=maximize"),
    ("optimized_metric=test/acc", "optimized_metric=test/acc: is a test metric"),
    ("optimized_metric=loss", "optimized_metric=loss: is not a validation metric"),
    ("resume=maybe", "resume=maybe"),
    ("test=abc", "test=abc"),
    ("overwrite=abc", "overwrite=abc"),
    ("ckpt_path={tmp}/gone.ckpt", "ckpt_path={tmp}/gone.ckpt: no such file"),
    # typos in keys and options
    ("optimizer.learning_rate=0.1", "Did you mean optimizer.lr"),
    ("trainer.max_epoch=3", "Did you mean trainer.max_epochs"),
    ("traner.max_epochs=1", "traner.max_epochs"),
    ("strategy=ful", "strategy=ful: no such option. Did you mean full?"),
    ("dataset=digts", "Did you mean digits?"),
    ("backbone=resnet1", "Did you mean resnet18?"),
    ("trainer=gpux", "Did you mean gpu?"),
    ("logger=wandbx", "Did you mean wandb?"),
    ("regularizer=ewc", "regularizer=ewc: no such option"),
    ("experiment=nope", "experiment=nope: no such option"),
    ("optimizer.lr=[0.1", "optimizer.lr=[0.1"),
    # sweeps: every job is checked before the first starts
    ("-m optimizer.lr=0.1,-1 hydra.sweep.dir={tmp}/sweep", "optimizer.lr=-1: must be > 0"),
    ("strategy=full,partial", "strategy=full,partial is a sweep"),
    # output directories
    ("", "already holds a run"),
    ("resume=true optimizer.lr=0.5", "optimizer.lr"),
    ("resume=true trainer.max_epochs=1", "trainer.max_epochs"),
    ("hydra.run.dir={file}/run", "hydra.run.dir={file}/run"),
    ("hydra.run.dir=/proc/transferlab-run", "hydra.run.dir=/proc/transferlab-run"),
    ("-m optimizer.lr=0.1,0.2 hydra.sweep.dir={file}/sweep", "hydra.sweep.dir={file}/sweep"),
]


def files(root: Path) -> dict[Path, bytes]:
    """A run's files and bytes (the directory's lock file is not part of the run)."""
    return {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file() and p.name != ".lock"}


def tree_digest(root: Path) -> str:
    """One sha256 over every file's path and bytes under `root`."""
    digest = hashlib.sha256()
    for path, data in sorted(files(root).items()):
        digest.update(str(path).encode() + b"\0" + data)
    return digest.hexdigest()


@pytest.fixture(scope="module")
def earlier(tmp_path_factory) -> tuple[Path, str]:
    """A finished run (checkpoints, logs, results) and the digest of its directory."""
    out = tmp_path_factory.mktemp("validation") / "earlier"
    record = train(compose_cfg(out, BASE, fast=False))
    assert record["status"] == "ok", record["error"]
    return out, tree_digest(out)


@pytest.fixture(scope="module")
def places(tmp_path_factory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("places")
    (tmp / "plain-file").write_text("not a directory\n")
    return {"tmp": str(tmp), "file": str(tmp / "plain-file")}


def run_main(argv: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["transferlab-train", *argv])
    with pytest.raises(SystemExit) as stop:
        main()
    out = capsys.readouterr()
    return stop.value.code, out.out, out.err


@pytest.mark.parametrize("args,named", REFUSED, ids=[a or "same-dir" for a, _ in REFUSED])
def test_bad_input_is_one_line_and_leaves_the_earlier_run_untouched(
    args, named, earlier, places, monkeypatch, capsys
):
    out_dir, digest = earlier
    argv = shlex.split(args.format(**places))
    if not any(a.startswith("hydra.run.dir=") for a in argv):
        argv.append(f"hydra.run.dir={out_dir}")
    flags = [a for a in argv if a in ("-m", "--multirun")]  # Hydra takes -m before the overrides only
    code, stdout, stderr = run_main(
        [*flags, *BASE, *(a for a in argv if a not in flags)], monkeypatch, capsys
    )
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert named.format(**places) in lines[0]
    assert "Traceback" not in stdout + stderr
    assert tree_digest(out_dir) == digest


def test_the_table_covers_every_group_and_enough_doors():
    assert len(REFUSED) >= 50
    named = " ".join(a for a, _ in REFUSED)
    for group in ("trainer.", "dataset.", "optimizer.", "head.", "strategy.", "backbone.", "scheduler."):
        assert group in named
    for group in ("callbacks", "regularizer", "tuning.", "report.", "seed=", "hydra.run.dir"):
        assert group in named


def test_precisions_are_lightnings_own():
    from lightning_fabric.connector import _PRECISION_INPUT

    def flat(t):
        return [x for a in typing.get_args(t) for x in (flat(a) if typing.get_origin(a) else [a])]

    assert set(flat(schema.PRECISIONS)) == set(flat(_PRECISION_INPUT))


# Mistakes only the job can see (the data's contents, a file's bytes, what a model accepts): the run
# fails with one line in results.json and on the console, never a traceback.
def _one_class(tmp: Path) -> str:
    return str(write_image_folder(tmp / "one", classes=("cat",), per_class=4, test_per_class=2, size=16))


def _unknown_test_class(tmp: Path) -> str:
    root = write_image_folder(tmp / "unknown", classes=("cat", "dog"), per_class=4, test_per_class=2, size=16)
    write_image_folder(root / "extra", classes=("emu",), per_class=0, test_per_class=2, size=16)
    (root / "extra" / "test" / "emu").rename(root / "test" / "emu")
    return str(root)


def _garbage(tmp: Path, name: str) -> str:
    path = tmp / name
    path.write_bytes(bytes(range(256)) * 4)
    return str(path)


FOLDER = ["dataset=image_folder", "dataset.classes=null", "dataset.image_size=16", "dataset.num_workers=0"]
FAILED_IN_JOB = [
    (lambda t: ["trainer.strategy=ddpx"], "trainer could not be built from its config"),
    (lambda t: ["optimizer._target_=torch.optim.Nope"], "optimizer._target_=torch.optim.Nope: no such class"),
    (lambda t: ["strategy=partial", "strategy.trainable_stages=99"], "strategy.trainable_stages=99"),
    (lambda t: ["optimized_metric=val/nonsense"], "optimized_metric=val/nonsense is never logged"),
    (lambda t: ["dataset.classes=[0,1,99]"], "dataset.classes: ['99'] not found"),
    (
        lambda t: ["backbone=vit_tiny", "dataset.image_size=8"],
        "use dataset.image_size=16 backbone.kwargs.img_size=16",
    ),
    (lambda t: [*FOLDER, f"dataset.root={_one_class(t)}"], "a classifier needs at least 2"),
    (lambda t: [*FOLDER, f"dataset.root={_unknown_test_class(t)}"], "Test classes ['emu']"),
    (lambda t: [f"ckpt_path={_garbage(t, 'bad.ckpt')}"], "ckpt_path: checkpoint"),
    (lambda t: [f"backbone.pretrained={_garbage(t, 'bad.pth')}"], "backbone.pretrained="),
]


@pytest.mark.parametrize("make_args,named", FAILED_IN_JOB)
def test_mistakes_found_by_the_job_fail_it_in_one_line(make_args, named, tmp_path):
    record = train(compose_cfg(tmp_path / "run", [*BASE, "callbacks=minimal", *make_args(tmp_path)]))
    assert record["status"] == "failed"
    assert named in record["error"] and "\n" not in record["error"]
    assert "traceback" not in record  # a user mistake, not a crash
    assert "weights_only=False" not in record["error"]  # never advise unpickling an untrusted file
    saved = tmp_path / "run" / "results.json"  # absent when refused before the run started
    if saved.exists():
        assert json.loads(saved.read_text())["error"] == record["error"]


def test_the_console_shows_one_line(tmp_path):
    # The refusal is a fresh process (its whole console, from a cold start: no torch to load); the run
    # that fails inside the job is a fork of this one (what the command prints, not how it starts).
    refused = run_cli("optimizer.lr=-1", f"hydra.run.dir={tmp_path / 'a'}", cwd=REPO)
    assert refused.returncode == 2 and refused.stderr == "error: optimizer.lr=-1: must be > 0.0.\n"
    assert not (tmp_path / "a").exists()  # refused before Hydra made the directory
    garbage = _garbage(tmp_path, "bad.ckpt")
    failed = fork_cli(
        *BASE, "callbacks=minimal", f"ckpt_path={garbage}", f"hydra.run.dir={tmp_path / 'b'}", cwd=REPO
    )
    assert failed.returncode == 1 and "Traceback" not in failed.stdout + failed.stderr
    assert failed.stderr.strip().splitlines()[-1].startswith(f"error: ckpt_path: checkpoint {garbage}")


def test_a_mistake_in_a_shared_key_is_refused_before_any_class_is_imported():
    """The door stays quick for the common mistake: the shared keys are checked first (a class's own
    settings need its module, which loads torch and Lightning, so they are checked only after)."""
    code = (
        "import sys\nfrom transferlab.core import schema\nfrom transferlab.core.config import compose_train\n"
        "try:\n    schema.check(compose_train(['optimizer.lr=-1']))\nexcept schema.ConfigError as e:\n"
        "    print(e)\nprint(sorted(m for m in ('torch', 'pytorch_lightning', 'timm') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.splitlines() == ["optimizer.lr=-1: must be > 0.0.", "[]"]


def test_hydra_full_error_shows_hydras_own_exception(monkeypatch):
    """For debugging, HYDRA_FULL_ERROR=1 skips the one-line translation: Hydra raises with its traceback."""
    from hydra.errors import ConfigCompositionException

    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    monkeypatch.setattr(sys, "argv", ["transferlab-train", "traner.max_epochs=1"])
    with pytest.raises(ConfigCompositionException, match="traner"):
        main()


# Fuzzing: random values for every key the schema declares, through the same door as the command line.
def schema_keys(model: type[BaseModel] = schema.Run, prefix: str = "") -> list[str]:
    """The leaf keys the schema checks (sub-models followed, free-form dicts left out)."""
    keys = []
    for name, field in model.model_fields.items():
        inner = [a for a in (field.annotation, *typing.get_args(field.annotation)) if isinstance(a, type)]
        sub = next((a for a in inner if issubclass(a, BaseModel)), None)
        if sub is not None:
            keys += schema_keys(sub, f"{prefix}{name}.")
        elif name != "kwargs":
            keys.append(f"{prefix}{name}")
    return keys


DEFAULT_KEYS = [
    k for k in schema_keys() if not k.startswith(("callbacks.early_stopping", "regularizer.", "strategy."))
]
STRATEGY_KEYS = {"strategy=partial": "strategy.trainable_stages", "strategy=lora": "strategy.rank"}
VALUES = st.one_of(
    st.integers(-(10**12), 10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.booleans().map(str),
    st.sampled_from(["null", "abc", "''", "[]", "[1,2]", "{}", "-0", "1e400", "${seed}", "${nope}"]),
    st.text(alphabet="abcXYZ019-_./:[]{}'\" ,=$", max_size=8),
)


@settings(
    max_examples=60, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)
@given(
    key=st.sampled_from([*DEFAULT_KEYS, "callbacks.model_checkpoint.save_top_k", *STRATEGY_KEYS.values()]),
    value=VALUES,
)
def test_fuzzed_values_pass_or_fail_in_one_line_never_a_traceback(key, value, tmp_path_factory):
    group = [g for g, k in STRATEGY_KEYS.items() if k == key]
    run_dir = tmp_path_factory.getbasetemp() / "fuzz-run"
    try:
        preflight([*group, f"{key}={value}", f"hydra.run.dir={run_dir}"])
    except TransferlabError as exc:
        message = str(exc)
        assert message and "\n" not in message and "Traceback" not in message
        assert key.rpartition(".")[2] in message or "override" in message.lower() or "$" in value, message
    assert not run_dir.exists()  # checking never creates the run directory


@settings(
    max_examples=6, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)
@given(
    lr=st.floats(1e-6, 10.0),
    dropout=st.floats(0.0, 0.99),
    smoothing=st.floats(0.0, 0.99),
    clip=st.one_of(st.none(), st.floats(0.0, 100.0)),
    warmup=st.floats(0.0, 0.99),
)
def test_accepted_values_run_to_an_honest_status(lr, dropout, smoothing, clip, warmup, tmp_path_factory):
    """What the schema lets through trains: ok, or diverged (never a crash)."""
    out = tmp_path_factory.mktemp("accepted")
    overrides = [
        f"optimizer.lr={lr}",
        f"head.dropout={dropout}",
        f"head.label_smoothing={smoothing}",
        f"trainer.gradient_clip_val={'null' if clip is None else clip}",
        f"scheduler.warmup_fraction={warmup}",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
    ]
    preflight([*BASE, *overrides, f"hydra.run.dir={out / 'run'}"])
    record = train(compose_cfg(out / "run", [*BASE, "callbacks=minimal", *overrides]))
    assert record["status"] in ("ok", "diverged"), record["error"]
    assert "traceback" not in record


def test_a_run_is_never_overwritten_and_overwrite_moves_it_aside(tmp_path):
    out = tmp_path / "run"
    quick = [*BASE, "trainer.max_epochs=1", "callbacks=minimal"]
    assert train(compose_cfg(out, quick))["status"] == "ok"
    before = files(out)
    refused = train(compose_cfg(out, quick))
    assert refused["status"] == "failed" and "already holds a run" in refused["error"]
    assert files(out) == before
    again = train(compose_cfg(out, [*quick, "overwrite=true"]))
    assert again["status"] == "ok"
    (aside,) = out.glob(".replaced-*")
    assert files(aside) == before  # moved, byte for byte, never deleted
    first = json.loads(before[Path("results.json")])
    assert json.loads((out / "results.json").read_text())["started_at"] > first["started_at"]
