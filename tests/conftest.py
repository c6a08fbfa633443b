"""Shared test fixtures: where ../shared lives (CI clones the repo with shared/ beside it)."""
import os
from pathlib import Path

# The project never depends on ../shared; tests that use its data skip cleanly without it.
SHARED = Path(os.environ.get("DSLNAS_SHARED", Path(__file__).resolve().parents[2] / "shared"))
