"""The API sits above report/: no module of the package outside api/ and the command line imports it."""
import ast
from pathlib import Path

import programusers

PACKAGE = Path(programusers.__path__[0])
ABOVE_THE_API = {"api", "commands", "cli.py", "__main__.py"}


def test_nothing_below_the_api_imports_it():
    importers = []
    for path in PACKAGE.rglob("*.py"):
        if path.relative_to(PACKAGE).parts[0] in ABOVE_THE_API:
            continue
        tree = ast.parse(path.read_text())
        imported = [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module]
        imported += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
        if any(name == "programusers.api" or name.startswith("programusers.api.") for name in imported):
            importers.append(str(path.relative_to(PACKAGE)))
    assert importers == []
