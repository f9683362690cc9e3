"""Kill anywhere, lose nothing: the kill harness of `mirai.reliability` (see its docstring).

    python scripts/kill_harness.py                       # every stage, 20 trials each
    python scripts/kill_harness.py --stages dmd --trials 5 --json
"""

import sys

from mirai.reliability import main

if __name__ == "__main__":
    sys.exit(main())
