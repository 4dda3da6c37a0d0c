#!/usr/bin/env bash
# Installs the Debian packages the test suite needs (PostgreSQL, WordNet, Chromium, docker-compose, Node.js) when
# they are missing. Runs as root (CI and the dev machines are root); as another user it only says what is missing.
set -euo pipefail
need=()
[ "${1:-all}" = "wordnet" ] || [ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql)
[ -f /usr/share/wordnet/data.noun ] || need+=(wordnet-base)
[ -f /usr/share/wordnet/index.sense ] || need+=(wordnet-sense-index)
if [ "${1:-all}" != "wordnet" ]; then  # `make demo` needs only WordNet
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
  command -v node >/dev/null 2>&1 || need+=(nodejs)  # runs the review card script's functions in a test
fi
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "missing system packages: ${need[*]} (install them with: sudo apt-get install -y ${need[*]})" >&2
  exit 1
fi
echo "installing system packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
