"""Allow `python -m unpack`."""

from unpack.cli import main

main()
