"""This checkout as a user gets it: a wheel built from a clean copy of the working tree,
installed (not editable) into a fresh venv.

The rest of the suite runs against the editable install, which imports straight from
the source tree: a folder left out of the wheel (``supervisors/`` once was) or a data
file missing from ``package_data`` goes unnoticed there. ``make test`` runs this every
time, so it is built to be fast:

- the wheel is built by calling pyproject.toml's build backend, as pip and ``build``
  do (PEP 517's ``build_wheel``), in the test venv, which has the build requirements
  (setup.cfg's ``test`` extra lists them): this spares a fresh build environment and
  pip's start-up per run (0.7 s instead of 2 s with ``pip wheel --no-build-isolation``,
  7 s with isolation). The price: the setuptools of the test venv, not the newest one
  an isolated build would fetch; ``python -m build`` (isolated, sdist then wheel) gave
  the same files when this was written;
- the fresh venv is made ``--without-pip`` and filled by the test venv's pip
  (``pip --python``), with ``--no-compile`` (a run compiles only what it imports);
- one process imports every module of the installed package right after the install
  (:data:`IMPORT_EVERYTHING`; tests/packaging/test_wheel.py checks what it saw), which
  also compiles what the demo's nodes import, whichever test runs first;
- the demo runs once per suite, from this venv (tests/cluster/test_demo.py);
- the dependencies come offline (``--no-index``) from a wheelhouse kept in the test venv
  (``<venv>/wheelhouse``, gone with ``make clean``). The first run fills it from the
  package index, through pip's cache; so does any run whose wheel needs something the
  wheelhouse lacks. The install still resolves the wheel's own ``Requires-Dist`` in an
  empty venv, so a dependency missing from ``install_requires`` fails here.

Everything else lives in one temporary directory, removed at the end. Every program
runs there, outside the source tree and without ``PYTHONPATH``, so nothing can import
the checkout instead of the installed package.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "thespian_cluster"
WHEELHOUSE = Path(sys.prefix) / "wheelhouse"
#: Build output and tool state: never in a clean checkout.
ARTEFACTS = frozenset(
    {".git", ".venv", "build", "dist", "__pycache__", ".mypy_cache", ".ruff_cache"}
    | {".pytest_cache", ".hypothesis", ".demo"}
)
#: Variables that would let a program import something other than the installed wheel.
LEAKY_ENV = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")


#: Run by the fresh venv's python: import everything the package has and say, as JSON
#: on the last line, what came from where.
IMPORT_EVERYTHING = """
import importlib, importlib.metadata, json, pkgutil
import thespian_cluster, thespian_cluster.messages

found = pkgutil.walk_packages(thespian_cluster.__path__, "thespian_cluster.")
modules = sorted(m.name for m in found)
for name in modules:
    importlib.import_module(name)
missing = [
    f"{where.__name__}.{name}"
    for where in (thespian_cluster, thespian_cluster.messages)
    for name in where.__all__
    if not hasattr(where, name)
]
print(json.dumps({
    "file": thespian_cluster.__file__,
    "modules": modules,
    "missing": missing,
    "version": thespian_cluster.__version__,
    "metadata_version": importlib.metadata.version("thespian-cluster"),
}))
"""


@dataclass(frozen=True)
class InstalledWheel:
    """A fresh venv holding the wheel and its dependencies, and where to run it from."""

    wheel: Path
    venv: Path
    #: The working directory of every run: empty, outside the source tree.
    cwd: Path
    env: dict[str, str]
    #: The package's files in the checkout the wheel was built from, as wheel paths.
    source_files: frozenset[str]
    #: :data:`IMPORT_EVERYTHING`, run once right after the install.
    imported: subprocess.CompletedProcess[str]

    def run(
        self, program: str, *args: str, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run ``program`` of the venv's ``bin/`` (``python``, ``thespian-cluster``).

        Returns:
            The finished process, its output captured as text.

        Raises:
            subprocess.TimeoutExpired: it ran longer than ``timeout`` seconds.
        """
        return subprocess.run(
            [str(self.venv / "bin" / program), *args],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def checkout_files(repo: Path = REPO) -> list[str]:
    """The files a clean checkout of the working tree holds, relative to ``repo``.

    Tracked and new files, not the ignored ones, when ``repo`` is a git checkout;
    otherwise (an unpacked archive, or no git) every file but build output.
    """
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=repo,
            capture_output=True,
            check=True,
        ).stdout.decode()
    except (OSError, subprocess.CalledProcessError):
        return sorted(_walk(repo))
    # A tracked file deleted in the working tree is listed but gone.
    return [name for name in listed.split("\0") if name and (repo / name).is_file()]


def _walk(repo: Path) -> Iterator[str]:
    for top, dirs, files in os.walk(repo):
        dirs[:] = [d for d in dirs if d not in ARTEFACTS and not d.endswith(".egg-info")]
        for name in files:
            if not name.endswith(".pyc"):
                yield str((Path(top) / name).relative_to(repo))


@contextmanager
def installed_wheel(repo: Path = REPO) -> Iterator[InstalledWheel]:
    """Build ``repo`` as a wheel and install it into a fresh venv; remove both after.

    Raises:
        AssertionError: the build or the install failed (with pip's output).
    """
    with tempfile.TemporaryDirectory(prefix="thespian-cluster-wheel-") as scratch:
        work = Path(scratch)
        env = {k: v for k, v in os.environ.items() if k not in LEAKY_ENV}
        source = work / "checkout"
        files = checkout_files(repo)
        for name in files:
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(repo / name, source / name)
        wheel = _build(source, work / "dist", env)
        venv = work / "venv"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        _install(work, env, venv / "bin" / "python", wheel)
        cwd = work / "run"
        cwd.mkdir()
        run_env = {**env, "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"}
        imported = subprocess.run(
            [str(venv / "bin" / "python"), "-c", IMPORT_EVERYTHING],
            cwd=cwd,
            env=run_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        yield InstalledWheel(
            wheel=wheel,
            venv=venv,
            cwd=cwd,
            env=run_env,
            source_files=frozenset(f for f in files if f.startswith(f"{PACKAGE}/")),
            imported=imported,
        )


def _build(source: Path, dist: Path, env: dict[str, str]) -> Path:
    with (source / "pyproject.toml").open("rb") as file:
        backend = tomllib.load(file)["build-system"]["build-backend"]
    hook = "import importlib, sys; print(importlib.import_module(sys.argv[1])"
    hook += ".build_wheel(sys.argv[2]))"
    done = subprocess.run(
        [sys.executable, "-c", hook, backend, str(dist)],
        cwd=source,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise AssertionError(f"{backend}.build_wheel failed:\n{done.stdout}{done.stderr[-4000:]}")
    return dist / done.stdout.splitlines()[-1]


def _install(work: Path, env: dict[str, str], python: Path, wheel: Path) -> None:
    offline = ("--python", str(python), "install", "--no-compile", "--no-index")
    install = (*offline, "--find-links", str(WHEELHOUSE), str(wheel))
    if _pip(work, env, *install, check=False).returncode == 0:
        return
    # The first run, or the wheel needs what the wheelhouse lacks: fill it (pip's cache
    # keeps a refill cheap), then install offline as before.
    _pip(work, env, "wheel", "-w", str(WHEELHOUSE), str(wheel))
    (WHEELHOUSE / wheel.name).unlink(missing_ok=True)  # the next build brings its own
    _pip(work, env, *install)


def _pip(
    cwd: Path, env: dict[str, str], *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--quiet", "--disable-pip-version-check", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"pip {' '.join(args)} failed:\n{done.stdout}{done.stderr[-4000:]}")
    return done
