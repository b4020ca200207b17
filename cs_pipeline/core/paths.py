"""Paths of the project's own files (dbt project, expectation suites, YAML configuration)."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # cs_pipeline/
PROJECT_ROOT = PACKAGE_DIR.parent
DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"
EXPECTATIONS_DIR = PROJECT_ROOT / "expectations"
FEATURE_CATALOGUE_CSV = DBT_PROJECT_DIR / "seeds" / "feature_catalogue.csv"
CONFIG_DIR = PACKAGE_DIR / "config"
