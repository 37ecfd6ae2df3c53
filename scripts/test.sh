#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian machine, then run it.
#   bash scripts/test.sh [pytest args...]
# As root it installs the Debian packages the tests use as independent oracles and
# real peers (tshark/capinfos, tcpdump, tcpreplay, ndpiReader, iproute2) and libpcap's
# headers (so the libpcap engine is built); then the package with its test extras.
# NKSTREAM_DEBUG=1 builds the core with bounds checks on and runs the suite against it.
set -euo pipefail
cd "$(dirname "$0")/.."

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
# Editable install: the extension is built in place, so tests import this checkout.
"$PY" -m pip install -q --disable-pip-version-check -e ".[test]"
exec "$PY" -m pytest "$@"
