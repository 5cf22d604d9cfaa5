#!/usr/bin/env bash
# The Debian packages the test suite drives for real (a browser, exiftool, redis-server, ...),
# listed in debian-test-packages.txt. Installs only what is missing, so a warm machine pays nothing.
set -euo pipefail
list="$(dirname "$0")/debian-test-packages.txt"
mapfile -t wanted < <(grep -vE '^\s*(#|$)' "$list")
missing=()
for pkg in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "missing Debian packages (install them as root): ${missing[*]}" >&2
    exit 1
fi
echo "installing Debian packages for the tests: ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
