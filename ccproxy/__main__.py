"""``python -m ccproxy``."""

from ccproxy.launch import main

main()
