"""Pinned maps outlive the lbtui that made them (``serve --keep``, a crash). A later lbtui
whose map layouts differ must refuse them, naming both layout versions and what to do,
instead of reading their bytes with the wrong layout: on re-adoption by ``serve`` and on
open by ``ctl`` (and the console, which opens them the same way)."""

from __future__ import annotations

import ctypes as ct
import os
import subprocess
from pathlib import Path

import pytest

from lbtui import abi, bpfsys
from lbtui import maps as M
from lbtui.control.instance import pin_dir_of

from .conftest import LBTUI, ctl, ctl_json, instance_name, lab_config

pytestmark = [pytest.mark.datapath, pytest.mark.netns]


@pytest.fixture
def kept(make_lab, instance_cleanup, start_serve, tmp_path: Path) -> tuple[str, Path]:
    """An instance left forwarding by ``serve --keep``: its maps pinned, no manager."""
    topo = make_lab(1, 2)
    name = instance_name()
    instance_cleanup.append(name)
    path = tmp_path / "lbtui.toml"
    path.write_text(lab_config(topo, name, http_weights=(50, 50)))
    serve = start_serve(path, "--keep")
    assert serve.stop() == 0
    assert ctl_json(name, "status")["kept"] is True
    return name, path


def pin_listing(name: str) -> dict[str, int]:
    d = pin_dir_of(name)
    return {p.name: os.stat(p).st_ino for p in d.iterdir()}


def test_an_older_layout_version_is_refused_by_ctl_and_serve(kept: tuple[str, Path]) -> None:
    name, path = kept
    settings = bpfsys.obj_get(str(pin_dir_of(name) / "settings"))
    try:
        bpfsys.update(settings, ct.c_uint32(abi.SETTING_ABI_VERSION), ct.c_uint32(1))
    finally:
        os.close(settings)
    before = pin_listing(name)

    r = ctl(name, "status")
    assert r.returncode == 1
    assert "map layout version 1" in r.stderr
    assert f"this lbtui uses map layout version {abi.ABI_VERSION}" in r.stderr
    assert f"lbtui down --instance {name}" in r.stderr

    r = subprocess.run([*LBTUI, "serve", "--config", str(path)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1 and "map layout version 1" in r.stderr
    assert pin_listing(name) == before, "nothing was removed or replaced"

    r = subprocess.run([*LBTUI, "down", "--instance", name], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and "removed pins" in r.stdout


def test_a_map_with_other_sizes_is_refused_naming_it(kept: tuple[str, Path]) -> None:
    """Same version number but a map whose value size differs (a hand-made or corrupt
    pin): refused, the map named, nothing read."""
    name, _ = kept
    vips = pin_dir_of(name) / "vips"
    vips.unlink()
    fd = bpfsys.create_map(bpfsys.MAP_TYPE_HASH, "lb_vips", 8, 8, 16)
    try:
        bpfsys.obj_pin(fd, str(vips))
    finally:
        os.close(fd)
    r = ctl(name, "status")
    assert r.returncode == 1
    assert "map 'vips' has type/key/value sizes" in r.stderr
    with pytest.raises(M.AbiMismatch):
        M.MapSet.open_pinned(pin_dir_of(name))
