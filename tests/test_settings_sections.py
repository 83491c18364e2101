"""Settings grouped into sections: one flat namespace, every variable described, and
pydantic-settings' behaviour (env file, case, empty values, validators) kept through the mixins."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from data.settings import SECTIONS, Settings


def test_settings_is_every_section_and_nothing_else():
    sections = [section for _, section in SECTIONS]
    assert Settings.__bases__[:-1] == tuple(reversed(sections))
    names = [name for section in sections for name in section.model_fields]
    assert len(names) == len(set(names)), "a variable in two sections"
    # in the sections' order, and no field of Settings' own
    assert names == list(Settings.model_fields)


def test_every_section_and_every_field_says_what_it_configures():
    for title, section in SECTIONS:
        assert issubclass(section, BaseModel) and title
        assert section.__doc__ and len(section.__doc__.split()) >= 8, section.__name__
        for name, field in section.model_fields.items():
            assert field.description and len(field.description.split()) >= 4, name


def test_the_settings_configuration_survives_the_mixins():
    config = Settings.model_config
    assert config["env_file"] == ".env" and config["extra"] == "ignore"
    assert config["case_sensitive"] is True and config["env_ignore_empty"] is True
    assert config["validate_default"] is True  # BaseSettings' own, not BaseModel's


def test_env_file_case_and_empty_values_through_the_sections(tmp_path, monkeypatch):
    for name in Settings.model_fields:
        monkeypatch.delenv(name, raising=False)
    (tmp_path / ".env").write_text("EXPORTER_PORT=9200\nSMTP_HOST=\nnotify_retries=7\n")
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    assert settings.EXPORTER_PORT == 9200  # from .env, a field of ExporterSettings
    assert settings.SMTP_HOST is None  # empty means unset
    assert settings.NOTIFY_RETRIES == 3  # names are case-sensitive
    monkeypatch.setenv("EXPORTER_PORT", "9300")
    assert Settings().EXPORTER_PORT == 9300  # the environment wins over .env


def test_a_section_validator_and_the_cross_section_one_still_run(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "./mlruns")
    with pytest.raises(ValidationError, match="is a file store"):
        Settings()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///var/mlflow.db")
    monkeypatch.setenv("SMTP_HOST", "mail.example.com")
    with pytest.raises(ValidationError, match="ALERT_EMAIL_FROM, ALERT_EMAIL_TO unset"):
        Settings()


def test_properties_of_the_sections_reach_settings(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "sqlite:///var/x.db")
    settings = Settings()
    assert settings.is_development and settings.database_url.endswith("/var/x.db")
