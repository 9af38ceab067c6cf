"""The wheel a user installs holds the whole package and works outside the checkout.

The demo from that wheel is tests/cluster/test_demo.py (it runs the installed
``thespian-cluster demo``, so the suite runs the demo once, not twice).
"""

from __future__ import annotations

import configparser
import json
import zipfile

from tests.packaging.wheel import PACKAGE, REPO, InstalledWheel


def setup_cfg_version() -> str:
    parser = configparser.ConfigParser()
    parser.read(REPO / "setup.cfg")
    return parser["metadata"]["version"]


def test_the_wheel_ships_every_file_of_the_package(installed_wheel: InstalledWheel) -> None:
    with zipfile.ZipFile(installed_wheel.wheel) as archive:
        shipped = {n for n in archive.namelist() if n.startswith(f"{PACKAGE}/")}
        entry_points = next(n for n in archive.namelist() if n.endswith("entry_points.txt"))
        console_scripts = archive.read(entry_points).decode()
    left_out = sorted(installed_wheel.source_files - shipped)
    assert not left_out, (
        f"in the checkout but not in the wheel: {left_out} (a folder without "
        "__init__.py, or a data file missing from setup.cfg's package_data)"
    )
    assert {f"{PACKAGE}/default.toml", f"{PACKAGE}/py.typed"} <= shipped
    assert not sorted(shipped - installed_wheel.source_files), "the wheel ships stale files"
    assert "thespian-cluster = thespian_cluster.cli:main" in console_scripts


def test_the_installed_package_imports_every_module_and_public_name(
    installed_wheel: InstalledWheel,
) -> None:
    done = installed_wheel.imported  # IMPORT_EVERYTHING, run right after the install
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen["file"].startswith(str(installed_wheel.venv)), "imported the checkout"
    assert seen["missing"] == []
    expected = {
        f[: -len(".py")].removesuffix("/__init__").replace("/", ".")
        for f in installed_wheel.source_files
        if f.endswith(".py") and f != f"{PACKAGE}/__init__.py"
    }
    assert set(seen["modules"]) == expected
    assert seen["version"] == seen["metadata_version"] == setup_cfg_version()


def test_the_installed_command_knows_its_version(installed_wheel: InstalledWheel) -> None:
    done = installed_wheel.run("thespian-cluster", "--version")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == f"thespian-cluster {setup_cfg_version()}"
