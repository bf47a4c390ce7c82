"""pyctr's benchmark harness, run by bench/run.sh as root (see bench/README.md)."""
