"""The longest functions and classes of a package: a check on "short enough to read at once".

    python scripts/code_shape.py [PACKAGE_DIR] [--top 10] [--max-function 60] [--max-class 150]

A function's length is its lines from ``def`` to its last line (docstring included); a class's
is the sum of its methods' lengths. Exits 1 when anything is over the limits.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path


def lengths(root: Path) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """([(lines, 'file:line name')] of every function, [...] of every class's methods)."""
    functions, classes = [], []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            where = f"{path}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                functions.append((node.end_lineno - node.lineno + 1, f"{where} {node.name}"))
            elif isinstance(node, ast.ClassDef):
                methods = [n for n in node.body
                           if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
                total = sum(m.end_lineno - m.lineno + 1 for m in methods)
                classes.append((total, f"{where} {node.name} ({len(methods)} methods)"))
    return sorted(functions, reverse=True), sorted(classes, reverse=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", default="lbt_study", type=Path)
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--max-function", type=int, default=60)
    parser.add_argument("--max-class", type=int, default=150)
    args = parser.parse_args()
    functions, classes = lengths(args.root)
    print(f"longest functions (limit {args.max_function} lines):")
    for n, name in functions[: args.top]:
        print(f"  {n:4d}  {name}")
    print(f"classes with the most lines of methods (limit {args.max_class}):")
    for n, name in classes[: args.top]:
        print(f"  {n:4d}  {name}")
    over = [f for f in functions if f[0] > args.max_function] + \
        [c for c in classes if c[0] > args.max_class]
    for n, name in over:
        print(f"over the limit: {name} ({n} lines)")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
