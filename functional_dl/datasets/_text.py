"""A small public-domain English text shipped inside the package, for character models.

``sonnets.txt`` beside this module holds Shakespeare's sonnets I-XX (1609, public domain);
``SOURCES.md`` records where the file comes from.  It is read with
:mod:`importlib.resources`, so the loader works from a source checkout and from an
installed wheel alike, with no network.
"""
from __future__ import annotations

import importlib.resources

__all__ = ["load_sonnets"]

_PACKAGE = __name__.rpartition(".")[0]


def load_sonnets() -> str:
    """Shakespeare's sonnets I-XX as one ``str`` (12 642 ASCII characters, 58 distinct).

    The title line, the byline, then each sonnet's Roman numeral and its fourteen lines,
    separated by blank lines; lines end in ``"\\n"`` with no trailing spaces.  The text is
    Project Gutenberg's edition (etext #1041) as shipped by the ``shakespeare`` package;
    see ``SOURCES.md``.  A character-level language model (``examples/char_transformer.py``)
    maps its characters to ids with ``sorted(set(text))``.
    """
    return importlib.resources.files(_PACKAGE).joinpath("sonnets.txt").read_text("ascii")
