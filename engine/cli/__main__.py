"""``python -m engine.cli``: the ``mpcsql`` command."""

import sys

from engine.cli.main import main

sys.exit(main())
