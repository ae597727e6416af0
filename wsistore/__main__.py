"""``python -m wsistore`` runs the command line."""

import sys

from wsistore.cli import main

sys.exit(main())
