#!/bin/sh
# Writes a skeleton of the Cargo workspace in SRC to OUT: the lock file, every
# package manifest (the root one and each member's, such as crates/*/Cargo.toml)
# and an empty stub for each library and binary target that exists in SRC.
# Building the skeleton compiles every dependency and none of our own code.
# The Dockerfile makes it in a stage of its own and copies only OUT into the
# build stage, so the dependency layer is rebuilt only when a manifest or
# Cargo.lock changes, not when a source file does.
#
#   skeleton.sh SRC OUT
#
# Each manifest keeps [package], [lib], [[bin]], dependencies, features,
# profiles and [workspace]. It drops what needs files that are not copied:
# benches, examples, integration tests and a build script. Stubs: the [lib]
# and [[bin]] paths a manifest names, and src/lib.rs, src/main.rs and
# src/bin/*.rs when SRC has them.
set -eu

src="${1:?usage: skeleton.sh SRC OUT}"
out="${2:?usage: skeleton.sh SRC OUT}"
mkdir -p "$out"
cp "$src/Cargo.lock" "$out/Cargo.lock"

# stub FILE KIND: an empty library or a main that does nothing.
stub() {
  mkdir -p "$(dirname "$1")"
  if [ "$2" = lib ]; then
    : >"$1"
  else
    echo 'fn main() {}' >"$1"
  fi
}

# Every package manifest, outside build output and vendored JS.
(cd "$src" && find . \( -name target -o -name node_modules -o -name .git \) -prune \
  -o -name Cargo.toml -type f -print) | sort | while read -r manifest; do
  dir=$(dirname "$manifest")
  mkdir -p "$out/$dir"
  awk '
    /^[[:space:]]*\[\[(bench|example|test)\]\][[:space:]]*(#.*)?$/ { skip = 1; next }
    /^[[:space:]]*\[/ {
      skip = 0
      section = $0
      gsub(/[[:space:]]/, "", section)
    }
    skip { next }
    section == "[package]" && /^[[:space:]]*build[[:space:]]*=/ { next }
    { print }
  ' "$src/$manifest" >"$out/$manifest"

  # Targets the manifest names by path.
  awk '
    /^[[:space:]]*\[/ {
      section = $0
      gsub(/[[:space:]]/, "", section)
    }
    (section == "[lib]" || section == "[[bin]]") && /^[[:space:]]*path[[:space:]]*=/ {
      line = $0
      sub(/^[^=]*=[[:space:]]*"/, "", line)
      sub(/".*$/, "", line)
      print ((section == "[lib]") ? "lib" : "bin"), line
    }
  ' "$out/$manifest" | while read -r kind path; do
    stub "$out/$dir/$path" "$kind"
  done

  # Targets cargo finds by convention.
  if [ -f "$src/$dir/src/lib.rs" ]; then stub "$out/$dir/src/lib.rs" lib; fi
  if [ -f "$src/$dir/src/main.rs" ]; then stub "$out/$dir/src/main.rs" bin; fi
  for bin in "$src/$dir"/src/bin/*.rs; do
    if [ -f "$bin" ]; then stub "$out/$dir/src/bin/$(basename "$bin")" bin; fi
  done
done
