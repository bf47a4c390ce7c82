"""pyctr-helper: the small root D-Bus service that does only the network steps needing root."""
