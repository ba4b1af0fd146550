"""What the console shows, as plain data: snapshots of an instance's maps (``collector``,
``snapshot``), per-target traffic (``traffic``), the event stream (``eventfeed``), target
groups (``groups``), the tables' rows and columns (``conns``, ``tables``), the filter
language (``filters``), exports (``export``) and formatting (``fmt``). Nothing here imports
Textual, so all of it runs on worker threads and in tests without a screen."""
