"""The README and docs/ link only to files inside the repository, and every link and anchor resolves."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    return {_slug(line.lstrip("#")) for line in page.read_text().splitlines() if line.startswith("#")}


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_links_stay_in_the_repository_and_resolve(page: Path):
    text = page.read_text()
    assert "../shared" not in text and "DESIGN.md" not in text, "the design lives in docs/design.md"
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto: — not a file of the repo
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        assert resolved.is_relative_to(ROOT), f"{page.name}: {target} points outside the repository"
        assert resolved.exists(), f"{page.name}: {target} does not exist"
        if anchor and resolved.suffix == ".md":
            assert anchor in _anchors(resolved), f"{page.name}: no heading #{anchor} in {resolved.name}"


def test_readme_links_the_design():
    assert "](docs/design.md)" in (ROOT / "README.md").read_text()


def test_the_module_map_names_every_module():
    """docs/design.md §3: every top-level module and package of ``sclft/`` (and of the trainer) is on the map."""
    design = (ROOT / "docs" / "design.md").read_text()
    section = design[design.index("## 3. Architecture"):design.index("## 4.")]
    block = section[section.index("```") + 3:]
    block = block[:block.index("```")]
    named = set(re.findall(r"[\w<>]+(?:\.py|/)", block))
    package = ROOT / "sclft"
    modules = {p.name for p in package.glob("*.py") if p.name != "__init__.py"}
    modules |= {p.name + "/" for p in package.iterdir() if (p / "__init__.py").is_file()}
    modules |= {p.name for p in (package / "training").glob("*.py") if p.name != "__init__.py"}
    assert modules - named == set()
