#!/bin/bash
# Builds the Debian package around an nftbalance binary that is already built, at
# TARGET/release/nftbalance: `make deb` passes target (a release build), the package test a
# copy of its test build. The man pages, completions and schema come from that binary's own
# command line (`nftbalance package-files`); cargo-deb reads the rest from
# crates/cli/Cargo.toml. Usage: packaging/build-deb.sh TARGET OUTPUT.deb [cargo-deb options]
set -euo pipefail
target=$(realpath "$1")
out=$2
shift 2
files="$target/release/package-files"
rm -rf "$files"
"$target/release/nftbalance" package-files "$files" >/dev/null
# Debian policy: man pages compressed (cargo-deb leaves files from target/ as they are).
gzip -9n "$files"/man/*.8
cd "$(dirname "$0")/.."
CARGO_TARGET_DIR="$target" "${CARGO:-cargo}" deb --no-build --strip -p nftbalance --output "$out" "$@"
