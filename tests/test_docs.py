"""The docs are self-contained: what README and the code cite is in the repository."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [ROOT / "README.md", ROOT / "pyproject.toml", ROOT / "cluster.yaml"] + [
    path
    for folder in ("visplay", "jobs", "bench", "configs", "docs")
    for path in sorted((ROOT / folder).rglob("*"))
    if path.suffix in {".py", ".md", ".yaml", ".toml"}
]
OUTSIDE = ("STACK_NOTES", "STACK NOTES", "DESIGN.md")
"""Notes that live beside a checkout, not in it: a newcomer's clone does not have them."""


def test_no_source_cites_notes_outside_the_repository():
    cites = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in SOURCES
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if any(name in line for name in OUTSIDE)
    ]
    assert cites == []


def test_cited_docs_exist():
    cited = {
        (path.relative_to(ROOT), match)
        for path in SOURCES
        for match in re.findall(r"(?<![\w/:.-])docs/[\w./-]*\w", path.read_text())  # not a URL's docs/
    }
    assert any(match == "docs/stack.md" for _, match in cited)  # the README's install notes cite it
    missing = sorted(f"{where}: {match}" for where, match in cited if not (ROOT / match).exists())
    assert missing == []
