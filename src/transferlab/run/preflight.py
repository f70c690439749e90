"""Catch a mistake before Hydra starts: before it creates a run directory, before any job of a sweep.

`python -m transferlab.train ARGS` first composes the config(s) ARGS ask for, checks every job's
config against the schema, and checks the output directory; a mistake ends the command with one line
naming the key, the value and the fix, and nothing on disk changes. Hydra's own errors (an unknown key
or option, a grammar mistake) are translated to one line too. With HYDRA_FULL_ERROR=1 nothing is
intercepted: Hydra and Python report as usual, tracebacks included.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import tempfile
from pathlib import Path

from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from transferlab.core.config import RUN_FILES, redact, refuse_changed_resume
from transferlab.core.errors import TransferlabError, did_you_mean
from transferlab.core.names import RESULTS_FILE
from transferlab.core.secrets import refuse_secret_interpolations, refuse_secrets_in

JOBS_CHECKED = 200  # a sweep's first jobs are checked up front; each job checks itself again
SKIP = (
    "--help",
    "-h",
    "--hydra-help",
    "--cfg",
    "-c",
    "--info",
    "-i",
    "--shell-completion",
    "-sc",
    "--version",
)


RANK_VARIABLES = ("LOCAL_RANK", "NODE_RANK", "RANK", "SLURM_PROCID")


def preflight(argv: list[str]) -> None:
    """Raise `TransferlabError` (one line) if the command would fail or harm earlier work."""
    from omegaconf.errors import OmegaConfBaseException

    try:
        _preflight(argv)
    except OmegaConfBaseException as exc:  # an interpolation that cannot resolve (a refused secret, ...)
        cause = exc
        while cause is not None and not isinstance(cause, TransferlabError):
            cause = cause.__cause__ or cause.__context__
        if cause is not None:
            raise cause from None
        key = getattr(exc, "full_key", "") or "a config value"
        raise TransferlabError(f"{key}: {_first_line(exc)}") from None


def _preflight(argv: list[str]) -> None:
    if os.environ.get("HYDRA_FULL_ERROR") == "1" or any(a in SKIP or a.startswith("--cfg") for a in argv):
        return
    if any(os.environ.get(name, "0") != "0" for name in RANK_VARIABLES):
        return  # a DDP rank Lightning started: rank 0 checked this command before it launched the others
    from transferlab.core.schema import check  # pydantic: not needed by --cfg, --info, --help

    refuse_secrets_in(argv)
    _check_flag_order(argv)
    multirun = any(a in ("-m", "--multirun") for a in argv)
    overrides, config_dir = _overrides(argv)
    if config_dir:
        overrides.append(f"hydra.searchpath=[file://{Path(config_dir).resolve()}]")
    jobs = _jobs(overrides)
    first = _compose(jobs[0])
    if not multirun and jobs != [overrides]:  # a sweep: fine if the config itself asks for MULTIRUN
        multirun = first.hydra.mode == RunMode.MULTIRUN
        if not multirun:
            sweeps = [o for o in overrides if o not in jobs[0]]
            raise TransferlabError(
                f"{sweeps[0]} is a sweep (several values); add -m (--multirun) to run one job per value, "
                "or give one value."
            )
    for i, job in enumerate(jobs[:JOBS_CHECKED]):  # a single run: jobs == [overrides]
        cfg = first if i == 0 else _compose(job)
        refuse_secret_interpolations(OmegaConf.to_container(cfg, resolve=False))
        check(cfg)
        _check_references(cfg)
        if not multirun:
            _check_run_dir(cfg)
    if multirun:
        _check_sweep_dir(first)


def _check_flag_order(argv: list[str]) -> None:
    """Hydra's parser takes the overrides in one run: `a=1 -m b=2` gets its usage text, not a sweep."""
    flags = [i for i, a in enumerate(argv) if a in ("-m", "--multirun")]
    if (
        flags
        and any("=" in a and not a.startswith("-") for a in argv[: flags[0]])
        and flags[0] < len(argv) - 1
    ):
        raise TransferlabError(
            f"{argv[flags[0]]} comes after the override {argv[0]}: put it first, e.g. "
            f"python -m transferlab.train -m {' '.join(a for a in argv if a not in ('-m', '--multirun'))}"
        )


