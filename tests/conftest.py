"""Shared fixtures. Data from ../shared is required under CI (CI=true) and skipped with a reason elsewhere."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from edge.config import EdgeConfig, load_config
from tests.mqtt_broker import Broker, Pki, make_pki, missing_tools

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def missing(msg: str) -> NoReturn:
    """A missing test asset or tool fails under CI (CI=true) and skips elsewhere, saying how to get it."""
    if os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}:
        pytest.fail(msg)
    pytest.skip(msg)


def shared_path(rel: str) -> Path:
    """Path under ../shared; fails under CI and skips elsewhere when the file is missing."""
    path = SHARED / rel
    if not path.exists():
        missing(f"missing {path}: the shared data set (footage, models) must sit beside the repository as "
                "../shared; see ../shared/docs/DATA.md for where each file comes from")
    return path


@pytest.fixture(scope="session")
def model_dir() -> Path:
    return shared_path("models")


def repo_config(name: str, model_dir: Path) -> EdgeConfig:
    """A config from config/ with the detector pointed at the shared models."""
    config = load_config(REPO / "config" / name)
    return config.model_copy(
        update={"detector": config.detector.model_copy(update={"model_dir": model_dir})}
    )


# ------------------------------------------------------------------------------ a real Mosquitto broker
@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    if absent := missing_tools():
        missing(f"{', '.join(absent)} not found: the MQTT tests run a real broker; install it with "
                "`apt-get install mosquitto mosquitto-clients openssl`")
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def broker(pki: Pki, tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path / "broker", pki)
    b.start()
    yield b
    b.stop()


@pytest.fixture
def deploy_broker(pki: Pki, tmp_path: Path) -> Iterator[Any]:
    """The deploy/ example Mosquitto (device, dashboard and reader listeners) on free ports, for one test."""
    from tests.dashboard_support import DeployBroker

    b = DeployBroker(tmp_path / "broker", pki)
    b.start()
    yield b
    b.stop()
