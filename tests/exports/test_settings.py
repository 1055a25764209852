"""The export settings: defaults, the old system's S3 names, and bad values named."""

from __future__ import annotations

import pytest

from src.api.config import CHECKOUT, SettingsError, load_settings


def test_defaults_are_folders_in_the_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "RAW_EXPORT_URL",
        "PROCESSED_EXPORT_URL",
        "RAW_S3_BUCKET",
        "PROCESSED_S3_BUCKET",
        "EXPORT_FORMAT",
        "EXPORT_INTERVAL",
    ):
        monkeypatch.delenv(name, raising=False)
    exports = load_settings().exports
    assert exports.raw.scheme == "file" and exports.raw.prefix == str(CHECKOUT / "exports" / "raw-events")
    assert exports.processed.prefix == str(CHECKOUT / "exports" / "processed-events")
    assert exports.format == "jsonl" and exports.batch_size == 10000 and exports.interval == 60


def test_buckets_by_the_old_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAW_EXPORT_URL", raising=False)
    monkeypatch.setenv("RAW_S3_BUCKET", "raw-bucket")
    monkeypatch.setenv("RAW_S3_ACCESS_KEY", "AKIAEXAMPLE")
    monkeypatch.setenv("RAW_S3_SECRET_KEY", "s3cr3t-value-long-enough")
    monkeypatch.setenv("PROCESSED_EXPORT_URL", "s3://processed-bucket/out/")
    monkeypatch.setenv("S3_ENDPOINT_URL", "http://127.0.0.1:9000")
    exports = load_settings().exports
    assert (exports.raw.bucket, exports.raw.prefix, exports.raw.url) == (
        "raw-bucket",
        "raw-events",
        "s3://raw-bucket/raw-events",
    )
    assert (exports.processed.bucket, exports.processed.prefix) == ("processed-bucket", "out")
    assert "s3cr3t" not in repr(exports)


@pytest.mark.parametrize(
    ("variable", "value", "extra"),
    [
        ("EXPORT_FORMAT", "csv", {}),
        ("RAW_EXPORT_URL", "ftp://host/x", {}),
        ("RAW_EXPORT_URL", "file://relative/path", {}),
        ("PROCESSED_EXPORT_URL", "s3:///no-bucket", {}),
        ("RAW_S3_BUCKET", "other", {"RAW_EXPORT_URL": "s3://raw/p"}),
        ("RAW_S3_SECRET_KEY", "", {"RAW_S3_ACCESS_KEY": "AKIA"}),
        ("EXPORT_BATCH_SIZE", "0", {}),
        ("EXPORT_INTERVAL", "-1", {}),
        ("EXPORT_GZIP", "maybe", {}),
        ("S3_ENDPOINT_URL", "localhost:9000", {}),
        ("EXPORT_LATE_WINDOW", "a minute", {}),
    ],
)
def test_a_bad_value_names_its_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, extra: dict[str, str]
) -> None:
    monkeypatch.setenv(variable, value)
    for name, setting in extra.items():
        monkeypatch.setenv(name, setting)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert caught.value.variable == variable
