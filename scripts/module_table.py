"""Print the architecture table of docs/design.md from the code itself: each module of hvd_mlp, its one job (the
first line of its docstring), the hvd_mlp modules it imports, and whether it calls Horovod.

    python scripts/module_table.py
"""
import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "hvd_mlp"


def describe(path: pathlib.Path) -> tuple:
    tree = ast.parse(path.read_text())
    job = (ast.get_docstring(tree) or "").strip().splitlines()[0] if ast.get_docstring(tree) else ""
    uses, horovod = set(), False
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module in ("hvd_mlp", "hvd_mlp.timeline"):  # modules, or names the subpackage exports
                folder = PACKAGE.joinpath(*node.module.split(".")[1:])
                base = node.module.removeprefix("hvd_mlp").lstrip(".")
                uses.update(f"{base}.{alias.name}".lstrip(".") if (folder / f"{alias.name}.py").exists() else base
                            for alias in node.names)
            elif node.module.startswith("hvd_mlp."):
                uses.add(node.module.removeprefix("hvd_mlp."))
            horovod |= node.module.startswith("horovod")
        elif isinstance(node, ast.Import):
            horovod |= any(alias.name.startswith("horovod") for alias in node.names)
    return job, sorted(uses), horovod


def main():
    print("| module | lines | its one job | imports from hvd_mlp | Horovod |")
    print("|---|---:|---|---|:---:|")
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        if name == "__init__":
            continue
        job, uses, horovod = describe(path)
        lines = len(path.read_text().splitlines())
        print(f"| `{name}` | {lines} | {job} | {', '.join(uses) or '-'} | {'yes' if horovod else ''} |")


if __name__ == "__main__":
    main()
