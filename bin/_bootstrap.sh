# Sourced by bin/ntx and bin/test. Makes sure .venv holds ntx and the exact pins of one lock
# file; does nothing (and costs nothing) when the pins have not changed since the last install.
# Needs only Python 3.11+ on the machine.

ntx_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ntx_venv="$ntx_root/.venv"

ntx_find_python() {
    local candidate
    for candidate in "${NTX_PYTHON:-}" python3 python3.13 python3.12 python3.11 python; do
        [ -n "$candidate" ] || continue
        command -v "$candidate" >/dev/null 2>&1 || continue
        if "$candidate" -c 'import sys, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    echo "ntx: needs Python 3.11 or newer with the venv module (set NTX_PYTHON to its path)" >&2
    return 1
}

# ntx_ensure_venv LOCKFILE: install requirements/LOCKFILE and ntx itself into .venv if needed.
ntx_ensure_venv() {
    local lock="$ntx_root/requirements/$1"
    local stamp="$ntx_venv/.ntx-installed-$1"
    local want
    want="$(cat "$lock" "$ntx_root/requirements/runtime.txt" "$ntx_root/pyproject.toml" | cksum)"
    if [ -x "$ntx_venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
        return 0
    fi
    mkdir -p "$ntx_venv"
    (
        # Two first runs at once must not install over each other.
        if command -v flock >/dev/null 2>&1; then flock 9; fi
        if [ -x "$ntx_venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
            exit 0
        fi
        local python log="$ntx_venv/install.log"
        python="$(ntx_find_python)" || exit 1
        echo "ntx: installing pinned dependencies into .venv (first run or pins changed)..." >&2
        if [ ! -x "$ntx_venv/bin/python" ]; then
            "$python" -m venv "$ntx_venv" >"$log" 2>&1 || { cat "$log" >&2; exit 1; }
        fi
        if ! {
            "$ntx_venv/bin/python" -m pip install --disable-pip-version-check -q -r "$lock" &&
            "$ntx_venv/bin/python" -m pip install --disable-pip-version-check -q --no-deps \
                --no-build-isolation -e "$ntx_root"
        } >"$log" 2>&1; then
            tail -n 30 "$log" >&2
            echo "ntx: installing dependencies failed; the full log is $log" >&2
            exit 1
        fi
        echo "$want" >"$stamp"
        echo "ntx: ready." >&2
    ) 9>"$ntx_venv/.install-lock"
}
