"""Install tests reuse the control plane's serve and lab helpers."""

from control.conftest import instance_cleanup, start_serve  # noqa: F401  (fixtures)
