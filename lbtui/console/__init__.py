"""The operator console: a Textual app over a running lbtui instance.

- ``data/``: what is shown, as plain data and without Textual: snapshots of the maps
  (``collector``, taken off the UI thread), per-target and per-(group, target) traffic,
  the event feed and the hub's health, checks and edits (``hub``), SNI names from the
  applied record (``names``), reasons, the tables' rows, the filter language, exports;
- ``widgets/``: the virtual table, the status header, the filter bar;
- ``views/``: the six views; ``forms/``: the modal editors and dialogs;
- ``app``: wires them; edits go to the Controller through its ``Control`` protocol, off
  the event loop (``blocking``); ``messages``: every message, as dataclasses.
"""
