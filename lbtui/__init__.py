"""lbtui: an XDP layer-4 load balancer with a Textual operator console."""

from importlib.metadata import PackageNotFoundError, version

try:
    # The one place the version lives is pyproject.toml; installs record it in metadata.
    __version__ = version("lbtui")
except PackageNotFoundError:  # a checkout run without `pip install` (scripts/setup.sh)
    __version__ = "0+unknown"