def _overrides(argv: list[str]) -> tuple[list[str], str | None]:
    overrides, config_dir, skip_next = [], None, False
    for i, arg in enumerate(argv):
        if skip_next:
            skip_next = False
            continue
        if arg in (
            "--config-dir",
            "-cd",
            "--config-path",
            "-cp",
            "--config-name",
            "-cn",
            "--experimental-rerun",
        ):
            if arg in ("--config-dir", "-cd") and i + 1 < len(argv):
                config_dir = argv[i + 1]
            skip_next = True
        elif arg.startswith("--config-dir="):
            config_dir = arg.split("=", 1)[1]
        elif not arg.startswith("-"):
            overrides.append(arg)
    return overrides, config_dir


def _jobs(overrides: list[str]) -> list[list[str]]:
    """The jobs a basic sweep would launch (discrete sweeps expanded; tuner intervals left to the job)."""
    parser = OverridesParser.create()
    for override in overrides:  # one at a time, to name the one Hydra's grammar refuses
        try:
            parser.parse_overrides([override])
        except Exception as exc:
            raise TransferlabError(
                f"{override}: Hydra cannot parse this override ({_reason(exc)}); quote a value with special "
                "characters, e.g. key='a,b', and write lists as key=[1,2]."
            ) from None
    parsed = parser.parse_overrides(overrides)
    fixed, sweeps = [], []
    for o in parsed:
        key = o.get_key_element()
        if not o.is_sweep_override():
            fixed.append(o.input_line)
        elif o.is_discrete_sweep():
            sweeps.append([f"{key}={v}" for v in o.sweep_string_iterator()])
    return [[*fixed, *combo] for combo in itertools.islice(itertools.product(*sweeps), JOBS_CHECKED)]


def _compose(overrides: list[str]) -> DictConfig:
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module="transferlab.conf", version_base="1.3"):
            return compose("train", overrides=overrides, return_hydra_config=True)
    except Exception as exc:  # Hydra's composition and grammar errors
        raise TransferlabError(_translate(exc, overrides)) from None
    finally:
        GlobalHydra.instance().clear()


def _translate(exc: Exception, overrides: list[str]) -> str:
    text = _first_line(exc)
    key = re.search(r"Key '([^']+)' is not in struct", str(exc)) or re.search(
        r"Could not override '([^']+)'", str(exc)
    )
    if key:
        full = re.search(r"full_key: (\S+)", str(exc))
        name = full.group(1) if full else key.group(1)
        parent, _, leaf = name.rpartition(".")
        try:
            with initialize_config_module(config_module="transferlab.conf", version_base="1.3"):
                base = compose(
                    "train", overrides=[o for o in overrides if not o.lstrip("+~").startswith(name)]
                )
            node = OmegaConf.select(base, parent) if parent else base
            known = [f"{parent}.{k}" if parent else str(k) for k in (node or {})]
        except Exception:
            node, known = {}, []
        if parent and node is None:  # e.g. callbacks.early_stopping is null unless callbacks=early_stopping
            group = parent.split(".")[0]
            defining = [o for o in _options(group) if o in parent.split(".")[1:]]
            fix = (
                f"choose {group}={defining[0]}, which sets it"
                if defining
                else f"set the whole {parent} first"
            )
            return f"{name}: {parent} is null in this config, so it has no key {leaf}; {fix}."
        hint = did_you_mean(name, known) if known else ""
        return f"{name}: no such key.{hint} To add a new key, write +{name}=VALUE."
    missing = re.search(r"Could not find '([^']+)'", str(exc))
    if missing:
        group, _, option = missing.group(1).rpartition("/")
        options = _options(group)
        hint = did_you_mean(option, options) if options else ""
        return f"{group}={option}: no such option.{hint} Options: {', '.join(options)}."
    return text


def _options(group: str) -> list[str]:
    """The options of a config group, as Hydra's config loader lists them (internal `_base` ones left out)."""
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="transferlab.conf", version_base="1.3"):
        options = GlobalHydra.instance().config_loader().get_group_options(group)
    GlobalHydra.instance().clear()
    return sorted(o for o in options if not o.startswith("_"))


