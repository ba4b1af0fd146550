"""Widgets shared by the views: the virtual table, the status header, the filter bar."""
