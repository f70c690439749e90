"""One job: build -> fit -> test (best checkpoint) -> export -> results.json.

What a strategy does beyond freezing (initial weights, its module, caches or joint data, a head fitted
outright, what it exports) happens in its hooks (`TransferStrategy`); the parts are built by `run.build`
and the record's fixed fields come from `run.record`. `transferlab.train` is the Hydra entry point; it
imports this module only when a job runs.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from lightning_fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from transferlab.core.atomic import remove_temporaries
from transferlab.core.errors import DivergedError, TransferlabError, TrialPruned
from transferlab.core.explain import explain, log_traceback
from transferlab.core.faults import crash_point
from transferlab.core.schema import check as check_config
from transferlab.core.secrets import install_env_guard, refuse_secret_interpolations
from transferlab.evaluation.runner import Evaluation
from transferlab.evaluation.soup import cook
from transferlab.run import build
from transferlab.run.checkpoint import InterruptCheckpoint, RunLock, check_disk_space
from transferlab.run.forgetting import SourceTask
from transferlab.run.loggers import finish_wandb, log_config, remember_wandb_id, report_run
from transferlab.run.record import (
    base_record,
    best_checkpoint,
    export_meta,
    logged_metrics,
    objective,
    places,
)
from transferlab.run.results import (
    RESULTS_FILE,
    peak_memory_mb,
    release_space,
    reserve_space,
    write_json_atomic,
)
from transferlab.run.resume import StartPlan, plan_start
from transferlab.run.runtime import is_multirun, is_rank_zero, lightning_logs_to_the_job
from transferlab.run.summary import print_summary
from transferlab.strategies import TransferStrategy, build_strategy
from transferlab.strategies.context import RunContext

log = logging.getLogger("transferlab")

# Frozen backbone parts are deliberately in eval mode at train start (BatchNorm statistics untouched).
warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")
warnings.filterwarnings("ignore", message=r".*does not have many workers.*")


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one job in its directory and write its `results.json`; job failures are recorded, not raised.

    The directory is locked for the whole run. `results.json` says `running` from the start (a killed run
    leaves that behind) and is replaced atomically by the final record. A run refused before it starts
    (directory locked by another run, or holding a run it may not continue) writes nothing there.
    """
    logging.raiseExceptions = False  # a log handler that cannot write (a full disk): no traceback per message
    lightning_logs_to_the_job()
    install_env_guard()  # jobs a sweeper or SLURM starts skip the pre-flight: `${oc.env:<secret>}` is refused here
    out = Path(cfg.paths.output_dir).resolve()
    try:
        refuse_secret_interpolations(OmegaConf.to_container(cfg, resolve=False))
        record = base_record(cfg, out)
    except (TransferlabError, OmegaConfBaseException) as exc:  # refused before anything is written
        error = explain(exc)
        log.error("%s", error)
        return {"status": "failed", "error": error, "metrics": {}, "objective": {"value": None}}
    try:
        check_config(cfg)
        build.check_output_dir(out)
        with RunLock(out) if is_rank_zero() else contextlib.nullcontext():
            plan = plan_start(cfg, out, record["config"])
            if plan.finished is not None:
                return plan.finished
            return _run(cfg, out, record, plan)
    except TransferlabError as exc:  # refused at the door: nothing in `out` is touched
        record.update(status="failed", error=explain(exc))
        log.error("%s", exc)
        return record


@dataclass
class _Job:
    """One run's parts, as `_build` made them."""

    strategy: TransferStrategy
    ctx: RunContext
    module: Any
    data: Any  # what the fit and the test see (the strategy's `prepare_data`)
    evaluation: Evaluation
    source_task: SourceTask | None
    source_before: float | None = None  # the source task's accuracy before training (forgetting)
    trainer: pl.Trainer | None = None


def _run(cfg: DictConfig, out: Path, record: dict[str, Any], plan: StartPlan) -> dict[str, Any]:
    interrupt = InterruptCheckpoint(out / "checkpoints")
    interrupted: BaseException | None = None
    job: _Job | None = None
    if is_rank_zero():
        remove_temporaries(out)  # what writers killed mid-write left behind
        record["attempts"] = plan.attempts
        write_json_atomic(out / RESULTS_FILE, record)  # status: running
        reserve_space(out)  # so the final record can still be written if the disk fills
    try:
        job = _build(cfg, out, record, plan, interrupt)
        _fit_test_export(cfg, out, job, plan)
        record["status"] = "ok"
        if job.trainer.is_global_zero:
            report_run(job.trainer, record, out)
    except DivergedError as exc:  # not success, and not a crash either: the settings made training blow up
        record.update(status="diverged", error=str(exc), diverged=exc.details)
    except MisconfigurationException as exc:  # Lightning refused a setting: its words, without the traceback
        record.update(status="failed", error=f"Lightning refused the configuration: {exc}")
    except TransferlabError as exc:
        record.update(status="failed", error=explain(exc))
    except TrialPruned as exc:  # the tuner stopped a hopeless trial: not a failure
        record.update(status="pruned", error=str(exc))
    except (KeyboardInterrupt, SystemExit) as exc:  # SIGTERM / SIGINT, turned into exits by Lightning
        interrupted = exc
        why = interrupt.signal or type(exc).__name__
        record.update(
            status="interrupted",
            error=f"Interrupted by {why}; checkpoint saved. Continue with: resume=true hydra.run.dir={out}",
        )
    except Exception as exc:  # one line naming the file or key and the fix; the traceback in train.log
        record.update(status="failed", error=explain(exc, places(cfg, out)))
        log_traceback(exc)
    finally:
        finish_wandb()
        record["peak_memory_mb"] = round(peak_memory_mb(), 1)
        record["wall_seconds"] = round(time.time() - record["started_at"], 3)
    trainer = job.trainer if job is not None else None
    if trainer.is_global_zero if trainer is not None else is_rank_zero():  # DDP: rank 0 writes
        _write_record(cfg, out, record)
    if interrupted is not None:
        sys.exit(143 if interrupt.signal == "SIGTERM" else 130)
    return record


