#!/bin/sh
# OCI createContainer hook installed by `kubefence node-setup` as
# <host_dir>/kubefence-verify and added to wrapped containers by the NRI
# plugin, with <host_dir> as its only argument.
#
# The runtime runs the hook after every mount is in place and before
# pivot_root, in the container's mount namespace: host paths and the
# container's root filesystem under the bundle are both visible. The hook
# fails the create unless <rootfs>/nono is a plain directory (not a symlink)
# and <rootfs>/nono/nono is the trusted <host_dir>/nono (same device and
# inode). An image that ships /nono as a symlink makes the runtime mount the
# trusted directory at the link's target, where a pod volume can hide it.
#
# Input: the OCI state JSON on stdin; its "bundle" field names the bundle
# directory, whose config.json gives root.path. Anything that cannot be
# parsed fails the create (exit 1, one line on stderr).

set -u
# The runtime may start the hook with an empty or missing PATH, and the
# tools below must still be found.
PATH=${PATH:-/usr/sbin:/usr/bin:/sbin:/bin}
export PATH

fail() {
    echo "kubefence-verify: $*" >&2
    exit 1
}

[ "$#" -eq 1 ] || fail "expected one argument, the trusted nono host directory; got $#"
host_dir=$1
case "$host_dir" in
    /*) ;;
    *) fail "host directory '$host_dir' is not an absolute path" ;;
esac

# Print the one string value of JSON key $2 in text $1, or return 1. A value
# with an escape (a backslash) is rejected because runtime paths have none.
# A second occurrence of the key, for example as an annotation key, is
# ambiguous, so it is rejected too.
json_string() {
    matches=$(printf '%s' "$1" | tr -d '\n\r' \
        | grep -oE "\"$2\"[[:space:]]*:[[:space:]]*\"[^\"\\\\]*\"") || return 1
    [ "$(printf '%s\n' "$matches" | wc -l)" -eq 1 ] || return 1
    printf '%s' "$matches" | sed -E 's/^"[^"]*"[[:space:]]*:[[:space:]]*"//; s/"$//'
}

state=$(cat) || fail "cannot read the OCI state from stdin"
bundle=$(json_string "$state" bundle) || fail "OCI state on stdin has no single plain \"bundle\" string"
case "$bundle" in
    /*) ;;
    *) fail "bundle '$bundle' is not an absolute path" ;;
esac

config="$bundle/config.json"
[ -f "$config" ] || fail "bundle config '$config' not found"
spec=$(cat "$config") || fail "cannot read bundle config '$config'"
# The "root" object contains only "path" and "readonly", so it has no nested braces.
root=$(printf '%s' "$spec" | tr -d '\n\r' | grep -oE '"root"[[:space:]]*:[[:space:]]*\{[^{}]*\}') \
    || fail "bundle config '$config' has no \"root\" object"
[ "$(printf '%s\n' "$root" | wc -l)" -eq 1 ] || fail "bundle config '$config' has more than one \"root\" object"
root_path=$(json_string "$root" path) || fail "bundle config '$config' has no single plain root.path string"
[ -n "$root_path" ] || fail "bundle config '$config' has an empty root.path"
case "$root_path" in
    /*) rootfs=$root_path ;;
    *) rootfs="$bundle/$root_path" ;;
esac

mount_point="$rootfs/nono"
[ ! -L "$mount_point" ] || fail "/nono in the container image is a symlink; the trusted nono directory would not be at /nono"
[ -d "$mount_point" ] || fail "/nono is not a directory in root filesystem '$rootfs'"
[ ! -L "$mount_point/nono" ] || fail "/nono/nono is a symlink, not the trusted nono binary"

expected=$(stat -L -c %d:%i "$host_dir/nono" 2>/dev/null) || fail "cannot stat the trusted nono binary '$host_dir/nono'"
actual=$(stat -L -c %d:%i "$mount_point/nono" 2>/dev/null) || fail "/nono/nono not found in the container"
[ "$actual" = "$expected" ] \
    || fail "/nono/nono (device:inode $actual) is not the trusted '$host_dir/nono' ($expected)"
exit 0
