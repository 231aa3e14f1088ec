"""The folder layout is the architecture: imports only go down the layers of ARCHITECTURE.md,
and every module in the packages has a user outside the tests."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("dataengine", "pipelines", "trajtok")

# Lower number = lower layer; a module may import its own layer or any lower one.
LAYERS = {
    "dataengine": 0, "dataengine.config": 0,
    "dataengine.format": 1,
    "dataengine.media": 2, "dataengine.metrics": 2, "dataengine.ops": 2,
    "dataengine.sources": 3, "dataengine.backends": 3,
    "dataengine.stages": 4,
    "dataengine.tools": 5,
    "pipelines": 6,
}
# trajtok trains on finished shards: it reads the format, decodes media and scores, nothing else;
# besides, the errors both command lines print as one line and the package root's one version string.
TRAJTOK_MAY_IMPORT = ("dataengine.format", "dataengine.media", "dataengine.metrics", "dataengine.errors")
TRAJTOK_MAY_IMPORT_EXACTLY = ("dataengine",)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(path: Path) -> set[str]:
    """Absolute names of every module an import statement in ``path`` names (relative ones resolved)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.add(target)
            out.update(f"{target}.{alias.name}" for alias in node.names)
    return out


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in LAYERS:
            return LAYERS[".".join(parts[:n])]
    return None


def package_files() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def test_engine_imports_only_go_down_the_layers():
    upward = []
    for path in package_files():
        me = module_name(path)
        if not me.startswith(("dataengine", "pipelines")):
            continue
        mine = layer_of(me)
        for target in imported_modules(path):
            theirs = layer_of(target)
            if theirs is not None and theirs > mine and target in known_modules():
                upward.append(f"{me} -> {target}")
    assert not upward, "imports that go up the layers:\n" + "\n".join(upward)


def test_only_pipelines_import_ray_and_trajtok_reads_only_format_media_metrics():
    bad = []
    for path in package_files():
        me = module_name(path)
        for target in imported_modules(path):
            if target.split(".")[0] == "ray" and not me.startswith("pipelines"):
                bad.append(f"{me} imports ray")
            if me.startswith("trajtok") and target.startswith("dataengine") and target in known_modules() \
                    and not target.startswith(TRAJTOK_MAY_IMPORT) and target not in TRAJTOK_MAY_IMPORT_EXACTLY:
                bad.append(f"{me} -> {target}")
            if me.startswith("dataengine") and target.startswith(("trajtok.train", "pipelines")):
                bad.append(f"{me} -> {target}")
    assert not bad, "\n".join(bad)


def known_modules() -> set[str]:
    return {module_name(p) for p in package_files()}


def test_every_package_module_is_used_outside_the_tests():
    users = [*package_files(), ROOT / "cli.py", *sorted((ROOT / "bench").glob("*.py"))]
    imported: set[str] = set()
    for path in users:
        imported |= imported_modules(path)
    # Backend modules are imported by name from their entry in the backend table, when built.
    from dataengine.backends.table import BACKENDS
    imported |= {entry.builder.partition(":")[0] for entry in BACKENDS.values()}
    # A module counts as used when it or a name inside it is imported by non-test code.
    used = {m for m in known_modules() if any(i == m or i.startswith(m + ".") for i in imported)}
    entry_points = {"trajtok.train.__main__"}
    unused = sorted(m for m in known_modules() - used - entry_points
                    if "." in m and not (ROOT / m.replace(".", "/") / "__init__.py").exists())
    assert not unused, "modules only the tests (or nothing) import: " + ", ".join(unused)


def test_the_architecture_page_names_every_dataengine_folder():
    text = (ROOT / "ARCHITECTURE.md").read_text()
    folders = sorted(p.name for p in (ROOT / "dataengine").iterdir()
                     if p.is_dir() and (p / "__init__.py").exists())
    missing = [f for f in folders if f"dataengine/{f}/" not in text]
    assert not missing, f"ARCHITECTURE.md has no line for: {missing}"
