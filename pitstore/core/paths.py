"""Where the repository's non-Python parts live: the Feast repo and the dbt project.

They sit at the top of the checkout (``feature_repo/``, ``transforms/dbt/``) where
users look for them; the package finds them relative to itself.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = PACKAGE_DIR.parent
FEATURE_REPO = REPO_ROOT / "feature_repo"
DBT_DIR = REPO_ROOT / "transforms" / "dbt"
