"""One public surface: every message of the protocol is public or declared internal, and
every public one imports from ``thespian_cluster`` and ``thespian_cluster.messages``.

A message added to a protocol module fails here until it is exported (and so in the
docs' imports) or named in ``messages.INTERNAL_MESSAGES``.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from pathlib import Path
from types import ModuleType

import pytest

import thespian_cluster
from thespian_cluster import messages

REPO = Path(__file__).resolve().parents[2]


def protocol_modules() -> list[str]:
    """The package's modules named ``*messages``: the protocol lives in them."""
    return sorted(
        m.name
        for m in pkgutil.walk_packages(thespian_cluster.__path__, "thespian_cluster.")
        if m.name.endswith("messages")
    )


def protocol_classes() -> list[tuple[str, type]]:
    """(module, class) for every class a protocol module defines, private ones aside."""
    found = []
    for module_name in protocol_modules():
        module = importlib.import_module(module_name)
        for name, value in vars(module).items():
            if inspect.isclass(value) and value.__module__ == module_name and name[0] != "_":
                found.append((module_name, value))
    return found


@pytest.mark.parametrize(
    ("module_name", "cls"),
    protocol_classes(),
    ids=[f"{m.rsplit('.', 1)[1]}.{c.__name__}" for m, c in protocol_classes()],
)
def test_each_protocol_class_is_exported_or_declared_internal(module_name: str, cls: type) -> None:
    name = cls.__name__
    if name in messages.INTERNAL_MESSAGES:
        assert name not in thespian_cluster.__all__
        assert name not in messages.__all__
        assert not hasattr(thespian_cluster, name)
        return
    where = f"{name} (from {module_name})"
    assert name in thespian_cluster.__all__, f"{where} is not in thespian_cluster.__all__"
    assert name in messages.__all__, f"{where} is not in thespian_cluster.messages.__all__"
    assert getattr(thespian_cluster, name) is cls
    assert getattr(messages, name) is cls
    exec(f"from thespian_cluster import {name}\nfrom thespian_cluster.messages import {name}")


def test_the_named_messages_of_the_protocol_are_public() -> None:
    # The ones a user sends and receives to watch a cluster (issue 16, item 6).
    for name in (
        "GetNodeStatus",
        "GetPartitionStatus",
        "ForceResolution",
        "NameConflict",
        "GetGlobalStatus",
        "SubscribeNodeEvents",
        "NodeUp",
        "NodeDown",
    ):
        assert name in thespian_cluster.__all__
        assert name in messages.__all__


def test_every_internal_message_exists() -> None:
    defined = {cls.__name__ for _, cls in protocol_classes()}
    assert defined >= messages.INTERNAL_MESSAGES, "a stale name in INTERNAL_MESSAGES"


def test_every_module_named_messages_is_a_protocol_module() -> None:
    assert set(protocol_modules()) == set(messages.PROTOCOL_MODULES)


@pytest.mark.parametrize("module", [thespian_cluster, messages], ids=lambda m: m.__name__)
def test_every_name_in_all_imports(module: ModuleType) -> None:
    assert len(module.__all__) == len(set(module.__all__)), "a name twice in __all__"
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert not missing
    star: dict[str, object] = {}
    exec(f"from {module.__name__} import *", star)
    assert set(module.__all__) <= set(star)


def test_the_messages_surface_is_part_of_the_package_surface() -> None:
    assert set(messages.__all__) <= set(thespian_cluster.__all__)


def test_a_name_that_is_not_there_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="NoSuchMessage"):
        messages.NoSuchMessage  # noqa: B018
    with pytest.raises(ImportError):
        exec("from thespian_cluster.messages import Hello")  # internal: not re-exported


# ---- the docs show the imports ----------------------------------------------------------


def python_blocks() -> list[tuple[str, str]]:
    """(file, code) of every ```python block of the README and docs/."""
    blocks = []
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for code in re.findall(r"```python\n(.*?)```", path.read_text(), re.DOTALL):
            blocks.append((path.name, code))
    return blocks


@pytest.mark.parametrize(("doc", "code"), python_blocks(), ids=[f for f, _ in python_blocks()])
def test_a_doc_example_imports_the_messages_it_uses(doc: str, code: str) -> None:
    tree = ast.parse(code)
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        and node.module in ("thespian_cluster", "thespian_cluster.messages")
        for alias in node.names
    }
    assert imported <= set(thespian_cluster.__all__), f"{doc} imports what is not exported"
    public_messages = {c.__name__ for _, c in protocol_classes()} - messages.INTERNAL_MESSAGES
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id in public_messages}
    assert used <= imported, f"{doc} uses {sorted(used - imported)} without importing them"
