# Shared by scripts/test and scripts/demo: a project virtualenv with everything installed, and
# the Kafka jars fetched. Safe to run again: each step is quick when already done.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  "$PY" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  echo "== installing the project with its test extras"
  python -m pip install -q --upgrade pip
  python -m pip install -q -e ".[test]"
  touch "$stamp"
fi
if [ ! -x /usr/bin/chromium ]; then
  # The console's browser test drives Debian's chromium (Playwright's own download cannot work here).
  [ "$(id -u)" = 0 ] || { echo "error: the browser test needs Debian's chromium: sudo apt-get install chromium" >&2; exit 1; }
  echo "== installing chromium (Debian package)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq chromium >/dev/null
fi
for tool in java mvn; do
  command -v "$tool" >/dev/null || { echo "error: $tool is needed (a JDK 17+ and Maven) to run the local Kafka broker" >&2; exit 1; }
done
echo "== Kafka jars"
orchestrator fetch-kafka
