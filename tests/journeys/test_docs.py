"""Every command the docs show is known to a test, and is well-formed as written.

- the set of commands in the ```bash blocks of README.md and docs/*.md equals the keys of
  tests/journeys/commands.py: a doc change without a test change fails here;
- each entry names a test that exists (and runs it in the suite), or says why it is only
  an example of a remote set-up;
- each `mammo` command parses with the real parser, its paths and URIs are well-formed;
  each `prefect deployment run` names a deployment of prefect.yaml with parameters its
  flow takes; each `make` target exists.
"""

from __future__ import annotations

import ast
import inspect
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flows.cli import build_parser
from tasks.storage import check_uri
from tests.journeys.commands import COMMANDS, EXAMPLE

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```(?:bash|sh|shell)\n(.*?)^```", re.S | re.M)


def documented_commands() -> dict[str, str]:
    """command -> the doc it is in: comments dropped, continuation lines joined."""
    found: dict[str, str] = {}
    for doc in DOCS:
        for block in BLOCK.findall(doc.read_text()):
            for line in block.replace("\\\n", " ").splitlines():
                command = _strip_comment(line)
                if command:
                    found.setdefault(" ".join(command.split()), doc.name)
    return found


def _strip_comment(line: str) -> str:
    """``line`` without a trailing ``# comment`` (a ``#`` inside quotes is kept)."""
    quote = None
    for i, char in enumerate(line):
        if char in "'\"" and quote in (None, char):
            quote = None if quote else char
        elif char == "#" and quote is None and (i == 0 or line[i - 1].isspace()):
            return line[:i].strip()
    return line.strip()


def test_every_documented_command_is_known_to_a_test_and_only_those() -> None:
    documented = documented_commands()
    missing = {cmd: doc for cmd, doc in documented.items() if cmd not in COMMANDS}
    stale = sorted(set(COMMANDS) - set(documented))
    assert not missing, f"documented but not in tests/journeys/commands.py: {missing}"
    assert not stale, f"in tests/journeys/commands.py but in no doc: {stale}"


@pytest.mark.parametrize("target", sorted(set(COMMANDS.values())))
def test_each_entry_names_a_test_that_exists(target: str) -> None:
    if target.startswith(EXAMPLE):
        assert len(target) > len(EXAMPLE) + 10, "an example needs its reason"
        return
    path, name = target.split("::")
    tree = ast.parse((ROOT / path).read_text())
    names = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    assert name in names, f"{target}: no such test"


def _mammo_commands() -> list[str]:
    return [cmd for cmd in COMMANDS if cmd.startswith("mammo ") and "..." not in cmd]


def test_every_documented_mammo_command_parses() -> None:
    parser = build_parser()
    for command in _mammo_commands():
        for part in command.split(" / ") if " / " in command else [command]:
            argv = shlex.split(part.split(" && ")[0])[1:]
            if argv == ["--help"]:
                continue
            try:
                args = parser.parse_args(argv)
            except SystemExit as exc:
                pytest.fail(f"{part!r} does not parse (exit {exc.code})")
            for name in ("raw", "out", "data", "work"):
                value = getattr(args, name, None)
                if isinstance(value, str) and args.command != "synth":
                    check_uri(value)
    done = subprocess.run(
        [str(Path(sys.executable).parent / "mammo"), "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0 and "COMMAND" in done.stdout
    for sub in ("synth", "ingest", "validate", "train", "promote", "predict", "run", "up"):
        assert sub in done.stdout


def test_documented_deployment_runs_name_real_deployments_and_parameters() -> None:
    deployments = {
        d["name"]: d for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
    }
    for command in (c for c in COMMANDS if c.startswith("prefect deployment run")):
        argv = shlex.split(command)
        flow_name, deployment = argv[3].split("/")
        assert deployment in deployments, command
        module, function = deployments[deployment]["entrypoint"].split(":")
        namespace: dict[str, object] = {}
        exec(
            f"from {module.removesuffix('.py').replace('/', '.')} import {function} as f", namespace
        )
        flow = namespace["f"]
        assert getattr(flow, "name", None) == flow_name, command
        accepted = set(inspect.signature(flow.fn).parameters)  # type: ignore[attr-defined]
        given = [argv[i + 1].split("=")[0] for i, a in enumerate(argv) if a == "--param"]
        assert set(given) <= accepted, (command, set(given) - accepted)


def test_make_targets_named_in_the_docs_exist() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for command in (c for c in COMMANDS if c.startswith("make ")):
        target = command.split()[1]
        assert re.search(rf"^{re.escape(target)}:", makefile, re.M), command
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_a_broken_doc_command_is_caught() -> None:
    """The checks above fail for a doc command with a wrong flag or deployment parameter."""
    with pytest.raises(SystemExit):
        build_parser().parse_args(shlex.split("ingest --raw data/raw --output data/out"))
    assert "mammo ingest --raw data/raw --output data/out" not in COMMANDS
