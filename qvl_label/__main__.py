"""Entry point for `python -m qvl_label`."""

from .cli import run

run()
