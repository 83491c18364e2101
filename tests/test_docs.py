"""The documentation: the configuration reference is generated from the settings and complete;
README.md stays short; every relative link in README.md, docs/ and BENCHMARKS.md resolves."""

from __future__ import annotations

import re
import subprocess
import sys

from data.settings import PROJECT_ROOT, SECTIONS, Settings, reference

CONFIGURATION = PROJECT_ROOT / "docs" / "configuration.md"


def test_the_configuration_reference_is_the_generators_output():
    """Regenerate with `python -m data.settings --reference > docs/configuration.md`."""
    assert CONFIGURATION.read_text() == reference()
    done = subprocess.run(
        [sys.executable, "-m", "data.settings", "--reference"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout == reference()


def test_every_setting_is_in_the_reference_once_under_its_section():
    text = CONFIGURATION.read_text()
    rows = re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", text, flags=re.M)
    assert sorted(rows) == sorted(Settings.model_fields)
    for title, section in SECTIONS:
        body = text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]
        assert set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", body, flags=re.M)) == set(
            section.model_fields
        ), title


def test_the_reference_never_shows_a_secret(monkeypatch):
    """It is built from the class, never from the environment: a real secret set while it is
    generated does not reach the page, and a secret's default reads as unset."""
    monkeypatch.setenv("SLACK_WEBHOOK_URL", "https://hooks.slack.com/services/T0/B0/real")
    monkeypatch.setenv("API_ADMIN_TOKEN", "a-real-token-7f3a")
    text = reference()
    assert "hooks.slack.com" not in text and "a-real-token" not in text
    assert "| `API_ADMIN_TOKEN` | unset (the API requires it outside development) |" in text
    assert "| `SMTP_PASSWORD` | unset |" in text


# --- README and links -------------------------------------------------------------------------

README = PROJECT_ROOT / "README.md"
README_MAX_LINES = 250
PAGES = [README, PROJECT_ROOT / "BENCHMARKS.md", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", flags=re.M | re.S)
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def prose(text: str) -> str:
    """The Markdown outside fenced code blocks and inline code, where links are links."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: link syntax reduced to its text, lower case,
    punctuation dropped (letters, digits, `_`, `-` and spaces stay), spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(path) -> set[str]:
    """Every heading's anchor in a Markdown file; a repeated one gets -1, -2, ... as on GitHub."""
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", FENCE.sub("", path.read_text()), re.M):
        base = anchor = slug(heading)
        n = 0
        while anchor in found:
            n += 1
            anchor = f"{base}-{n}"
        found.add(anchor)
    return found


def links(path) -> list[str]:
    return LINK.findall(prose(path.read_text()))


def test_the_readme_is_short():
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"


def test_the_link_finder_finds_links_and_skips_code():
    text = '[a](x.md) ![b](img/c.png "t") [`d`](y.md#e) `[no](z.md)`\n```\n[no](w.md)\n```\n'
    assert LINK.findall(prose(text)) == ["x.md", "img/c.png", "y.md#e"]
    assert slug("The demo (`make demo`, `python -m demo.run`)") == (
        "the-demo-make-demo-python--m-demorun"
    )
    assert slug("`docker compose up`") == "docker-compose-up"


def test_every_relative_link_reaches_a_file_and_its_heading():
    broken = []
    for page in PAGES:
        for target in links(page):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            path, _, fragment = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            where = f"{page.relative_to(PROJECT_ROOT)}: {target}"
            if not file.is_relative_to(PROJECT_ROOT) or not file.exists():
                broken.append(f"{where} (no such file)")
            elif fragment and (file.suffix != ".md" or fragment not in anchors(file)):
                broken.append(f"{where} (no such heading)")
    assert broken == []


def test_no_page_links_outside_the_repository():
    outside = [
        f"{page.relative_to(PROJECT_ROOT)}: {target}"
        for page in PAGES
        for target in links(page)
        if "../shared" in target
        or (
            not re.match(r"^[a-z][a-z0-9+.-]*:", target)
            and target.partition("#")[0]
            and not (page.parent / target.partition("#")[0]).resolve().is_relative_to(PROJECT_ROOT)
        )
    ]
    assert outside == []
