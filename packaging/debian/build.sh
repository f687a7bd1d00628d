#!/usr/bin/env bash
# build.sh STAGED_ROOT VERSION OUT.deb: the Debian package of the staged tree (stage.sh).
set -euo pipefail
stage=$1 version=$2 out=$3
here=$(cd "$(dirname "$0")" && pwd)
tree=$(mktemp -d "${TMPDIR:-/tmp}/hakit-deb.XXXXXX")
trap 'rm -rf "$tree"' EXIT
cp -a "$stage/." "$tree/"
install -m 0644 "$here/copyright" "$tree/usr/share/doc/hakit/copyright"
install -D -m 0644 "$here/lintian-overrides" "$tree/usr/share/lintian/overrides/hakit"
printf 'hakit (%s-1) unstable; urgency=medium\n\n  * Package built from the hakit tree.\n\n -- hakit developers <hakit@example.org>  %s\n' \
	"$version" "$(date -R -d @"${SOURCE_DATE_EPOCH:-$(date +%s)}")" | gzip -9n > "$tree/usr/share/doc/hakit/changelog.Debian.gz"
mkdir -m 0755 "$tree/DEBIAN"
size=$(du -sk --exclude=DEBIAN "$tree" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@SIZE@/$size/" "$here/control.in" > "$tree/DEBIAN/control"
for script in postinst prerm postrm; do
	install -m 0755 "$here/$script" "$tree/DEBIAN/$script"
done
(cd "$tree" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) > "$tree/DEBIAN/md5sums"
chmod 0644 "$tree/DEBIAN/md5sums"
dpkg-deb --root-owner-group -Zxz --build "$tree" "$out" >/dev/null
