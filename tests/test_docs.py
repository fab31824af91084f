"""The documentation site (mkdocs.yml, docs/): every page is in the nav, every relative link of the pages
and of README.md reaches an existing file and heading, and `mkdocs build --strict` passes.

The first checks read the Markdown themselves (no mkdocs needed), with the heading ids of Python-Markdown's
`toc` extension; the builds run where mkdocs is installed (the `docs` extra, part of `dev`, so in CI).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

DOCS = REPO / "docs"
PAGES = sorted(DOCS.glob("*.md"))
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # https:, mailto:, ...


def _nav_files(entry) -> list[str]:
    """The page files of a nav entry (a file, a {title: file} or a {section: [entries]})."""
    if isinstance(entry, str):
        return [entry]
    if isinstance(entry, dict):
        return [f for value in entry.values() for f in _nav_files(value)]
    return [f for item in entry for f in _nav_files(item)]


def _config() -> dict:
    return yaml.safe_load((REPO / "mkdocs.yml").read_text())


def _prose(text: str) -> list[str]:
    """The lines outside fenced code blocks, with inline code spans blanked (links there are not links)."""
    lines, fence = [], None
    for line in text.splitlines():
        marker = re.match(r"^\s*(```+|~~~+)", line)
        if marker and (fence is None or marker.group(1).startswith(fence)):
            fence = None if fence else marker.group(1)
            lines.append("")
            continue
        lines.append("" if fence else re.sub(r"(`+)(?:(?!\1).)+?\1", "``", line))
    return lines


def _slug(heading: str) -> str:
    """Python-Markdown toc's id of a heading: its text (code, links and emphasis as plain text) slugified."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = text.replace("`", "")
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(page: Path) -> set[str]:
    """The ids a link may point at: each heading's (duplicates numbered _1, _2 as toc does), and on the API
    page each documented object's (mkdocstrings' `::: msccl.x.Y` becomes id `msccl.x.Y`)."""
    found: set[str] = set()
    fence = None
    for line in page.read_text().splitlines():
        marker = re.match(r"^\s*(```+|~~~+)", line)
        if marker and (fence is None or marker.group(1).startswith(fence)):
            fence = None if fence else marker.group(1)
            continue
        if fence:
            continue
        if heading := re.match(r"^#{1,6}\s+(.+?)\s*#*\s*$", line):
            slug, n = _slug(heading.group(1)), 0
            while (slug if n == 0 else f"{slug}_{n}") in found:
                n += 1
            found.add(slug if n == 0 else f"{slug}_{n}")
        elif obj := re.match(r"^:::\s+(\S+)", line):
            found.add(obj.group(1))
    return found


def relative_links(document: Path) -> list[tuple[int, str]]:
    """(line number, target) of each Markdown link or image that stays inside the repository."""
    return [
        (number, target)
        for number, line in enumerate(_prose(document.read_text()), start=1)
        for target in LINK.findall(line)
        if not EXTERNAL.match(target)
    ]


def test_the_anchor_rule_is_pythons_markdown_toc():
    assert _slug("B5. `cross_scale_temperature` is honoured") == "b5-cross_scale_temperature-is-honoured"
    assert _slug("On a GPU: the paper's networks, mixed precision") == (
        "on-a-gpu-the-papers-networks-mixed-precision"
    )
    assert _slug("Exploring the embeddings: `notebooks/explore.ipynb`") == (
        "exploring-the-embeddings-notebooksexploreipynb"
    )


def test_the_nav_lists_every_page_once_and_only_pages_that_exist():
    nav = _nav_files(_config()["nav"])
    assert len(nav) == len(set(nav)), f"pages listed twice: {sorted({p for p in nav if nav.count(p) > 1})}"
    pages = {p.name for p in PAGES}
    assert not pages - set(nav), f"docs pages missing from mkdocs.yml's nav: {sorted(pages - set(nav))}"
    assert not set(nav) - pages, f"nav entries without a page: {sorted(set(nav) - pages)}"
    assert nav[0] == "index.md" and "api.md" in nav


def test_every_page_begins_with_its_title_and_has_one():
    for page in PAGES:
        headings = [line for line in _prose(page.read_text()) if re.match(r"^#\s", line)]
        assert page.read_text().startswith("# "), f"{page.name} does not begin with a '# Title' line"
        assert len(headings) == 1, f"{page.name} has {len(headings)} top-level headings: {headings}"


@pytest.mark.parametrize("document", [REPO / "README.md", *PAGES], ids=lambda p: p.name)
def test_every_relative_link_reaches_a_file_and_heading(document: Path):
    broken = []
    for number, target in relative_links(document):
        path, _, anchor = target.partition("#")
        resolved = (document.parent / path).resolve() if path else document
        where = f"{document.relative_to(REPO)}:{number}: {target}"
        if not resolved.exists():
            broken.append(f"{where} (no such file)")
        elif document.parent == DOCS and not resolved.is_relative_to(DOCS):
            # the site holds docs/ only: link repository files by path in code, or by their GitHub URL
            broken.append(f"{where} (outside docs/, not part of the site)")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{where} (no heading with id {anchor!r} in {resolved.name})")
    assert not broken, "\n".join(broken)


def test_the_link_check_finds_a_broken_anchor_and_a_missing_page(tmp_path: Path):
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n## A `code` heading\n\n[ok](#a-code-heading) [bad](#nowhere) [gone](missing.md)\n"
        "`[not a link](missing.md)`\n\n```\n[nor this](missing.md)\n```\n"
    )
    assert relative_links(page) == [(5, "#a-code-heading"), (5, "#nowhere"), (5, "missing.md")]
    assert anchors(page) == {"page", "a-code-heading"}


def _mkdocs(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    environment = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material's banner about MkDocs 2.0
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", *args], cwd=cwd, env=environment, capture_output=True, text=True
    )


def test_the_site_builds_strictly_with_the_api_reference(tmp_path: Path):
    for module in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python"):
        pytest.importorskip(module, reason="the `docs` extra is not installed")
    result = _mkdocs("build", "--strict", "--site-dir", str(tmp_path / "site"), cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    for name in (
        "msccl.Segmenter",
        "msccl.contrastive.MSCSContrastiveLoss",
        "msccl.training.SegmentationModule",
    ):
        assert f'id="{name}"' in api, f"{name} is missing from the API reference"
    assert "num_classes" in api  # the docstrings' Args sections were rendered, not only the names
    for page in PAGES:
        built = tmp_path / "site" / ("index.html" if page.stem == "index" else f"{page.stem}/index.html")
        assert built.is_file(), f"{page.name} was not built"


def test_a_strict_build_fails_on_a_broken_anchor_with_the_sites_settings(tmp_path: Path):
    pytest.importorskip("mkdocs", reason="the `docs` extra is not installed")
    config = _config()
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text("# Home\n\n[there](other.md#no-such-heading)\n")
    (tmp_path / "docs" / "other.md").write_text("# Other\n\n## A heading\n")
    small = {
        "site_name": "check",
        "nav": ["index.md", "other.md"],
        "validation": config["validation"],
        "markdown_extensions": config["markdown_extensions"],
    }
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(small))
    result = _mkdocs("build", "--strict", cwd=tmp_path)
    assert result.returncode != 0 and "no-such-heading" in result.stderr, result.stderr[-2000:]
    (tmp_path / "docs" / "index.md").write_text("# Home\n\n[there](other.md#a-heading)\n")
    assert _mkdocs("build", "--strict", cwd=tmp_path).returncode == 0
