"""The wheel is the product: built from the sources, installed into a fresh venv outside
the checkout, its `lbtui serve` compiles the datapath from the C sources it carries and
balances real traffic on a namespace lab, then stops cleanly."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
import zipfile
from pathlib import Path

import pytest
from control.conftest import http_get, instance_name, lab_config

from lbtui.control.instance import _xdp_state, pin_dir_of

pytestmark = [pytest.mark.datapath, pytest.mark.netns]
REPO = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
BPF_SOURCES = {"lb_xdp.c", "lb_abi.h", "lb_parse.h", "lb_csum.h", "sk_splice.c"}


def run(argv: list[str], cwd: Path, timeout: float = 120) -> str:
    p = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"{argv} exited {p.returncode}:\n{p.stdout}\n{p.stderr}"
    return p.stdout


def build_wheel(tmp: Path) -> Path:
    """A wheel of the working tree, built from a copy (the checkout stays untouched)."""
    src = tmp / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".venv", ".git", "build", "*.egg-info", "__pycache__", ".pytest_cache", "tests",
        "screenshots", "bench"))
    run([str(REPO / ".venv/bin/pip"), "wheel", "-q", "--no-deps", "-w", str(tmp / "dist"),
         str(src)], cwd=tmp, timeout=300)
    (wheel,) = (tmp / "dist").glob("lbtui-*.whl")
    return wheel


def test_wheel_installs_into_a_fresh_venv_and_serves(make_lab, state_dir, instance_cleanup,
                                                     start_serve, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("PYTHONPATH", "LBTUI_BPF_DIR", "VIRTUAL_ENV"):  # nothing leads back here
        monkeypatch.delenv(var, raising=False)
    wheel = build_wheel(tmp_path)
    assert wheel.name == f"lbtui-{VERSION}-py3-none-any.whl"
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.rsplit("/", 1)[1] for n in names if "/datapath/bpf/" in n} == BPF_SOURCES
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)

    # A venv like the one scripts/setup.sh makes: Debian's python3, bcc from the system.
    venv = tmp_path / "venv"
    run(["/usr/bin/python3", "-m", "venv", "--system-site-packages", str(venv)], tmp_path)
    run([str(venv / "bin/pip"), "install", "-q", str(wheel)], tmp_path, timeout=300)
    where = run([str(venv / "bin/python"), "-c", "import lbtui, lbtui.datapath.loader as l; "
                 "print(lbtui.__file__); print(l.BPF_DIR)"], tmp_path).split()
    site = venv / "lib"
    assert all(Path(w).is_relative_to(site) for w in where), where  # not the checkout
    assert run([str(venv / "bin/lbtui"), "--version"], tmp_path).strip() == f"lbtui {VERSION}"

    topo = make_lab(1, 1)
    name = instance_name()
    instance_cleanup.append(name)
    config = tmp_path / "lbtui.toml"
    config.write_text(lab_config(topo, name, http_weights=(100,)))
    serve = start_serve(config, argv=[str(venv / "bin/lbtui")], cwd=tmp_path)
    assert http_get(topo) == "backend1"                 # balanced by the installed datapath
    assert serve.stop() == 0
    assert "XDP detached and pins removed" in serve.output
    assert not pin_dir_of(name).exists()
    assert all(_xdp_state(i, topo.lb_ns) == (None, 0)
               for i in (*topo.client_ifnames, *topo.backend_ifnames))
