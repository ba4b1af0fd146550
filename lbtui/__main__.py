"""``python -m lbtui``: the same as the ``lbtui`` command."""

import sys

from lbtui.cli import main

sys.exit(main())
