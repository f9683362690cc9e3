"""Every command in the README's bash blocks works as written: parsed by the CLI's own parser (so each flag exists
and each value has its type), each config it names found and each `--set` valid, the `--help` and `--dry-run`
ones run for real; and the README's test command is the one CI runs."""

import shlex
from pathlib import Path

import pytest

from mirai.cli import _parser, demo_plan, main
from mirai.config import load_config

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def bash_blocks(text: str) -> list[str]:
    blocks, inside = [], None
    for line in text.splitlines():
        if inside is None and line.strip() == "```bash":
            inside = []
        elif inside is not None and line.strip() == "```":
            blocks.append("\n".join(inside))
            inside = None
        elif inside is not None:
            inside.append(line)
    return blocks


def commands(text: str) -> list[list[str]]:
    """Each command of the bash blocks as argv: continuation lines joined, comments dropped, `&&` split."""
    out = []
    for block in bash_blocks(text):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            while words:
                cut = words.index("&&") if "&&" in words else len(words)
                out.append(words[:cut])
                words = words[cut + 1:]
    return out


MIRAI = [c for c in commands(README) if c and c[0] in ("mirai", "torchrun")]


def mirai_argv(command: list[str]) -> list[str]:
    if command[0] == "torchrun":
        assert command[command.index("-m") + 1] == "mirai", command
        return command[command.index("-m") + 2:]
    return command[1:]


def test_the_readme_has_its_commands():
    assert len(README.splitlines()) < 200
    names = {mirai_argv(c)[0] for c in MIRAI}
    assert {"demo", "train", "sample", "eval", "compare", "prepare", "import", "export", "bench"} <= names


def test_the_readmes_test_command_is_what_ci_runs():
    setup = [" ".join(c) for c in commands(README) if c[:2] == ["pip", "install"]]
    assert setup == ["pip install -e .", "pip install -e .[test]"]  # the main job's install, then the tests'
    assert 'pip install -q -e ".[test]" && python -m pytest -q' in (ROOT / ".ci" / "run").read_text()
    assert ["python", "-m", "pytest", "-q"] in commands(README)


@pytest.mark.parametrize("command", MIRAI, ids=[" ".join(c)[:70] for c in MIRAI])
def test_a_readme_command_parses_and_its_configs_are_valid(command, capsys):
    argv = mirai_argv(command)
    if "--help" in argv:
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == 0 and "usage: mirai" in capsys.readouterr().out
        return
    args = _parser().parse_args(argv)
    if args.command == "demo":
        demo_plan(args).check()  # every stage's config builds
        if args.dry_run:
            assert main(argv) == 0 and "stages:" in capsys.readouterr().out
    elif args.command == "train":
        load_config(args.config, args.overrides)
    elif args.command in ("prepare", "import", "world") and getattr(args, "config", None) or \
            getattr(args, "overrides", None) and args.command in ("prepare", "world"):
        load_config(args.config, args.overrides, model_only=True)
