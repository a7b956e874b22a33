# Sourced by scripts/interop.sh and scripts/js-sdk.sh: installs Debian's chromium when it is
# missing (never a downloaded browser).
#
#   install_debian_chromium LABEL BINARY LOG
#
# BINARY other than /usr/bin/chromium must exist already. Needs root or sudo for apt-get.
install_debian_chromium() {
    local label=$1 binary=$2 log=$3
    [[ -x $binary ]] && return 0
    if [[ $binary != /usr/bin/chromium ]]; then
        echo "$label: $binary does not exist" >&2
        return 1
    fi
    local sudo=()
    if [[ $(id -u) != 0 ]]; then
        command -v sudo >/dev/null || { echo "$label: chromium is missing and we are not root" >&2; return 1; }
        sudo=(sudo)
    fi
    echo "$label: installing Debian's chromium (apt-get install -y chromium)"
    export DEBIAN_FRONTEND=noninteractive
    if ! "${sudo[@]}" apt-get install -y -q chromium >"$log" 2>&1; then
        # A fresh machine may have no package lists yet.
        "${sudo[@]}" apt-get update -q >>"$log" 2>&1 \
            && "${sudo[@]}" apt-get install -y -q chromium >>"$log" 2>&1 \
            || { tail -20 "$log"; echo "$label: apt-get install chromium failed" >&2; return 1; }
    fi
    [[ -x $binary ]] || { echo "$label: $binary still missing after apt-get" >&2; return 1; }
}
