#!/usr/bin/env bash
# Regenerate fuzz/seeds/<target>/ from real tools (sgdisk, sfdisk, mkfs.*, qemu-img, cpio,
# openssl, xz; scripts/setup installs them) and the probe tests' LVM generator. The output is
# committed; run this after a format change and commit what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf seeds/*/
CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2} cargo run -q --release --example gen_seeds --target-dir target/seeds
du -sh seeds
