"""The README stays true: its settings table is the Settings class, and CI runs the test command it gives."""

from __future__ import annotations

import re
from pathlib import Path

from service.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_settings_table_lists_exactly_the_settings_fields() -> None:
    table = README.split("<!-- settings-table:start -->")[1].split("<!-- settings-table:end -->")[0]
    documented = re.findall(r"^\| `CNNSERVE_([A-Z0-9_]+)` \|", table, flags=re.MULTILINE)
    assert documented == [name.upper() for name in Settings.model_fields]
    for name, field in Settings.model_fields.items():
        assert field.description, f"Settings.{name} has no description"
        assert field.description in table, f"README's row for CNNSERVE_{name.upper()} is out of date"


def test_ci_runs_the_readme_test_command() -> None:
    assert "make test     # " in README
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, flags=re.MULTILINE)


def test_readme_examples_name_real_files_and_models() -> None:
    for path in re.findall(r"@(samples/[\w/.-]+)", README):
        assert (ROOT / path).is_file(), path
    assert (ROOT / "models" / "lenet5_digits" / "config.json").is_file()
