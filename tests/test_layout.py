"""The rooms of mixlib and the one-way rule between them, read from every import statement of the package (those
inside functions too): ``core`` imports nothing of the other rooms; ``fit`` only ``core``; ``image`` and ``recsys``
never each other; ``api`` (the estimators) may import every room, and no room imports it."""

import ast

import pytest
from conftest import REPO

ROOMS = ("api", "core", "fit", "image", "recsys")
MAY_IMPORT = {"core": set(), "fit": {"core"}, "image": {"core", "fit"}, "recsys": {"core", "fit"},
              "api": {"core", "fit", "image", "recsys"}}


def imported_rooms(path, root=REPO):
    """``{(room, line)}`` of every mixlib room that the module at ``path`` (under ``root``) imports."""
    package = path.relative_to(root).with_suffix("").parts[:-1]  # ('mixlib', 'image') for mixlib/image/x.py
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            base = list(package[:len(package) - node.level + 1]) if node.level else []
            names = [".".join(base + ([node.module] if node.module else []) + ([] if node.module else [a.name]))
                     for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "mixlib" and len(parts) > 1 and parts[1] in ROOMS:
                found.add((parts[1], node.lineno))
    return found


def modules(room):
    return sorted((REPO / "mixlib" / room).glob("*.py"))


@pytest.mark.parametrize("room", ROOMS)
def test_rooms_import_only_what_the_rule_allows(room):
    assert modules(room), f"mixlib/{room} has no modules"
    broken = [f"{path.relative_to(REPO)}:{line} imports mixlib.{other}"
              for path in modules(room) for other, line in imported_rooms(path)
              if other != room and other not in MAY_IMPORT[room]]
    assert not broken, broken


def test_every_module_lives_in_a_room():
    """The package's top level holds only its __init__; every module sits in one of the rooms."""
    assert [p.name for p in (REPO / "mixlib").glob("*.py")] == ["__init__.py"]
    folders = sorted(p.name for p in (REPO / "mixlib").iterdir() if p.is_dir() and p.name != "__pycache__")
    assert folders == sorted(ROOMS)


def test_the_rule_reader_sees_relative_and_nested_imports(tmp_path):
    """The reader itself: relative imports of every depth and imports inside functions are found."""
    probe = tmp_path / "mixlib" / "fit" / "probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text("from ..image import colors\n\ndef f():\n    from mixlib.recsys.als import predict\n"
                     "    from .kmeans import fit_kmeans\n    from ..core.errors import InputError\n"
                     "    import mixlib.core.cli\n")
    assert {other for other, _ in imported_rooms(probe, tmp_path)} == {"image", "recsys", "fit", "core"}
    assert {line for other, line in imported_rooms(probe, tmp_path) if other == "core"} == {6, 7}
