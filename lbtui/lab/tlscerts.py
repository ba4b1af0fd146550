"""A throwaway CA and one server certificate for the lab's TLS backends (openssl CLI).

The certificate names every demo SNI hostname (subjectAltName), so each backend can serve
any of them; which backend answers is decided by the SNI route, not by the certificate.
"""

from __future__ import annotations

import subprocess
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


def make_certs(directory: Path, hostnames: list[str], days: int = 30) -> TlsFiles:
    """Create (or reuse) ``ca.pem``, ``server.pem`` and ``server.key`` in ``directory``."""
    if not hostnames:
        raise ValueError("make_certs: at least one hostname")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    if all(p.exists() for p in (files.ca, files.cert, files.key)):
        return files
    ca_key, csr, ext = directory / "ca.key", directory / "server.csr", directory / "san.ext"
    _openssl("req", "-x509", *_EC, "-keyout", str(ca_key), "-out", str(files.ca),
             "-days", str(days), "-subj", "/CN=lbtui lab CA")
    _openssl("req", *_EC, "-keyout", str(files.key), "-out", str(csr),
             "-subj", f"/CN={hostnames[0]}")
    ext.write_text("subjectAltName=" + ",".join(f"DNS:{h}" for h in hostnames) + "\n")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(files.ca), "-CAkey", str(ca_key),
             "-CAcreateserial", "-out", str(files.cert), "-days", str(days),
             "-extfile", str(ext))
    for p in (ca_key, files.key):
        p.chmod(0o600)
    return files
