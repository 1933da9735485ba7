"""``python -m crpbot``: the same CLI as the ``crpbot`` console script."""

import sys

from crpbot.cli import main

sys.exit(main())
