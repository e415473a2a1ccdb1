"""`python -m xputools` is the `xpu` command."""
from .cli import main

main()
