"""The SNI hostname file: written on each change, once per deferred batch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lbtui import maps as M
from lbtui.maps import sni_names


def test_names_file_written_once_per_deferred_batch(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    writes: list[str] = []
    real = sni_names.atomic_write
    monkeypatch.setattr(sni_names, "atomic_write",
                        lambda p, text: (writes.append(text), real(p, text)))
    names = M.SniNames(tmp_path / "sni-names.json")
    names.set(1, "a.example.test")
    assert len(writes) == 1
    with names.deferred():
        for h in range(2, 50):
            names.set(h, f"h{h}.example.test")
        names.drop(1)
        assert len(writes) == 1
    assert len(writes) == 2
    on_disk = json.loads((tmp_path / "sni-names.json").read_text())
    assert len(on_disk) == 48 and "1" not in on_disk
    assert M.SniNames(tmp_path / "sni-names.json").names == names.names
    assert (tmp_path / "sni-names.json").stat().st_mode & 0o777 == 0o600
