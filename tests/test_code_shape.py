"""The package stays readable: no function over 60 lines, no class over 150 lines of methods
(scripts/code_shape.py prints the longest of each)."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _code_shape():
    spec = importlib.util.spec_from_file_location("code_shape", ROOT / "scripts" / "code_shape.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_long_functions_or_classes_in_the_package():
    functions, classes = _code_shape().lengths(ROOT / "lbt_study")
    assert functions and classes  # it read the package
    assert [f for f in functions if f[0] > 60] == []
    assert [c for c in classes if c[0] > 150] == []


def test_the_measure_counts_a_function_and_a_class(tmp_path):
    (tmp_path / "m.py").write_text("class A:\n    def f(self):\n        return 1\n\n"
                                   "    def g(self):\n        x = 1\n        return x\n")
    functions, classes = _code_shape().lengths(tmp_path)
    assert [n for n, _ in functions] == [3, 2]
    assert classes[0][0] == 5 and "A (2 methods)" in classes[0][1]
