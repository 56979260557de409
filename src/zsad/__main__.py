"""``python -m zsad`` runs the command line."""

from zsad.cli import main

main()