def _reason(exc: Exception) -> str:
    """Hydra's grammar complaint without the repeated override."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reasons = [line for line in lines if not line.startswith("Error parsing override")]
    return (reasons or lines or [type(exc).__name__])[0]


def _first_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _check_references(cfg: DictConfig) -> None:
    """The folders, files and model names the config points at (before Hydra creates a directory)."""
    root = _missing_root(cfg.dataset)
    if root is not None:
        from transferlab.data.folders import root_error

        raise root_error(root)
    ckpt = cfg.get("ckpt_path")
    if ckpt and not Path(str(ckpt)).expanduser().exists():
        raise TransferlabError(
            f"ckpt_path={ckpt}: no such file or directory; give a .ckpt file or a run directory "
            "(its checkpoints/last.ckpt is used)."
        )
    from transferlab.backbones.factory import check_name
    from transferlab.backbones.weights import resolve_weights_path

    pretrained = cfg.backbone.get("pretrained")
    if isinstance(pretrained, str) and pretrained.lower() not in ("source", "", "true", "false"):
        resolve_weights_path(pretrained)
    check_name(str(cfg.backbone.name))


def _missing_root(dataset: DictConfig) -> str | None:
    """The dataset's root when it is no folder but its source reads one (the source class declares
    `root_must_exist`, and no `prepare_root` of the data module writes it first); else None. Looked up
    only when the root is not a folder, so a good config imports nothing here."""
    source = dataset.get("source")
    nested = isinstance(source, DictConfig) and "_target_" in source
    root = source.get("root") if nested else dataset.get("root")
    if root is None or "_target_" not in dataset or Path(str(root)).expanduser().is_dir():
        return None
    from transferlab.core.targets import locate
    from transferlab.data.datamodule import DataModule
    from transferlab.data.sources import source_type

    module = locate(str(dataset._target_), "dataset")
    kind = source_type(locate(str(source._target_), "dataset.source") if nested else module)
    writes_first = isinstance(module, type) and module.prepare_root is not DataModule.prepare_root
    return str(root) if kind is not None and kind.root_must_exist and not writes_first else None


def _check_run_dir(cfg: DictConfig) -> None:
    run_dir = Path(str(cfg.hydra.run.dir)).expanduser()
    _check_creatable(run_dir, "hydra.run.dir")
    if cfg.get("resume") and (run_dir / RESULTS_FILE).is_file():
        # Hydra rewrites <run dir>/.hydra/ before the job starts: refuse a resume with other settings first.
        previous = json.loads((run_dir / RESULTS_FILE).read_text()).get("config") or {}
        refuse_changed_resume(previous, _job_config(cfg, run_dir), run_dir.resolve())
    if cfg.get("resume") or cfg.get("overwrite") or not run_dir.is_dir():
        return
    found = [name for name in RUN_FILES if (run_dir / name).exists()]
    if found:
        raise TransferlabError(
            f"hydra.run.dir={run_dir} already holds a run ({', '.join(found)}); continue it with resume=true, "
            "write elsewhere (another hydra.run.dir), or pass overwrite=true to move the old files aside (never deleted)."
        )


def _job_config(cfg: DictConfig, run_dir: Path) -> dict:
    """The resolved config the job in `run_dir` will record (as `results.json` holds it)."""
    job = cfg.copy()
    with open_dict(job):
        job.paths.output_dir = str(run_dir.resolve())
        del job["hydra"]
    return redact(OmegaConf.to_container(job, resolve=True))


def _check_sweep_dir(cfg: DictConfig) -> None:
    sweep_dir = Path(str(cfg.hydra.sweep.dir)).expanduser()
    _check_creatable(sweep_dir, "hydra.sweep.dir")
    if (
        cfg.get("resume")
        or cfg.get("overwrite")
        or "transferlab_optuna" in str(cfg.hydra.sweeper.get("_target_", ""))
    ):
        return  # the Optuna sweeper resumes its study from the same directory
    if sweep_dir.is_dir() and any(sweep_dir.glob(f"*/{RESULTS_FILE}")):
        raise TransferlabError(
            f"hydra.sweep.dir={sweep_dir} already holds a sweep's jobs; continue it with resume=true (finished jobs "
            "are skipped), or write elsewhere (another hydra.sweep.dir)."
        )


def _check_creatable(path: Path, key: str) -> None:
    """Hydra creates the directory before any job code runs: make sure it can, leaving nothing behind."""
    existing = path.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise TransferlabError(f"{key}={path}: {existing} is a file, not a folder; choose a directory path.")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".transferlab-probe-", dir=existing))
    except OSError as exc:
        raise TransferlabError(
            f"{key}={path}: cannot create folders in {existing} ({exc.strerror}); choose a folder you can write to."
        ) from None
