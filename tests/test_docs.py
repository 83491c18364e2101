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
    assert "| `API_ADMIN_TOKEN` | unset (required outside development) |" in text
    assert "| `SMTP_PASSWORD` | unset |" in text
