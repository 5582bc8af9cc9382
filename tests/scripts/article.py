"""The reference article's SyncJS script, byte for byte.

``shared/reference/aft-external-workflow-api.txt`` (beside the repository, or beside the
directory holding a worktree of it) holds the article; its script runs from the line
``// REST API integration: claim, transfer, report`` to the ``}`` after its final ``Exit(1);``.
CI clones the repository without that file in it, so ``data/article_claim_transfer_report.js``
is a copy of the script, checked against the article whenever the article is there.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["COPY", "article_script", "extract", "reference_file"]

ROOT = Path(__file__).resolve().parents[2]
COPY = Path(__file__).resolve().parent / "data" / "article_claim_transfer_report.js"
_REFERENCE = Path("shared") / "reference" / "aft-external-workflow-api.txt"
START = "// REST API integration: claim, transfer, report"
END = "    Exit(1);\n}"


def reference_file() -> Path | None:
    for base in (ROOT.parent, ROOT.parent.parent):
        path = base / _REFERENCE
        if path.is_file():
            return path
    return None


def extract(article: bytes) -> bytes:
    """The script in the article's bytes: from START to the end of the last END."""
    start = article.index(START.encode())
    end = article.rindex(END.encode(), start) + len(END)
    return article[start:end] + b"\n"


def article_script() -> bytes:
    """From the article when it is there, else the committed copy."""
    ref = reference_file()
    return extract(ref.read_bytes()) if ref is not None else COPY.read_bytes()
