"""Kill anywhere, lose nothing: the kill harness of tests/harness/kill.py (see its docstring).

    python scripts/kill_harness.py                       # every stage, 20 trials each
    python scripts/kill_harness.py --stages dmd --trials 5 --json
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.harness.kill import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
