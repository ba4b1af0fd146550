"""A real ``lbtui serve`` on a shape: the config file, the process, its status (what
``lbtui ctl status`` reports), and a teardown that leaves no pins or XDP behind (also on
failure)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lbtui import envelope
from lbtui.control.instance import Instance
from lbtui.control.instance import teardown as teardown_instance

from .shapes import Shape

LBTUI = [sys.executable, "-m", "lbtui.cli"]


def write_config(shape: Shape, directory: Path, instance: str, mode: str,
                 listeners: str) -> Path:
    """``<directory>/<instance>.toml``: the shape's ``[datapath]`` with ``mode``, quick
    sweeps, then ``listeners`` (TOML tables)."""
    path = directory / f"{instance}.toml"
    path.write_text(f"{shape.datapath_toml(instance, mode)}\n[settings]\n"
                    f"sweep_interval = 1.0\n\n{listeners}")
    return path


@dataclass
class Served:
    instance: str
    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    def output(self, last: int = 30) -> str:
        return "\n".join(self.lines[-last:])

    def status(self) -> dict[str, Any]:
        """What ``lbtui ctl status --json`` reports of the instance (read in this process:
        a ``ctl`` subprocess costs a 0.4 s start-up, and cells ask several times)."""
        inst = Instance.attach(self.instance)
        try:
            return json.loads(envelope.dumps(inst.status()))
        finally:
            inst.close()

    def xdp_modes(self) -> dict[str, str | None]:
        return {i["ifname"]: i["xdp_mode"] for i in self.status()["interfaces"]}


@contextmanager
def serving(config: Path, instance: str, timeout: float = 60) -> Iterator[Served]:
    """``lbtui serve --config`` until the block ends; SIGTERM then, and the instance torn
    down whatever happened."""
    proc = subprocess.Popen([*LBTUI, "serve", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    served = Served(instance, proc)
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            served.lines.append(line.rstrip("\n"))
            if "serving instance" in line:
                ready.set()
        ready.set()  # exited: wake the waiter

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        if not ready.wait(timeout) or proc.poll() is not None:
            raise RuntimeError(f"lbtui serve did not start (rc {proc.poll()}):\n"
                               f"{served.output()}")
        yield served
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        reader.join(5)
        teardown_instance(instance)
