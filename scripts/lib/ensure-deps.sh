# Sourced by scripts/*: installs what building borg needs when it is missing, idempotently.
#  - Debian's librocksdb-dev (linked instead of building RocksDB from source: DESIGN.md §8)
#  - libclang-dev (bindgen for librocksdb-sys)
#  - libzstd-dev and pkg-config: Debian's zstd, linked by the zstd crate (snapshots are
#    compressed with it), also never built from source
#  - python3: the example services (configs/jobs/web-service.yaml, http-service.yaml) are
#    `python3 -m http.server`, and the tests run them
#  - a Rust toolchain must already be on PATH (rustup); nothing else is needed (protoc is not:
#    the .proto files are compiled by protox, in Rust).

# Installs the Debian packages named as arguments that are missing.
apt_install_missing() {
    local need=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
    done
    if [ ${#need[@]} -gt 0 ]; then
        local sudo=""
        [ "$(id -u)" -ne 0 ] && sudo="sudo"
        echo "installing ${need[*]} (apt-get)" >&2
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
    fi
}

ensure_deps() {
    apt_install_missing librocksdb-dev libclang-dev libzstd-dev pkg-config python3
    if ! command -v cargo >/dev/null 2>&1; then
        echo "cargo not found: install Rust with rustup (https://rustup.rs) and try again" >&2
        exit 1
    fi
}

# What the observability tests use when present (they skip, saying why, when not): promtool and a
# Prometheus server (package prometheus), headless Chromium for the status page screenshot.
ensure_test_extras() {
    # dig (bind9-dnsutils) asks the master's DNS in the services test; etcd-server is what
    # replbench's short CI run compares the replicated write path with
    apt_install_missing prometheus chromium bind9-dnsutils etcd-server
}
