"""Entry point for `python -m qvl_label`."""

from .entry import run

run()
