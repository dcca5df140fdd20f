#!/usr/bin/env bash
# Runs the dashboard's browser test: installs the Node dependencies when missing, then drives
# headless Chromium (Debian's `chromium`, or $CHROMIUM) against the release binaries
# ($SLUICE_BIN_DIR, else $CARGO_TARGET_DIR/release, else target/release). Screenshots land in
# target/browser-screenshots/.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -d node_modules/playwright-core ]; then
  npm ci --no-audit --no-fund
fi
exec node dashboard.test.mjs "$@"
