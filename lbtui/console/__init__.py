"""The operator console: a Textual app over a running lbtui instance.

``app`` wires the views, ``collector`` takes snapshots off the UI thread, ``conns`` decodes
the conntrack map into compact rows, ``traffic`` derives per-target rates, and ``forms``
holds the modal editors that apply changes through ``lbtui.control.Controller``.
"""
