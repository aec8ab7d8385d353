"""Every example in the package's docstrings runs and prints what it says."""
import doctest
import importlib
import pkgutil

import pytest

import llmlab

MODULES = sorted(m.name for m in pkgutil.walk_packages(llmlab.__path__, "llmlab.")
                 if not m.name.endswith("__main__"))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"


def test_the_examples_are_found():
    examples = sum(len(t.examples) for n in MODULES
                   for t in doctest.DocTestFinder().find(importlib.import_module(n)))
    assert len(MODULES) >= 20 and examples >= 40
