"""One module per console view; each is a container with its own bindings."""
