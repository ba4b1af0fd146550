"""Files lbtui reads, writes and removes: the config write-back (exclusive temporary file,
symbolic links written through, owner and mode kept, 0600 for new files), capped UTF-8
reads that never traceback, and removals confined to lbtui's own directories."""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
from pathlib import Path

import pytest

from lbtui.control.config import ConfigError, load_config
from lbtui.control.configfile import save_config
from lbtui.control.instance import PIN_ROOT, pin_dir_of, state_dir_of
from lbtui.control.lock import run_dir
from lbtui.control.state import read_state, state_path
from lbtui.files import OutsideOwnDir, remove_inside

from .conftest import LBTUI, TAG, tree

CONFIG = """\
# the operator's comment
[datapath]
instance = "safety-files"
interfaces = ["c1"]

[[listener]]
port = 80
targets = [{ ip = "198.18.101.2", port = 8080 }]
"""


def _edit(path: Path) -> None:
    c = load_config(path)
    c.settings.stats = False
    save_config(c, path)


def test_symlinked_config_is_written_through(tmp_path: Path) -> None:
    real = tmp_path / "real" / "lbtui.toml"
    real.parent.mkdir()
    real.write_text(CONFIG)
    os.chown(real, 1234, 4321)
    real.chmod(0o640)
    link = tmp_path / "lbtui.toml"
    link.symlink_to(real)
    _edit(link)
    assert link.is_symlink() and link.resolve() == real          # the link stays a link
    st = real.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 4321, 0o640)
    assert "stats = false" in real.read_text() and "# the operator's comment" in real.read_text()
    assert sorted(p.name for p in real.parent.iterdir()) == ["lbtui.toml"]   # no temp left


def test_new_config_file_is_private(tmp_path: Path) -> None:
    c = load_config(_write(tmp_path / "a.toml", CONFIG))
    save_config(c, tmp_path / "new.toml")
    assert stat.S_IMODE((tmp_path / "new.toml").stat().st_mode) == 0o600


def test_a_planted_temporary_file_is_never_followed(tmp_path: Path) -> None:
    """The old temporary name was predictable (.NAME.PID.tmp): a symbolic link planted
    there must not redirect the write."""
    path = _write(tmp_path / "lbtui.toml", CONFIG)
    victim = _write(tmp_path / "victim", "untouched\n")
    (tmp_path / f".lbtui.toml.{os.getpid()}.tmp").symlink_to(victim)
    _edit(path)
    assert victim.read_text() == "untouched\n"
    assert "stats = false" in path.read_text()


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _huge(p: Path) -> None:
    with p.open("wb") as f:
        f.truncate(17 << 20)


@pytest.mark.parametrize("make,says", [
    (lambda p: p.write_bytes(b"[datapath]\ninstance = \"\xff\"\n"), "not UTF-8 text (line 2"),
    (lambda p: p.write_text("x = " + "{a = " * 3000 + "1" + "}" * 3000), "nested too deeply"),
    (_huge, "larger than 16777216 bytes"),
    (os.mkfifo, "not a regular file"),
    (lambda p: p.mkdir(), "not a regular file"),
    (lambda p: None, "file not found"),
    (lambda p: p.symlink_to(p.parent / "gone"), "file not found"),
])
def test_unreadable_configs_are_validation_errors(tmp_path: Path, make, says: str) -> None:
    path = tmp_path / "lbtui.toml"
    make(path)
    with pytest.raises(ConfigError, match=r".") as e:
        load_config(path)
    assert says in str(e.value)


def test_removals_stay_inside_their_directory(tmp_path: Path) -> None:
    own, outside = tmp_path / "own", tmp_path / "outside"
    (own / "x").mkdir(parents=True)
    outside.mkdir()
    _write(outside / "keep", "keep\n")
    before = tree(outside)
    (own / "link").symlink_to(outside)
    for bad in (own / "link", own / ".." / "outside", own, own / "x" / ".." / ".."):
        with pytest.raises(OutsideOwnDir, match="refusing to remove"):
            remove_inside(bad, own)
    assert tree(outside) == before
    assert remove_inside(own / "x", own) and not (own / "x").exists()
    assert not remove_inside(own / "x", own)                  # idempotent


def test_down_refuses_instance_dirs_that_point_outside(state_dir: Path) -> None:
    """Pins and state planted as symbolic links to a decoy: ``down`` removes neither."""
    name = f"{TAG}-planted"
    decoy = Path(f"/tmp/lbtui-decoy-{TAG}-planted")
    (decoy / "sub").mkdir(parents=True, exist_ok=True)
    _write(decoy / "keep.txt", "decoy\n")
    before = tree(decoy)
    PIN_ROOT.mkdir(mode=0o700, parents=True, exist_ok=True)
    links = [pin_dir_of(name), state_dir_of(name)]
    try:
        for link in links:
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(decoy)
            r = subprocess.run([*LBTUI, "down", "--instance", name], capture_output=True,
                               text=True, timeout=60)
            assert r.returncode == 1 and "refusing to remove" in r.stderr, r.stderr
            assert tree(decoy) == before
            link.unlink()
    finally:
        for link in links:
            if link.is_symlink():
                link.unlink()
        subprocess.run(["rm", "-rf", str(decoy)], check=True)
        with contextlib.suppress(OSError):
            PIN_ROOT.rmdir()                 # no empty pin root left behind
        for lock in run_dir().glob(f"{name}.*"):  # the refused `down`'s lock files
            lock.unlink()


@pytest.mark.parametrize("text", ["[]", "null", '"serving"', '{"attachments": [', "\xff"])
def test_a_damaged_state_file_reads_as_no_state_and_down_removes_it(text: str) -> None:
    """A state file cut short, or holding JSON that is not an object, is no state: every
    reader sees None (not a list or a string to crash on) and ``down`` clears it."""
    name = f"{TAG}-damaged"
    run_dir()
    path = state_path(name)
    path.write_bytes(text.encode("latin-1"))
    try:
        assert read_state(name) is None
        r = subprocess.run([*LBTUI, "down", "--instance", name], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert "removed state file" in r.stdout and not path.exists(), (r.stdout, r.stderr)
    finally:
        path.unlink(missing_ok=True)
