"""``python -m voice_runtime`` is the ``voice-runtime`` command."""

import sys

from voice_runtime.cli import main

sys.exit(main())
