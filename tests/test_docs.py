"""The documentation stays inside the repository and its links resolve (files and heading anchors)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SKIP = {".venv", ".git", ".mypy_cache", ".ruff_cache", ".pytest_cache", "build", "__pycache__"}
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def _markdown() -> list[Path]:
    return [ROOT / "README.md", ROOT / "examples" / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text())
    return {_slug(m[1]) for m in re.finditer(r"^#+\s+(.*)$", text, re.M)}


def test_every_relative_link_resolves() -> None:
    broken, checked = [], 0
    for page in _markdown():
        for target in LINK.findall(FENCE.sub("", page.read_text())):
            if re.match(r"[a-z]+:", target):
                continue  # an absolute URL: not ours to check offline
            checked += 1
            file_part, _, anchor = target.partition("#")
            dest = (page.parent / file_part).resolve() if file_part else page
            if not dest.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
            elif not dest.resolve().is_relative_to(ROOT):
                broken.append(f"{page.relative_to(ROOT)}: {target} (outside the repository)")
    assert not broken, "\n".join(broken)
    assert checked > 30, f"only {checked} links found: the link pattern no longer matches the pages"


def test_docs_cover_every_api_section_and_guide() -> None:
    api = (ROOT / "docs" / "api.md").read_text()
    for n in range(1, 16):
        assert re.search(rf"^## {n}\. ", api, re.M), f"docs/api.md has no section {n}"
    guides = {p.stem for p in (ROOT / "docs" / "guides").glob("*.md")}
    assert {"web-state", "supervision", "durability", "running", "overload", "testing"} <= guides


def test_nothing_points_outside_the_repository() -> None:
    """No file refers to the design workspace beside the clone (the parent's ``shared``): a clone has none."""
    offenders = []
    for path in ROOT.rglob("*"):
        parts = path.relative_to(ROOT).parts
        if SKIP & set(parts) or any(p.endswith(".egg-info") or p.startswith(".venv-") for p in parts) \
                or not path.is_file() or path.stat().st_size > 2**20:
            continue
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue
        if "../" + "shared" in text:
            offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, offenders
