"""``python -m ccproxy``."""

from ccproxy.cli import main

main()
