"""Tests for functional_dl.datasets.load_sonnets: the bundled text against facts about it
(its checksum recorded in SOURCES.md, the first and last lines of sonnets I and XX)."""
import hashlib
import importlib.resources
import re

from functional_dl import datasets


def test_sonnets_text_is_the_recorded_file():
    text = datasets.load_sonnets()
    assert isinstance(text, str) and len(text) == 12642 and len(set(text)) == 58
    sources = importlib.resources.files("functional_dl.datasets").joinpath(
        "SOURCES.md").read_text("utf-8")
    digest = hashlib.sha256(text.encode("ascii")).hexdigest()
    assert digest in sources
    assert text.startswith("THE SONNETS\nby William Shakespeare\n")
    assert "\nFrom fairest creatures we desire increase,\n" in text
    assert text.endswith("  Mine be thy love and thy love's use their treasure.\n")
    numerals = re.findall(r"^([IVXL]+)$", text, re.MULTILINE)
    assert numerals[0] == "I" and numerals[-1] == "XX" and len(numerals) == 20
    assert not re.search(r" +\n", text)  # no trailing spaces
