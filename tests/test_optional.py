import sys

import pytest

from rewards.optional import MissingExtraError, require


def test_missing_extra_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "laion_clap", None)  # makes the import fail even if installed
    with pytest.raises(MissingExtraError, match=r'pip install -e "\.\[clap\]"'):
        require("laion_clap")


def test_present_module_is_returned():
    assert require("json").dumps([1]) == "[1]"
