"""Run Python as a container image would: only its copied folders and installed packages importable.

Run as a script in a subprocess of the test environment (which has every package installed):

    python tests/deploy/_image_python.py SPEC.json

SPEC holds `app_dir` (a folder holding copies of the folders the Dockerfile copies, as `/app` in
the image), `distributions` (the names `uv export` lists for the image's `uv sync`), `entry`
(the modules the image starts from) and `env` (variables to set first). It

1. follows every `import` the entry modules can reach in the copied folders, function-level ones
   included (a lazy import runs only when its code path does: a drift alert, a rollback), and
   reports each that the image could not satisfy;
2. removes the repository (the editable install) from `sys.path`, puts `app_dir` first, and blocks
   every module whose file no installed distribution of the image owns;
3. imports each entry module for real under that block.

It prints one JSON object: {"static": [problems], "imports": {module: error or null}}.
"""

from __future__ import annotations

import ast
import importlib
import importlib.abc
import importlib.machinery
import importlib.metadata as md
import importlib.util
import json
import os
import re
import sys
import sysconfig
import traceback
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def owned_files(allowed: set[str]) -> set[str]:
    """The files the allowed distributions install (normalised paths)."""
    files: set[str] = set()
    for dist in md.distributions():
        if canonical(dist.metadata["Name"]) in allowed:
            files.update(os.path.normpath(str(dist.locate_file(f))) for f in dist.files or [])
    return files


def owner_of(path: str) -> str:
    """The distribution that installed a file (looked up only for a refusal's message)."""
    for dist in md.distributions():
        if any(os.path.normpath(str(dist.locate_file(f))) == path for f in dist.files or []):
            return str(dist.metadata["Name"])
    return "an unknown distribution"


class ImageBlocker(importlib.abc.MetaPathFinder):
    """Refuse modules that live in site-packages but belong to no distribution of the image."""

    def __init__(self, site_dirs: Sequence[str], allowed_files: set[str]):
        self.site_dirs = [os.path.normpath(d) for d in site_dirs]
        self.allowed_files = allowed_files

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None:
            return None
        origin = spec.origin
        if origin in (None, "namespace", "built-in", "frozen"):
            return None  # built into the interpreter, or a namespace package (no files of its own)
        path = os.path.normpath(origin)
        if self._in_site(path) and path not in self.allowed_files:
            raise ModuleNotFoundError(self._message(fullname, path), name=fullname)
        return None  # let the normal finders load it

    def _in_site(self, path: str) -> bool:
        return any(path == d or path.startswith(d + os.sep) for d in self.site_dirs)

    def _message(self, fullname: str, path: str) -> str:
        dist = canonical(owner_of(path))
        return f"No module named {fullname!r} in this image ({dist} is not installed there)"


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every absolute import in a file, except `if TYPE_CHECKING:` blocks."""
    tree = ast.parse(path.read_text(), str(path))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                skipped.update(id(n) for n in ast.walk(child))
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def module_file(app_dir: Path, module: str) -> Path | None:
    """The copied file a module name refers to (a package's `__init__.py`), if any."""
    base = app_dir.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def reachable(app_dir: Path, entry: Sequence[str]) -> dict[Path, list[tuple[int, str]]]:
    """Every copied file the entry modules can run, lazy imports included, with its imports."""
    copied = {p.name for p in app_dir.iterdir() if p.is_dir()}
    todo = list(entry)
    seen: dict[Path, list[tuple[int, str]]] = {}
    while todo:
        module = todo.pop()
        parts = module.split(".")
        if parts[0] not in copied:
            continue
        # Importing a.b.c runs a/__init__.py and a/b/__init__.py first.
        names = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
        for name in names:
            file = module_file(app_dir, name)
            if file is None or file in seen:
                continue
            seen[file] = imports_of(file)
            for _, imported in seen[file]:
                todo.append(imported)
                # `from package import name` may name a submodule.
                todo += [f"{imported}.{alias}" for alias in _from_names(file, imported)]
    return seen


def _from_names(file: Path, module: str) -> list[str]:
    tree = ast.parse(file.read_text(), str(file))
    return [
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == module
        for alias in node.names
    ]


def static_problems(app_dir: Path, entry: Sequence[str]) -> list[str]:
    """Each import the entry modules reach that the image cannot satisfy: `file:line: module`."""
    copied = {p.name for p in app_dir.iterdir() if p.is_dir()}
    problems = []
    for file, imports in sorted(reachable(app_dir, entry).items()):
        for line, module in imports:
            top = module.split(".")[0]
            if top in sys.stdlib_module_names or top == "__future__":
                continue
            where = f"{file.relative_to(app_dir)}:{line}: {module}"
            if top in copied:
                if (
                    module_file(app_dir, module) is None
                    and module_file(app_dir, module.rpartition(".")[0]) is None
                ):
                    problems.append(f"{where}: not in the copied folders")
                continue
            try:
                found = importlib.util.find_spec(top)
            except ModuleNotFoundError as exc:
                problems.append(f"{where}: {exc}")
                continue
            if found is None:
                problems.append(f"{where}: not importable")
    return problems


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    os.environ.update(spec.get("env", {}))
    app_dir = Path(spec["app_dir"])
    repo = os.path.realpath(spec["repo"])
    allowed = {canonical(n) for n in spec["distributions"]}
    site_dirs = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    site_reals = {os.path.realpath(d) for d in site_dirs}

    def keep(entry: str) -> bool:
        real = os.path.realpath(entry)
        if real in site_reals:
            return True
        return bool(entry) and real != repo and not real.startswith(repo + os.sep)

    sys.path[:] = [str(app_dir)] + [p for p in sys.path if keep(p)]
    # The editable install's finder maps the project's packages to the repository: drop it.
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__.lower()]
    blocker = ImageBlocker(sorted(site_dirs), owned_files(allowed))
    sys.meta_path.insert(0, blocker)
    for name in list(sys.modules):
        if name.split(".")[0] in {p.name for p in app_dir.iterdir()}:
            del sys.modules[name]
    result: dict[str, object] = {"static": static_problems(app_dir, spec["entry"]), "imports": {}}
    imports: dict[str, str | None] = {}
    for module in spec["entry"]:
        try:
            loaded = importlib.import_module(module)
            if module.split(".")[0] in {p.name for p in app_dir.iterdir()}:
                origin = loaded.__file__ or ""
                assert origin.startswith(str(app_dir)), f"{module} came from {origin}"
            imports[module] = None
        except BaseException as exc:  # report anything: the test shows it
            imports[module] = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    result["imports"] = imports
    print("IMAGE-RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
