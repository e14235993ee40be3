"""`python -m siglip` is the `siglip` command."""

import sys

from .cli import main

sys.exit(main())
