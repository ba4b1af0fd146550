"""lbtui: an XDP layer-4 load balancer with a Textual operator console."""

__version__ = "0.1.0"
