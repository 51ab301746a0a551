"""io/ is a library in the shape of Beam's IO modules: it imports nothing else of the package, each module
says in __all__ what it offers, and each public transform or lookup handler documents its arguments and
has display data of its own."""
import ast
import importlib
import importlib.util
import pkgutil
from pathlib import Path

import pytest
from apache_beam.transforms.display import HasDisplayData

import programusers.io

# Every module, those of a package (e.g. kafka/) too: "kafka", "kafka.client", ...
MODULES = [info.name.removeprefix("programusers.io.")
           for info in pkgutil.walk_packages(programusers.io.__path__, "programusers.io.")]


@pytest.mark.parametrize("name", MODULES)
def test_io_imports_nothing_else_of_the_package(name):
    tree = ast.parse(Path(importlib.util.find_spec(f"programusers.io.{name}").origin).read_text())
    imported = [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module]
    imported += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    assert [m for m in imported if m.startswith("programusers") and not m.startswith("programusers.io")] == []


@pytest.mark.parametrize("name", MODULES)
def test_public_transforms_and_handlers_document_their_arguments_and_display_data(name):
    module = importlib.import_module(f"programusers.io.{name}")
    public = [getattr(module, attribute) for attribute in module.__all__]  # each listed name exists
    for thing in public:
        if isinstance(thing, type) and issubclass(thing, HasDisplayData):
            assert "Args:" in (thing.__doc__ or ""), thing
            assert thing.display_data is not HasDisplayData.display_data, thing
