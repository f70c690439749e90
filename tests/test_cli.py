"""The command line: every console script answers --help without loading torch, nor do Hydra's own
commands; the README's commands compose, and users add configs of their own without forking."""

from __future__ import annotations

import importlib
import json
import os
import re
import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from .conftest import REPO, run_cli, write_image_folder

SCRIPTS = (
    "transferlab-train",
    "transferlab-report",
    "transferlab-stages",
    "transferlab-pack",
    "transferlab-sweep-all",
)


HEAVY = ("torch", "pytorch_lightning", "lightning", "timm")
IMPORTED = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)$", flags=re.M)  # -X importtime lines


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_console_script_answers_help_without_loading_torch(script):
    out = subprocess.run(
        [Path(sysconfig.get_paths()["scripts"]) / script, "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"},  # every module the script imports, on stderr
    )
    imported = IMPORTED.findall(out.stderr)
    assert out.returncode == 0, IMPORTED.sub("", out.stderr).strip()[-2000:]
    assert "usage" in out.stdout.lower() or "powered by Hydra" in out.stdout
    assert "argparse" in imported or "hydra" in imported  # the import lines were read
    assert not [m for m in imported if m.split(".")[0] in HEAVY]


@pytest.mark.parametrize("args", [["--help"], ["--cfg", "job"], ["--info", "config"], ["--hydra-help"]])
def test_hydras_own_commands_do_not_load_torch(args):
    probe = (
        "import sys\n"
        f"sys.argv = ['transferlab-train', *{args!r}]\n"
        "from transferlab.train import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('HEAVY', sorted(m for m in ('torch', 'pytorch_lightning', 'timm') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert "HEAVY []" in out.stdout, out.stdout[-2000:] + out.stderr[-2000:]


def readme_commands() -> list[str]:
    """`python -m transferlab.train|stages ...` lines of the README's code blocks (continuations joined)."""
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)
    text = "\n".join(blocks).replace("\\\n", " ")
    commands = []
    for line in text.splitlines():
        line = line.split("  #")[0].strip()
        if (
            line.startswith(("python -m transferlab.train", "python -m transferlab.stages"))
            and "/path/" not in line
        ):
            commands.append(line)
    return commands


def first_value(override: str) -> str:
    """A sweep override at its first value (`strategy=full,lora` -> `strategy=full`)."""
    key, eq, value = override.partition("=")
    if eq and "," in value and not value.startswith(("[", "{", "'")):
        value = value.split(",")[0]
    return f"{key}={value}" if eq else override


# `transferlab-train ARGS` for each ARGS of a JSON list, in one process (each its own Hydra start, its
# own sys.argv): the exit code and the end of stderr of each command that did not exit 0.
EACH_COMMAND = (
    "import contextlib, io, json, sys, traceback\n"
    "from transferlab.train import main\n"
    "failed = []\n"
    "for args in json.loads(sys.argv[1]):\n"
    "    sys.argv, err, code = ['transferlab-train', *args], io.StringIO(), 0\n"
    "    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):\n"
    "        try:\n            main()\n"
    "        except SystemExit as exc:\n            code = exc.code\n"
    "        except BaseException:\n            traceback.print_exc()\n            code = 1\n"
    "    if code:\n        failed.append([args, code, err.getvalue()[-1500:]])\n"
    "print('FAILED', json.dumps(failed))\n"
)


def test_the_readme_commands_compose(tmp_path):
    root = write_image_folder(tmp_path / "images")
    configs = tmp_path / "my_configs" / "dataset"
    configs.mkdir(parents=True)
    (configs / "flowers.yaml").write_text(
        f"defaults:\n  - image_folder\n  - _self_\nname: flowers\nroot: {root}\nimage_size: 128\n"
    )
    commands = readme_commands()
    assert len(commands) >= 15
    train_args = []
    for command in commands:
        words = shlex.split(
            command.replace("DIR", str(root)).replace("my_configs", str(tmp_path / "my_configs"))
        )
        module, args = words[2], words[3:]
        # --cfg job composes one job: a sweep (-m, a,b values) is checked at its first point
        args = [first_value(a) for a in args if a != "-m"]
        if module == "transferlab.train":  # checked together below, one interpreter for all of them
            train_args.append([*args, "--cfg", "job"])
            continue
        try:  # transferlab.stages: its entry function, in this process (torch and timm are loaded here)
            importlib.import_module(module).main(args)
        except SystemExit as exc:
            assert not exc.code, (command, exc.code)
    assert len(train_args) >= 15
    out = subprocess.run(
        [sys.executable, "-c", EACH_COMMAND, json.dumps(train_args)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert out.returncode == 0 and "FAILED " in out.stdout, out.stderr[-3000:]
    assert json.loads(out.stdout.split("FAILED ")[-1]) == []  # each: [its arguments, exit code, stderr]
    flowers = run_cli(
        "--config-dir", str(tmp_path / "my_configs"), "dataset=flowers", "--cfg", "job", cwd=tmp_path
    )
    assert "name: flowers" in flowers.stdout and "image_size: 128" in flowers.stdout


HYDRAS_OWN_HELP = (  # Hydra's --help as it comes, without transferlab's shared repository (the slow path)
    "import sys, hydra, transferlab.train as t\n"
    "sys.argv[0] = t.__file__\n"
    "hydra.main(version_base='1.3', config_path=t.CONFIG_PATH, config_name='train')(t.task)()\n"
)


def test_help_lists_every_group_and_option_as_hydras_own_help(tmp_path):
    user = tmp_path / "user_configs"
    for path in ("backbone/my_resnet.yaml", "my_group/option_a.yaml", "hydra/launcher/my_launcher.yaml"):
        (user / path).parent.mkdir(parents=True, exist_ok=True)
        (user / path).write_text("a: 1\n")
    args = ["--config-dir", str(user), "--help", "hydra.help.template=$APP_CONFIG_GROUPS$HYDRA_CONFIG_GROUPS"]
    ours = run_cli(*args, cwd=tmp_path)
    hydras = subprocess.run(
        [sys.executable, "-c", HYDRAS_OWN_HELP, *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert ours.returncode == hydras.returncode == 0, ours.stderr[-2000:] + hydras.stderr[-2000:]
    assert ours.stdout == hydras.stdout
    listing = dict(line.split(": ", 1) for line in ours.stdout.splitlines() if ": " in line)
    assert "my_resnet" in listing["backbone"].split(", ") and listing["my_group"] == "option_a"
    assert {"my_launcher", "joblib", "submitit_slurm"} <= set(listing["hydra/launcher"].split(", "))
    assert "transferlab_optuna" in listing["hydra/sweeper"]  # our own plugin
    assert {"full", "linear_probe", "partial"} <= set(listing["strategy"].split(", "))


def test_a_jobs_imports_leave_out_the_reports_libraries():
    """What every job imports (the job path, Hydra's report callback, the digits data) loads neither the
    report's pandas/statistics nor scikit-learn (only the first digits materialization needs it)."""
    probe = (
        "import sys\n"
        "import transferlab.run.job, transferlab.data.digits, transferlab.report as report\n"
        "report.ReportCallback\n"
        "print('LOADED', sorted(m for m in ('pandas', 'sklearn', 'statsmodels', 'transferlab.report.cli') "
        "if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert "LOADED []" in out.stdout, out.stdout[-2000:] + out.stderr[-2000:]
