"""`python -m siglip.train ...` (also under `torchrun ... -m siglip.train`): the same as `siglip train ...`."""

from __future__ import annotations

import sys

from ..cli import train as train_command

if __name__ == "__main__":
    sys.exit(train_command.main())
