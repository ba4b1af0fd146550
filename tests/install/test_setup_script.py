"""scripts/setup.sh as a new user meets it: `lbtui` on root's PATH, bash completion that
answers, a second run that changes nothing, and --uninstall removing what it added.

It runs in a fresh clone whose .venv links to this checkout's venv (so nothing is
pip-installed), with LBTUI_PREFIX pointing at a temporary prefix instead of /usr/local."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

import lbtui

REPO = Path(__file__).resolve().parents[2]


def setup_sh(clone: Path, prefix: Path, *args: str) -> str:
    p = subprocess.run(["bash", "scripts/setup.sh", *args], cwd=clone, capture_output=True,
                       text=True, timeout=300,
                       env={**os.environ, "LBTUI_PREFIX": str(prefix), "NO_COLOR": "1"})
    assert p.returncode == 0, p.stdout + p.stderr
    assert "\033[" not in p.stdout + p.stderr          # NO_COLOR, and not a terminal
    return p.stdout


def complete(prefix: Path, line: str) -> list[str]:
    """What bash completion offers for ``line`` with the installed completion file."""
    script = (f"source {prefix}/share/bash-completion/completions/lbtui\n"
              f"COMP_LINE='{line}'; COMP_POINT=${{#COMP_LINE}}\n"
              f"read -ra COMP_WORDS <<< '{line}'\n"
              "[[ $COMP_LINE == *' ' ]] && COMP_WORDS+=('')\n"
              "COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))\n"
              "_python_argcomplete lbtui\n"
              "printf '%s\\n' \"${COMPREPLY[@]}\"\n")
    env = {**os.environ, "PATH": f"{prefix}/bin:{os.environ['PATH']}"}
    p = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60,
                       env=env)
    return [w.strip() for w in p.stdout.splitlines() if w.strip()]


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    clone = tmp_path / "lbtui"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=60)
    venv = REPO / ".venv"
    digest = hashlib.sha1((clone / "pyproject.toml").read_bytes()).hexdigest()[:12]
    assert (venv / f".installed-{digest}").exists(), (
        f"{venv} does not match the committed pyproject.toml: run scripts/setup.sh in the "
        "repository first")
    (clone / ".venv").symlink_to(venv)
    return clone


def test_setup_links_completes_and_uninstalls(clone: Path, tmp_path: Path) -> None:
    prefix = tmp_path / "prefix"
    link = prefix / "bin/lbtui"
    bash_file = prefix / "share/bash-completion/completions/lbtui"
    zsh_file = prefix / "share/zsh/site-functions/_lbtui"
    entry = (REPO / ".venv").resolve() / "bin/lbtui"

    out = setup_sh(clone, prefix)
    assert os.readlink(link) == str(entry), out
    assert f"linked {link} -> {entry}" in out
    assert f"installed completion {bash_file}" in out and f"installed completion {zsh_file}" in out
    assert zsh_file.read_text().startswith("#compdef lbtui")
    version = subprocess.run([str(link), "--version"], capture_output=True, text=True,
                             timeout=60).stdout.strip()
    assert version == f"lbtui {lbtui.__version__}"

    # Idempotent: the second run finds everything in place and changes nothing.
    before = {p: p.lstat().st_mtime_ns for p in (link, bash_file, zsh_file)}
    out = setup_sh(clone, prefix)
    assert "apt packages present" in out and "Python packages present" in out
    assert f"{link} -> {entry} present" in out
    assert f"completion {bash_file} present" in out and f"completion {zsh_file} present" in out
    assert {p: p.lstat().st_mtime_ns for p in before} == before

    # Completion asks lbtui itself: commands, subcommands, options.
    assert complete(prefix, "lbtui ch") == ["check"]
    assert {"status", "listeners", "weight", "reload"} <= set(complete(prefix, "lbtui ctl "))
    assert complete(prefix, "lbtui ctl --ins") == ["--instance"]
    assert complete(prefix, "lbtui serve --log-level d") == ["debug"]

    # --uninstall removes what it added, keeps what it did not, and says so.
    out = setup_sh(clone, prefix, "--uninstall")
    for p in (link, bash_file, zsh_file):
        assert not os.path.lexists(p) and f"removed {p}" in out
    assert "kept apt packages" in out
    assert not os.path.lexists(clone / ".venv") and (REPO / ".venv/bin/python").exists()
    out = setup_sh(clone, prefix, "--uninstall")        # nothing left: nothing removed
    assert "removed" not in out and "uninstalled" in out


def test_setup_refuses_unknown_options(clone: Path, tmp_path: Path) -> None:
    p = subprocess.run(["bash", "scripts/setup.sh", "--frobnicate"], cwd=clone,
                       capture_output=True, text=True, timeout=60,
                       env={**os.environ, "LBTUI_PREFIX": str(tmp_path / "prefix")})
    assert p.returncode == 1 and "unknown option --frobnicate" in p.stderr
    assert not (tmp_path / "prefix").exists()
