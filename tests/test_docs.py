"""The user documentation stays short, self-contained and true to the code.

Fast: reads files and walks the typer app; runs nothing.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main

from pitstore.cli.app import app

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
README_MAX_LINES = 220


def doc_files() -> list[Path]:
    """README.md and every Markdown file under docs/ that is on disk."""
    return [README, *sorted((ROOT / "docs").rglob("*.md"))]


def test_readme_is_short() -> None:
    n = len(README.read_text().splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines (at most {README_MAX_LINES})"


# "session" is the word for a Spark session and nothing else in the docs: the
# docs describe the product, not how or when it was built. Allowed: "Spark
# session(s)" and "SparkSession"; any other occurrence, in any case, fails.
SPARK_SESSION = re.compile(r"spark\s+sessions?|sparksession", re.IGNORECASE)
SESSION = re.compile(r"session", re.IGNORECASE)


def session_words(text: str) -> list[str]:
    """The lines that use "session" other than as a Spark session."""
    lines = text.splitlines()
    return [line.strip() for line in lines if SESSION.search(SPARK_SESSION.sub("", line))]


def test_session_rule() -> None:
    assert session_words("the Spark session starts; a SparkSession; Spark sessions") == []
    assert session_words("measured in the second session") == ["measured in the second session"]
    assert session_words("a spark_session() call") == ["a spark_session() call"]


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_session_narrative(path: Path) -> None:
    assert session_words(path.read_text()) == []


# [text](target) and [text]: target; images too. Code spans are skipped.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
CODE = re.compile(r"```.*?```|`[^`\n]*`", re.DOTALL)


def links(path: Path) -> Iterator[str]:
    yield from LINK.findall(CODE.sub("", path.read_text()))


def is_external(target: str) -> bool:
    return bool(re.match(r"[a-z][a-z0-9+.-]*:", target, re.IGNORECASE))


def in_git() -> set[str]:
    """Paths tracked by git (or staged), relative to the repository root."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(out.splitlines())


def relative_targets() -> list[tuple[Path, str, Path]]:
    """(doc, link as written, resolved path) for every relative link in the docs."""
    out = []
    for doc in doc_files():
        for target in links(doc):
            if is_external(target) or target.startswith("#"):
                continue
            resolved = (doc.parent / target.split("#", 1)[0]).resolve()
            out.append((doc, target, resolved))
    return out


def test_links_stay_inside_the_repository() -> None:
    outside = [
        f"{doc.relative_to(ROOT)}: {target}"
        for doc, target, resolved in relative_targets()
        if "../shared" in target or not resolved.is_relative_to(ROOT)
    ]
    assert outside == [], "links out of the repository:\n" + "\n".join(outside)


def test_relative_links_point_to_files_in_git() -> None:
    """Every relative link names a file (or folder) git knows. Pages other
    engineers are writing fail here until they are merged: the list says which."""
    tracked = in_git()
    folders = {str(Path(p).parent) for p in tracked} | {
        str(parent) for p in tracked for parent in Path(p).parents
    }
    missing = sorted(
        {
            f"{doc.relative_to(ROOT)} -> {target}"
            for doc, target, resolved in relative_targets()
            if resolved.is_relative_to(ROOT)
            and (rel := str(resolved.relative_to(ROOT))) not in tracked
            and rel not in folders
        }
    )
    assert missing == [], "links to files not in git:\n" + "\n".join(missing)


def commands(cmd: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every command and subcommand of a click command tree (typer's public
    ``get_command`` gives one), with its path: groups have ``commands``."""
    for name, sub in sorted(getattr(cmd, "commands", {}).items()):
        yield (*path, name), sub
        yield from commands(sub, (*path, name))


def cli_sections() -> dict[str, str]:
    """docs/cli.md's text under each heading, by heading."""
    text = (ROOT / "docs" / "cli.md").read_text()
    parts = re.split(r"^#{2,4} (.+)$", text, flags=re.MULTILINE)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def test_every_command_and_option_is_documented() -> None:
    registered = list(commands(typer.main.get_command(app)))
    assert len(registered) >= 19, [p for p, _ in registered]  # the walk reaches subcommands
    sections = cli_sections()
    problems = []
    for path, cmd in registered:
        name = " ".join(path)
        if name not in sections:
            problems.append(f"{name}: no heading")
            continue
        if f"pitstore {name}" not in (ROOT / "docs" / "cli.md").read_text():
            problems.append(f"{name}: no example")
        for param in cmd.params:
            described = any(f"`{opt}" in sections[name] for opt in param.opts)
            if param.param_type_name == "option" and param.name != "help" and not described:
                problems.append(f"{name}: option {param.opts[0]} not described")
    assert problems == [], "docs/cli.md is behind the CLI:\n" + "\n".join(problems)
