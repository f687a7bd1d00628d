#!/usr/bin/env bash
# build.sh STAGED_ROOT VERSION OUTDIR: the binary RPM of the staged tree (stage.sh).
set -euo pipefail
stage=$(cd "$1" && pwd) version=$2 out=$(mkdir -p "$3" && cd "$3" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
top=$(mktemp -d "${TMPDIR:-/tmp}/hakit-rpm.XXXXXX")
trap 'rm -rf "$top"' EXIT
rpmbuild -bb --quiet --define "_topdir $top" --define "stage $stage" --define "hakit_version $version" \
	--define "_build_id_links none" "$here/hakit.spec"
find "$top/RPMS" -name '*.rpm' -exec mv {} "$out/" \;
