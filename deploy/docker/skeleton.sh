#!/bin/sh
# Turns the copied Cargo.toml into a skeleton crate whose build compiles every
# dependency of the real crate and nothing of its own code. The Dockerfile
# runs this before copying the sources, so the dependency layer is rebuilt only
# when Cargo.toml or Cargo.lock change.
#
# The skeleton keeps [package], [lib], [[bin]], dependencies and profiles. It
# drops what needs files that are not copied yet: benches, examples,
# integration tests and a build script. Every [lib] or [[bin]] path named in
# the manifest (or the default src/lib.rs and src/main.rs) gets a stub file.
set -eu

manifest="${1:-Cargo.toml}"
tmp="${manifest}.skeleton"

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
' "$manifest" > "$tmp"

# Stub every library and binary target the manifest names.
awk '
  /^[[:space:]]*\[/ {
    section = $0
    gsub(/[[:space:]]/, "", section)
  }
  (section == "[lib]" || section == "[[bin]]") && /^[[:space:]]*path[[:space:]]*=/ {
    line = $0
    sub(/^[^=]*=[[:space:]]*"/, "", line)
    sub(/".*$/, "", line)
    kind = (section == "[lib]") ? "lib" : "bin"
    print kind, line
  }
' "$tmp" | while read -r kind path; do
  mkdir -p "$(dirname "$path")"
  if [ "$kind" = lib ]; then
    : > "$path"
  else
    echo 'fn main() {}' > "$path"
  fi
done

mkdir -p src
[ -e src/main.rs ] || echo 'fn main() {}' > src/main.rs
[ -e src/lib.rs ] || : > src/lib.rs

# Keep the real manifest aside; the Dockerfile puts it back with the sources.
mv "$manifest" "${manifest}.orig"
mv "$tmp" "$manifest"
