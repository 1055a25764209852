"""The deployment files, checked without a Docker engine: they parse, name files that exist,
and say what the README promises. (tests/deploy/test_docker_run.py runs the boot script.)"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def dockerfile() -> list[str]:
    """Instructions, one per line: continuations joined, comments and blank lines dropped."""
    text = (ROOT / "Dockerfile").read_text()
    return [
        line.strip()
        for line in text.replace("\\\n", " ").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def healthcheck_command() -> str:
    """The shell command of the Dockerfile's HEALTHCHECK (run for real in test_docker_run)."""
    (line,) = [line for line in dockerfile() if line.startswith("HEALTHCHECK")]
    return line.split(" CMD ", 1)[1]


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def env_compose() -> dict[str, str]:
    return dict(
        line.split("=", 1)
        for line in (ROOT / ".env.compose").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )


def test_dockerfile_layers_and_command() -> None:
    lines = dockerfile()
    assert re.fullmatch(r"FROM python:3\.11\.\d+-slim(-\w+)?", lines[0]), "a pinned 3.11 slim image"
    copies = [line.split()[1:-1] for line in lines if line.startswith("COPY")]
    for sources in copies:
        for source in sources:
            assert (ROOT / source).exists(), source
    position = {" ".join(line.split()[:2]): i for i, line in enumerate(lines)}
    # Dependencies are installed in their own layer before the source is copied, so a code
    # change does not reinstall them.
    assert position["COPY requirements.txt"] < position["RUN pip"] < position["COPY src"]
    assert "-r requirements.txt" in lines[position["RUN pip"]]
    users = [line.split()[1] for line in lines if line.startswith("USER")]
    assert users and users[-1] not in ("root", "0")
    assert position["USER app"] > position["RUN pip"]
    assert "/healthz" in healthcheck_command()
    assert "EXPOSE 8000" in lines
    assert lines[-1] == 'CMD ["./boot/docker-run.sh"]'
    assert (ROOT / "boot/docker-run.sh").stat().st_mode & 0o111, "the boot script is executable"


def test_compose_file() -> None:
    stack = compose()
    db, app = stack["services"]["db"], stack["services"]["app"]
    image, tag = db["image"].split(":")
    assert image == "timescale/timescaledb"
    assert re.fullmatch(r"\d+\.\d+\.\d+-pg17", tag), "a pinned TimescaleDB release on PostgreSQL 17"
    check = " ".join(db["healthcheck"]["test"])
    assert "pg_isready" in check and "-h 127.0.0.1" in check
    volume = db["volumes"][0].split(":")[0]
    assert volume in stack["volumes"]
    assert app["build"] == "."
    assert (ROOT / "Dockerfile").exists()
    assert app["depends_on"]["db"]["condition"] == "service_healthy"
    assert app["ports"] == ["8002:8000"]
    # Compose waits longer than the workers' graceful timeout before SIGKILL.
    assert int(app["stop_grace_period"].rstrip("s")) > int(env_compose()["GRACEFUL_TIMEOUT"])
    for service in (db, app):
        assert (ROOT / service["env_file"]).exists()
        assert "environment" not in service, "settings live in .env.compose only"


def test_env_compose_has_every_setting_the_stack_needs() -> None:
    settings = env_compose()
    for name in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB", "DATABASE_URL", "PORT"):
        assert settings.get(name), name
    user, password, database = (settings[n] for n in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"))
    assert settings["DATABASE_URL"] == f"postgresql+psycopg://{user}:{password}@db:5432/{database}"
    assert settings["PORT"] == "8000"
    # Every name is read by someone: the service's settings, the boot script or the image.
    read_by_service = set(re.findall(r'"([A-Z][A-Z0-9_]+)"', (ROOT / "src/api/config.py").read_text()))
    read_by_script = {
        name
        for script in ("boot/docker-run.sh", "boot/worker.sh")
        for name in re.findall(r"\$\{([A-Z_]+)", (ROOT / script).read_text())
    }
    read_by_image = {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"}
    unknown = set(settings) - read_by_service - read_by_script - read_by_image
    assert not unknown, f"nobody reads {sorted(unknown)}"
    assert not [value for value in settings.values() if " #" in value], "comments on their own lines"


def test_railway_config() -> None:
    railway = json.loads((ROOT / "railway.json").read_text())
    assert railway["build"]["builder"] == "DOCKERFILE"
    assert (ROOT / railway["build"]["dockerfilePath"]).exists()
    deploy = railway["deploy"]
    assert deploy["healthcheckPath"] == "/healthz"
    assert deploy["restartPolicyType"] in ("ON_FAILURE", "ALWAYS")
    assert "startCommand" not in deploy, "the Dockerfile's CMD is the one start command"
    # Railway's SIGTERM-to-SIGKILL wait must cover the workers' graceful timeout.
    assert deploy["drainingSeconds"] > int(env_compose()["GRACEFUL_TIMEOUT"])


def test_no_secrets_in_the_image() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".env", ".env.*", ".git"} <= set(ignored)
    lines = dockerfile()
    assert not [
        line
        for line in lines
        if line.startswith(("ENV", "ARG")) and re.search(r"PASSWORD|SECRET|KEY|DATABASE_URL", line)
    ]
    copied = {source for line in lines if line.startswith("COPY") for source in line.split()[1:-1]}
    assert copied == {"requirements.txt", "src", "boot/docker-run.sh", "boot/worker.sh"}
