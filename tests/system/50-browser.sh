#!/usr/bin/env bash
# A real headless browser for the page tests: Debian's Chromium (Playwright drives it; browser
# downloads do not work on these machines).
set -euo pipefail
if ! command -v chromium >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
