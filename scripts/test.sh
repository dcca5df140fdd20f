#!/usr/bin/env bash
# Runs every check and test: formatting, lints, unit and end-to-end tests on the embedded
# cluster, then the integration tests against a real HDFS, YARN, ZooKeeper and Kafka that this
# script starts (and stops again, also when tests fail).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "format"
cargo fmt --all --check

step "lints"
cargo clippy --release --workspace --all-targets -- -D warnings

step "unit and embedded-cluster tests"
# Tests start the workspace's programs (the master, worker daemons, the CLI, example jobs)
# from the target directory: build every binary first so none is stale.
cargo build --release --workspace --bins
cargo test --release --workspace --exclude sluice-integration-tests

step "dashboard and HistoryServer in a real browser (screenshots: target/browser-screenshots/)"
tests/browser/run.sh

if [ -d tests/integration ]; then
  step "integration tests against the test cluster"
  trap 'scripts/testcluster.sh down || true' EXIT
  scripts/testcluster.sh up zk3 hdfs yarn kafka
  cargo test --release -p sluice-integration-tests -- --test-threads=1
fi
