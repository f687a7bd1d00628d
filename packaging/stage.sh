#!/usr/bin/env bash
# stage.sh ROOT WHEEL PIP: lays out in ROOT the files the packages install, the same for
# the .deb and the RPM (docs/packaging.md):
#   /usr/lib/hakit           a private Python environment on the distribution's python3:
#                            hakit (the wheel: Python code, hakit-rfs, eBPF objects,
#                            templates) and its Python dependencies, as binary wheels
#   /usr/bin/hakit, /usr/sbin/hakitd   launchers into it
#   /usr/lib/systemd/system/hakitd.service, /etc/hakit, /var/lib/hakit, /var/log/hakit,
#   the firewall's rules (firewalld's service, an nftables snippet)
set -euo pipefail
root=$1 wheel=$2 pip=$3
here=$(cd "$(dirname "$0")" && pwd)
rm -rf "$root"
mkdir -p "$root"/usr/{bin,sbin} "$root"/usr/lib/systemd/system "$root"/usr/share/doc/hakit \
	"$root"/etc/hakit "$root"/var/lib/hakit "$root"/var/log/hakit
# The environment is made where it will not live: only its pyvenv.cfg and bin/ links
# (to /usr/bin/python3) matter to Python, and neither names this directory.
/usr/bin/python3 -m venv --without-pip "$root/usr/lib/hakit"
rm -f "$root"/usr/lib/hakit/bin/[Aa]ctivate*
sed -i '/^command = /d' "$root/usr/lib/hakit/pyvenv.cfg"
site=$("$root/usr/lib/hakit/bin/python3" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
"$pip" install -q --disable-pip-version-check --no-compile --only-binary=:all: --target "$site" "$wheel"
# pip's own entry points name the build's interpreter, and direct_url.json where the
# wheel was built: neither belongs on a node (the launchers replace the first).
rm -rf "$site/bin" "$site"/hakit-*.dist-info/direct_url.json
sed -i '/direct_url.json/d' "$site"/hakit-*.dist-info/RECORD
# Symbols are for debugging a build, not for nodes (the eBPF object keeps its BTF).
find "$site" -type f \( -name '*.so' -o -path '*/hakit/libexec/*' \) \
	-exec strip --strip-unneeded --remove-section=.comment --remove-section=.note {} +
install -m 0755 "$here/bin/hakit" "$root/usr/bin/hakit"
install -m 0755 "$here/bin/hakitd" "$root/usr/sbin/hakitd"
# What module scripts call as $SAFE/hakit, $SAFE/safekit and $SAFEBIN/exitcode.
install -m 0755 "$here/bin/hakit" "$here/bin/safekit" "$here/bin/exitcode" "$root/usr/lib/hakit/bin/"
install -m 0644 "$here/systemd/hakitd.service" "$root/usr/lib/systemd/system/hakitd.service"
install -m 0644 "$here/../README.md" "$root/usr/share/doc/hakit/README.md"
install -D -m 0644 "$here/firewall/hakit.xml" "$root/usr/lib/firewalld/services/hakit.xml"
install -D -m 0644 "$here/firewall/hakit-web.xml" "$root/usr/lib/firewalld/services/hakit-web.xml"
install -D -m 0644 "$here/firewall/hakit.nft" "$root/usr/share/hakit/firewall/hakit.nft"
chmod 0700 "$root"/var/lib/hakit "$root"/var/log/hakit
