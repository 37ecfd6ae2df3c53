"""Shared fixtures of the bench/ suites (pytest-benchmark).

    python -m pytest bench/ --benchmark-only

Generated captures are cached in /tmp (keyed by the generator version, size and seed)
so a second run skips generating them.  The test suite's helpers (the public corpus
location, tests/conftest.py) are re-exported here, because with a conftest.py in
bench/ the name `conftest` means this module in bench/ suites.
"""
import importlib.util
import os
import pathlib
import sys

import pytest

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
if str(ROOT / "tests") not in sys.path:
    sys.path.append(str(ROOT / "tests"))

_spec = importlib.util.spec_from_file_location("nkstream_tests_conftest", ROOT / "tests" / "conftest.py")
_tests_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_tests_conftest)
SHARED = _tests_conftest.SHARED
CORPUS = _tests_conftest.CORPUS
DATA = _tests_conftest.DATA
FIXTURES = _tests_conftest.FIXTURES
corpus_captures = _tests_conftest.corpus_captures

SYNTH_VERSION = 2          # bump when nkstream.synth's output changes (as bench/decode_rate.py)


def cached_capture(n, seed=0):
    """Path of a generated n-packet capture (nkstream.synth, default peers), cached in /tmp."""
    from nkstream import synth

    path = f"/tmp/nkstream-bench-synth-v{SYNTH_VERSION}-{n}-seed{seed}.pcap"
    if not os.path.exists(path):
        tmp = f"{path}.{os.getpid()}.tmp"
        synth.write_pcap(tmp, n, seed=seed)
        os.replace(tmp, path)
    return path


@pytest.fixture(scope="session")
def synth_capture():
    """A 1,000,000-packet generated mixed capture, read once to warm the page cache."""
    path = cached_capture(1_000_000)
    from nkstream.bench import warm

    warm(path)
    return path


@pytest.fixture(scope="session")
def classifiers():
    """(plain, full) for the default configuration (shipped tables and rules): the
    classifier without flow state, and the one with it (None where the build or
    config has none) -- as `nkstream bench` builds them."""
    from nkstream.bench import classifiers as build
    from nkstream.config import load_config

    return build(load_config(None))


@pytest.fixture(scope="session")
def classifier(classifiers):
    """The default configuration's classifier without flow state."""
    return classifiers[0]


def pytest_collect_file(file_path, parent):
    """Collect bench_*.py when a directory is given (`pytest bench/`): the project's
    python_files pattern (test_*.py) is the test suite's.  A file named on the command
    line is collected by pytest itself."""
    if (file_path.suffix == ".py" and file_path.name.startswith("bench_")
            and not parent.session.isinitpath(file_path)):
        return pytest.Module.from_parent(parent, path=file_path)
    return None
