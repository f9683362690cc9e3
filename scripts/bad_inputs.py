"""Print every bad-input case of tests/test_bad_inputs.py with the one-line message it gives now.

    python scripts/bad_inputs.py            # a Markdown table: case | message (the temp folder shown as <tmp>)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.test_bad_inputs import CASES, message_of  # noqa: E402


def main() -> int:
    print("| case | message |\n|---|---|")
    mismatches = 0
    for name in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            got, expected = message_of(name, Path(tmp))
            mismatches += got != expected
            print(f"| {name} | `{got.replace(tmp, '<tmp>')}`{'' if got == expected else ' (differs from the test)'} |")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
