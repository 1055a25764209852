"""The deployment files, checked without a Docker engine: they parse, name files that exist,
and say what the README promises."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def dockerfile() -> list[str]:
    text = (ROOT / "Dockerfile").read_text()
    return [
        line.strip()
        for line in text.replace("\\\n", " ").splitlines()
        if line.strip() and not line.startswith("#")
    ]


def test_dockerfile_layers_and_command() -> None:
    lines = dockerfile()
    assert re.match(r"FROM python:3\.11[\w.]*-slim$", lines[0])
    copies = [line.split()[1:-1] for line in lines if line.startswith("COPY")]
    for sources in copies:
        for source in sources:
            assert (ROOT / source).exists(), source
    index = {
        line.split()[0] + " " + line.split()[1]: i for i, line in enumerate(lines) if len(line.split()) > 1
    }
    # Dependencies are installed in their own layer before the source is copied.
    assert index["COPY requirements.txt"] < index["RUN pip"] < index["COPY src"]
    user = [line for line in lines if line.startswith("USER")]
    assert user and user[-1].split()[1] not in ("root", "0")
    assert any(line.startswith("HEALTHCHECK") and "/healthz" in line for line in lines)
    assert lines[-1] == 'CMD ["./boot/docker-run.sh"]'
    assert (ROOT / "boot/docker-run.sh").stat().st_mode & 0o111


def test_compose_file() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    db, app = compose["services"]["db"], compose["services"]["app"]
    image, tag = db["image"].split(":")
    assert image == "timescale/timescaledb" and tag.endswith("-pg17") and tag[0].isdigit()
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    volume = db["volumes"][0].split(":")[0]
    assert volume in compose["volumes"]
    assert app["build"] == "."
    assert app["depends_on"]["db"]["condition"] == "service_healthy"
    assert app["ports"] == ["8002:8000"]
    for service in (db, app):
        assert (ROOT / service["env_file"]).exists()


def test_env_compose_has_every_setting_the_stack_needs() -> None:
    settings = dict(
        line.split("=", 1)
        for line in (ROOT / ".env.compose").read_text().splitlines()
        if line and not line.startswith("#")
    )
    for name in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB", "DATABASE_URL", "PORT"):
        assert settings.get(name), name
    assert "@db:5432/" in settings["DATABASE_URL"]
    assert settings["POSTGRES_PASSWORD"] in settings["DATABASE_URL"]
    assert settings["PORT"] == "8000"


def test_railway_config() -> None:
    railway = json.loads((ROOT / "railway.json").read_text())
    assert railway["build"]["builder"] == "DOCKERFILE"
    assert (ROOT / railway["build"]["dockerfilePath"]).exists()
    assert railway["deploy"]["healthcheckPath"] == "/healthz"
    assert railway["deploy"]["restartPolicyType"] in ("ON_FAILURE", "ALWAYS")
    assert (ROOT / railway["deploy"]["startCommand"]).exists()


def test_no_secrets_in_the_image() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".env" in ignored and ".git" in ignored
    assert not any("ENV" in line and "PASSWORD" in line for line in dockerfile())
