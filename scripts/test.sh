#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian machine, then run it.
#   bash scripts/test.sh [pytest args...]
# As root it installs the Debian packages the tests use as independent oracles and
# real peers (tshark/capinfos, tcpdump, tcpreplay, ndpiReader, iproute2) and libpcap's
# headers (so the libpcap engine is built); then the package with its test extras.
# The suite runs twice: against the debug build of the core (NKSTREAM_DEBUG=1: Cython
# bounds checks on, -O0) and then against the release build, which stays installed.
# NKSTREAM_TEST_BUILDS="release" (or "debug") runs only one.
set -euo pipefail
cd "$(dirname "$0")/.."

# The public corpus and address data the tests check against (shared/corpus/public,
# shared/data) live outside the repository: $NKSTREAM_SHARED, or shared/ beside or
# inside the checkout (the order tests/conftest.py looks in).  Say so now, not after
# minutes of installing and hundreds of failed tests.
shared_ok=""
for cand in ${NKSTREAM_SHARED:+"$NKSTREAM_SHARED"} ../shared shared; do
    [ -d "$cand/corpus/public" ] && shared_ok="$cand" && break
done
if [ -z "$shared_ok" ]; then
    echo "scripts/test.sh: public corpus not found: set NKSTREAM_SHARED to the folder holding corpus/public and data/ (or put it at ../shared)" >&2
    exit 2
fi

DEBS="tshark tcpdump tcpreplay libpcap-dev libndpi-bin iproute2 procps"
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    missing=""
    for pkg in $DEBS; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
    done
    if [ -n "$missing" ]; then
        echo "scripts/test.sh: apt-get install$missing"
        export DEBIAN_FRONTEND=noninteractive
        echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends $missing >/dev/null
    fi
else
    echo "scripts/test.sh: not root: Debian packages ($DEBS) must already be installed" >&2
fi

PY=${PYTHON:-python3}
for build in ${NKSTREAM_TEST_BUILDS:-debug release}; do
    case "$build" in
        debug) debug=1 ;;
        release) debug= ;;
        *) echo "scripts/test.sh: unknown build '$build' (debug, release)" >&2; exit 2 ;;
    esac
    echo "scripts/test.sh: $build build"
    # Editable install: the extension is built in place, so tests import this checkout.
    NKSTREAM_DEBUG=$debug "$PY" -m pip install -q --disable-pip-version-check -e ".[test]"
    # make sure the suite really runs against the build it names
    "$PY" -c "import sys, nkstream._core as c; sys.exit(c.DEBUG_BUILD != bool('$debug'))" \
        || { echo "scripts/test.sh: the installed core is not the $build build" >&2; exit 1; }
    "$PY" -m pytest "$@"
done
