"""`python -m mirai ...` (and `torchrun ... -m mirai train ...`): the `mirai` command line."""

import sys

from .cli import main

sys.exit(main())
