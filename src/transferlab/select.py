"""`python -m transferlab.select [overrides]`: rank candidate sources for the target by transferability
scores (`experiment=source_selection`; the same as `python -m transferlab.train experiment=source_selection`).
"""

from __future__ import annotations

import sys

EXPERIMENT = "experiment=source_selection"


def main() -> None:
    """Run the source selection as a Hydra app; `experiment=source_selection` unless another is given."""
    if not any(a.startswith(("experiment=", "+experiment=")) for a in sys.argv[1:]):
        sys.argv.insert(1, EXPERIMENT)
    from transferlab.train import main as train_main

    train_main()


if __name__ == "__main__":
    main()
