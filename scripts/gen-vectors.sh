#!/usr/bin/env bash
# Regenerates protocol-spec/vectors/frames.txt from the samples in src/proto/vectors.rs
# (run it when a frame changes, and commit the result with the spec change).
set -euo pipefail
cd "$(dirname "$0")/.."
{
  echo "# gfast protocol v1 test vectors (protocol-spec §4, §8). One frame per line: NAME: HEX."
  echo "# The field values behind each line are listed in protocol-spec/README.md §4 and in src/proto/vectors.rs."
  cargo test --quiet --lib print_vectors -- --ignored --nocapture 2>/dev/null | grep -E "^[A-Z_]+: "
} > protocol-spec/vectors/frames.txt.new
mv protocol-spec/vectors/frames.txt.new protocol-spec/vectors/frames.txt
