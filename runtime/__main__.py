"""``python3 -m runtime`` is ``mycontainer``."""

from runtime.launcher import main

main()
