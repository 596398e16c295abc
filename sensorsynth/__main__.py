"""``python -m sensorsynth`` runs the same command as the ``sensorsynth`` console script."""

import sys

from .cli import main

sys.exit(main())
