#!/usr/bin/env bash
# The peers of `python -m benchmarks compare`: PostgreSQL, Redis and NATS from
# Debian's packages, their Python clients (the `bench` extra) into the Python
# that runs the harness. Safe to run again: what is installed is left alone.
#
#   bash benchmarks/install_peers.sh            # PYTHON=.venv/bin/python by default
#
# The packaged services are not started or enabled here: the harness starts its
# own instances on free loopback ports with data directories under a temporary
# folder, and stops them by their process ids.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
PACKAGES=(postgresql redis-server nats-server)

missing=()
for package in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$package")
    fi
done

if [ "${#missing[@]}" -gt 0 ]; then
    sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        sudo=(sudo)
    fi
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# PostgreSQL refuses to run as root; the harness runs it as `postgres` when it is root.
# The Debian package creates that user; make sure of it all the same.
if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
    useradd --system --user-group --no-create-home --shell /usr/sbin/nologin postgres
fi

# The Python clients, as pyproject.toml's extra `bench` declares them.
"$PYTHON" -m pip install --quiet 'psycopg[binary]>=3.1' 'redis>=5.0' 'nats-py>=2.6' 'matplotlib>=3.8'

echo "peers installed:"
for binary in initdb pg_ctl redis-server nats-server; do
    found=$(command -v "$binary" || ls /usr/lib/postgresql/*/bin/"$binary" 2>/dev/null | sort -V | tail -n1 || true)
    echo "  $binary: ${found:-not found}"
done
"$PYTHON" - <<'EOF'
import importlib.metadata as m
for name in ("psycopg", "redis", "nats-py", "matplotlib"):
    try:
        print(f"  {name}: {m.version(name)}")
    except m.PackageNotFoundError:
        print(f"  {name}: not installed")
EOF
