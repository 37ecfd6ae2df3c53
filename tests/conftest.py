"""Shared fixtures: where the public corpus and address data live."""
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"


def _shared():
    env = os.environ.get("NKSTREAM_SHARED")
    for cand in ([pathlib.Path(env)] if env else []) + [ROOT.parent / "shared", ROOT / "shared"]:
        if (cand / "corpus" / "public").is_dir():
            return cand
    return None


SHARED = _shared()
CORPUS = SHARED / "corpus" / "public" if SHARED else None
DATA = SHARED / "data" if SHARED else None


def corpus_captures():
    """Every capture file of the public corpus (not the expected outputs)."""
    if CORPUS is None:
        return []
    return sorted(
        p for p in CORPUS.iterdir()
        if p.is_file() and not p.name.endswith((".expected.out", ".ndpireader42.txt"))
    )


@pytest.fixture(scope="session")
def corpus_dir():
    if CORPUS is None:
        pytest.fail("public corpus not found: set NKSTREAM_SHARED to the shared/ folder")
    return CORPUS


@pytest.fixture(scope="session")
def data_dir():
    if DATA is None:
        pytest.fail("shared/data not found: set NKSTREAM_SHARED to the shared/ folder")
    return DATA


def pytest_report_header(config):
    try:
        from nkstream import _core
    except ImportError as exc:  # pragma: no cover - a broken build fails the tests anyway
        return f"nkstream core: not importable ({exc})"
    build = "debug (bounds checks on)" if _core.DEBUG_BUILD else "release"
    return f"nkstream core: {build} build, {_core.__file__}"
