#!/usr/bin/env bash
# Open a `mirai compare` HTML report in headless Chromium (Debian's package), save a screenshot and fail
# on JavaScript/console errors. Usage: scripts/check_report.sh report.html [screenshot.png]
set -euo pipefail
report=$(realpath "$1"); shot=${2:-${report%.html}.png}
if ! command -v chromium >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
profile=$(mktemp -d)
flags=(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking
       --disable-component-update --disable-sync --user-data-dir="$profile" --window-size=1400,2400)
log=$(mktemp)
chromium "${flags[@]}" --enable-logging=stderr --v=0 --screenshot="$shot" "file://$report" 2>"$log" || true
if grep -E "Uncaught|CONSOLE\(.*\)\] \"[^\"]*[Ee]rror" "$log"; then
  echo "errors while rendering $report"; exit 1
fi
[ -s "$shot" ] || { echo "no screenshot written"; cat "$log"; exit 1; }
echo "rendered $report -> $shot ($(stat -c %s "$shot") bytes)"
