#!/usr/bin/env bash
# Chromium for the demo's browser test (tests/test_demo.py drives Debian's Chromium through Playwright), installed
# where this machine allows it (root and apt-get); elsewhere it says so and that one test skips. Used by
# `make test` and .ci/run, so both run the same suite.
command -v chromium >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  { apt-get install -y -q chromium || { apt-get update -q && apt-get install -y -q chromium; }; } >/dev/null 2>&1 && exit 0
fi
echo "note: could not install chromium (needs root and apt-get); the demo's browser test will be skipped" >&2
exit 0
