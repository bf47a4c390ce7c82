"""Entry point of pyctr-helper."""

import sys


def main() -> None:
    sys.exit("pyctr-helper: not implemented yet")
