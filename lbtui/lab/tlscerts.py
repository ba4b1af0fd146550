"""Throwaway certificates for the lab's TLS backends (openssl CLI): the one home of the
lab's certificates.

``make_certs``: a CA and one server certificate naming every demo SNI hostname
(subjectAltName), so each backend can serve any of them; which backend answers is decided
by the SNI route, not by the certificate. ``make_backend_certs``: a CA and one certificate
per backend whose subject CN is the backend's name (so a client can tell from the
certificate which backend it reached), valid for the given names and addresses.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


def _openssl(*args: str) -> None:
    try:
        subprocess.run(["openssl", *args], check=True, capture_output=True, text=True,
                       timeout=30)
    except FileNotFoundError:
        raise RuntimeError("openssl not found: run scripts/setup.sh (installs openssl)") from None
    except subprocess.CalledProcessError as e:
        raise RuntimeError(f"openssl {args[0]} failed: {e.stderr.strip()}") from None


def _make_ca(directory: Path, days: int) -> tuple[Path, Path]:
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    _openssl("req", "-x509", *_EC, "-keyout", str(ca_key), "-out", str(ca),
             "-days", str(days), "-subj", "/CN=lbtui lab CA")
    ca_key.chmod(0o600)
    return ca, ca_key


def _sign(directory: Path, ca: Path, ca_key: Path, cert: Path, key: Path, cn: str,
          sans: list[str], days: int) -> None:
    csr, ext = directory / f"{cert.stem}.csr", directory / f"{cert.stem}.ext"
    _openssl("req", *_EC, "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={cn}")
    ext.write_text("subjectAltName=" + ",".join(sans) + "\n")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
             "-CAcreateserial", "-out", str(cert), "-days", str(days), "-extfile", str(ext))
    key.chmod(0o600)


def make_backend_certs(directory: Path, names: Sequence[str], *, dns: Sequence[str] = (),
                       ips: Sequence[str] = (), days: int = 2) -> Path:
    """``ca.pem`` and, per backend name, ``<name>.pem``/``<name>.key`` (CN = the name,
    valid for ``<name>.test``, ``dns`` and ``ips``) in ``directory``, which is returned."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca, ca_key = _make_ca(directory, days)
    for name in names:
        sans = [f"DNS:{name}.test", *(f"DNS:{d}" for d in dns), *(f"IP:{i}" for i in ips)]
        _sign(directory, ca, ca_key, directory / f"{name}.pem", directory / f"{name}.key",
              name, sans, days)
    return directory


def make_certs(directory: Path, hostnames: list[str], days: int = 30) -> TlsFiles:
    """Create (or reuse) ``ca.pem``, ``server.pem`` and ``server.key`` in ``directory``."""
    if not hostnames:
        raise ValueError("make_certs: at least one hostname")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    if all(p.exists() for p in (files.ca, files.cert, files.key)):
        return files
    ca, ca_key = _make_ca(directory, days)
    _sign(directory, ca, ca_key, files.cert, files.key, hostnames[0],
          [f"DNS:{h}" for h in hostnames], days)
    return files
