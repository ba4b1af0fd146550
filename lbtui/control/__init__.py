"""Control plane: the config file, a running instance, run-time edits, serve/down/ctl."""