def _build(cfg: DictConfig, out: Path, record: dict[str, Any], plan: StartPlan, interrupt) -> _Job:
    """Strategy, backbone, data, module and trainer; the strategy's hooks say what is special."""
    build.check_device(cfg)
    strategy = build_strategy(cfg.strategy)
    pretrained = build.resolve_pretrained(cfg, strategy, record, run=train)
    pl.seed_everything(cfg.seed, workers=True)
    backbone = build.build_backbone(cfg, pretrained)
    record["weights"] = backbone.weights
    record["weights_sha256"] = backbone.weights.get("sha256")
    datamodule = build.build_datamodule(cfg, backbone)
    record["class_names"] = datamodule.class_names
    record["data"] = datamodule.describe()
    evaluation = Evaluation.plan(cfg, datamodule)  # extra test sets are checked before training
    ctx = RunContext(cfg, datamodule, record)
    module = build.build_module(cfg, strategy, ctx, backbone)
    build.check_objective_is_logged(cfg, module)
    source_task = SourceTask.of(backbone.weights, backbone, datamodule.image_size)
    job = _Job(strategy, ctx, module, None, evaluation, source_task)
    job.source_before = source_task.score(backbone) if source_task else None
    job.data = strategy.prepare_data(ctx, module)
    check_disk_space(out, module, reserve_mb=float(cfg.paths.get("disk_reserve_mb") or 0))
    if plan.checkpoint:
        record["resumed_from" if cfg.get("resume") else "started_from"] = plan.checkpoint
    job.trainer = build.build_trainer(cfg, out, plan, [*strategy.callbacks(), interrupt])
    log_config(job.trainer, cfg)
    remember_wandb_id(job.trainer, out, record)
    return job


def _fit_test_export(cfg: DictConfig, out: Path, job: _Job, plan: StartPlan) -> None:
    """Fit (or cook a soup), test the selected checkpoint, score extra sets, export; all into the record."""
    trainer, module, record, strategy = job.trainer, job.module, job.ctx.record, job.strategy
    started = time.perf_counter()
    if (cfg.get("soup") or {}).get("study"):  # a greedy soup of a study's trials: nothing trains
        record["soup"] = cook(cfg, module, job.ctx.datamodule, trainer.strategy.root_device)
        trainer.validate(module, datamodule=job.data, verbose=False)
    else:
        strategy.fit(job.ctx, trainer, module, job.data, plan.checkpoint)
    record["train_seconds"] = round(time.perf_counter() - started, 3)
    crash_point("after_fit")
    record["trainable_params"], record["total_params"] = module.parameter_counts()
    record["strategy_details"] = module.strategy_summary()
    record["param_groups"] = module.param_group_record  # the recipe: name, lr, weight decay, parameters
    metrics = module.fit_metrics()
    record["objective"] = objective(cfg, trainer)
    record["best_checkpoint"] = best = best_checkpoint(trainer)
    if cfg.get("test", True):
        trainer.test(module, datamodule=job.data, ckpt_path=best, verbose=False)
        metrics.update(logged_metrics(trainer, ("test/",)))
        record["test_samples"] = int(metrics.pop("test/samples"))
        if module.test_confusion is not None:  # rows: true class, columns: predicted
            record["confusion_matrix"] = module.test_confusion
    strategy.after_test(module)
    if cfg.get("test", True):  # extra test sets, calibration, WiSE-FT: the selected weights again
        metrics.update(job.evaluation.run(trainer, module, job.ctx.datamodule, out, record))
    if job.source_task is not None:  # what transfer cost the source task
        after = job.source_task.score(module.backbone)
        metrics.update({"source/acc_before": job.source_before, "source/acc_after": after})
    metrics.update(strategy.extra_metrics(module))
    record["metrics"] = dict(sorted(metrics.items()))
    record["epochs"] = trainer.current_epoch
    if trainer.is_global_zero:
        meta = export_meta(cfg, module.backbone, job.ctx.datamodule, record)
        record["export"] = strategy.export(module, out, meta)


def _write_record(cfg: DictConfig, out: Path, record: dict[str, Any]) -> None:
    try:
        release_space(out)
        write_json_atomic(out / RESULTS_FILE, record)
    except OSError as exc:  # the output directory itself is the problem (already in the error)
        log.error("Could not write %s: %s", out / RESULTS_FILE, explain(exc, places(cfg, out)))
    print_summary(record, out)


def run_task(cfg: DictConfig) -> float | None:
    """The body of the Hydra task function (see `transferlab.train.task`)."""
    record = train(cfg)
    if record["status"] != "ok" and not is_multirun():
        print(f"error: {record['error']}", file=sys.stderr)
        sys.exit(1)
    return record["objective"]["value"] if record["status"] == "ok" else None
