"""The distribution ships every package of the pipeline stages (not only editable installs)."""

from __future__ import annotations

import os
import tomllib

from setuptools import find_packages

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_package_and_the_bundled_data_are_shipped():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        tool = tomllib.load(f)["tool"]["setuptools"]
    shipped = set(find_packages(ROOT, **tool["packages"]["find"]))
    on_disk = {os.path.relpath(d, ROOT).replace(os.sep, ".")
               for top in ("dialect", "planner", "engine")
               for d, _, files in os.walk(os.path.join(ROOT, top)) if "__init__.py" in files}
    assert on_disk <= shipped, f"not shipped: {sorted(on_disk - shipped)}"
    assert {"engine.protocols", "engine.data"} <= shipped
    assert not {p for p in shipped if p.split(".")[0] in ("tests", "bench", "examples")}
    assert "*.csv" in tool["package-data"]["engine.data"]
    assert os.path.exists(os.path.join(ROOT, "engine", "data", "insurance.csv"))
