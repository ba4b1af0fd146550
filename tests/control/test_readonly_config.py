"""A config file on a read-only /etc (systemd's ProtectSystem=strict): run-time edits go to
the working copy under $LBTUI_STATE_DIR, survive restarts, yield to the operator's own
edits of the file, and are written back once the file is writable again.

serve runs in a private mount namespace where the config's directory is a read-only bind
mount, as it would under the unit; ctl and the test see the directory writable."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from lbtui.control.config import load_config

from .conftest import LBTUI, ctl_json, ctl_ok, instance_name, lab_config, spread

pytestmark = [pytest.mark.datapath, pytest.mark.netns]


def readonly(directory: Path) -> list[str]:
    """argv prefix: run the rest with ``directory`` mounted read-only (own mount ns)."""
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            'mount --bind -o ro "$0" "$0" && exec "$@"', str(directory), *LBTUI]


def weights(path: Path) -> list[int]:
    return [t.weight for t in load_config(path).listener(80).group.targets]


def test_edits_on_a_readonly_config(make_lab, state_dir, instance_cleanup, start_serve,
                                    tmp_path: Path) -> None:
    topo = make_lab(1, 2)
    b1, b2 = (e.ip for e in topo.backends)
    name = instance_name()
    instance_cleanup.append(name)
    etc = tmp_path / "etc"
    etc.mkdir()
    source = etc / "lbtui.toml"
    source.write_text(lab_config(topo, name, http_weights=(50, 50)))
    original = source.read_bytes()
    copy = state_dir / f"{name}.toml"

    # 1. serve cannot write the file: edits go to the working copy.
    serve = start_serve(source, argv=readonly(etc))
    serve.wait_for(f"copied to {copy}")
    assert ctl_json(name, "status")["config_path"] == str(copy)
    ctl_ok(name, "weight", "listener", "80", f"{b2}:8080", "0")
    assert source.read_bytes() == original and weights(copy) == [100, 0]
    assert set(spread(topo, 10)) == {"backend1"}

    # 2. A restart keeps the edit (the file did not change since it was copied).
    assert serve.stop() == 0
    serve = start_serve(source, argv=readonly(etc))
    serve.wait_for(f"run-time edits are in {copy}")
    assert set(spread(topo, 10)) == {"backend1"}

    # 3. The operator edits the file itself and reloads: the file wins, the dropped copy
    #    is kept beside it.
    source.write_text(source.read_text().replace("weight = 50 },  # backend1",
                                                 "weight = 0 },  # backend1")
                      .replace("weight = 50 },  # backend2", "weight = 100 },  # backend2"))
    mark = serve.mark()
    ctl_ok(name, "reload")
    serve.wait_for("reloaded", since=mark)
    assert "changed: run-time edits" in serve.output
    assert weights(copy.with_name(copy.name + ".replaced")) == [100, 0]
    assert set(spread(topo, 10)) == {"backend2"}
    ctl_ok(name, "weight", "listener", "80", f"{b1}:8080", "20")
    assert weights(copy) == [20, 80] and weights(source) == [0, 100]
    assert serve.stop() == 0

    # 4. Writable again: the copy's edits are written back into the file, comments kept.
    serve = start_serve(source)
    serve.wait_for("written back into")
    assert weights(source) == [20, 80] and not copy.exists()
    assert "# control-plane test config" in source.read_text()
    assert ctl_json(name, "status")["config_path"] == str(source)
    assert serve.stop() == 0


def test_readonly_helper_really_is_readonly(tmp_path: Path) -> None:
    """The mount trick above makes the directory read-only for the command only."""
    argv = [*readonly(tmp_path)[:-len(LBTUI)], "touch", str(tmp_path / "x")]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "Read-only file system" in r.stderr
    (tmp_path / "y").touch()                    # still writable outside
