#!/usr/bin/env bash
# Install everything xdpkit needs on Debian 12 (run as root). Idempotent: it installs only what
# is missing, so `make demo` and `make test` can call it every time.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  clang llvm                 # compile BPF C (clang -target bpf)
  libbpf1 libbpf-dev         # libbpf.so.1 (loaded through cffi) and its BPF headers
  linux-libc-dev             # kernel uapi headers (asm/types.h in the multiarch dir)
  libc6-dev                  # C headers for gcc (the C reference of the generator benchmark)
  bpftool                    # cross-checks in tests, and handy for users
  iproute2 ethtool           # ip netns / ip link, GRO on veths
  iputils-ping iputils-arping tcpdump  # lab traffic
  nftables iptables          # reference receivers in the benchmarks
  gcc                        # the C reference loop of the generator benchmark
  python3 python3-venv python3-pip
  make
  xdp-tools                  # xdp-filter's objects: the firewall benchmark's reference
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# pip as the set-up uses it: quiet, and without the warnings this machine's pip configuration
# makes about index folders that are not there (one line per package, read as failures). Every
# other line pip prints, errors included, still shows, and pip's exit status is kept.
quiet_pip() {
  "$VENV/bin/python" -m pip -q "$@" 2> >(grep -v "^WARNING: Location '.*' is ignored: it is neither a file nor a directory" >&2)
}

VENV=${VENV:-.venv}
if [[ ! -x "$VENV/bin/python" ]]; then
  echo "setup: creating $VENV"
  python3 -m venv "$VENV"
fi
stamp="$VENV/.xdpkit-installed"
if [[ ! -f "$stamp" || pyproject.toml -nt "$stamp" ]]; then
  echo "setup: installing xdpkit and its Python dependencies into $VENV"
  quiet_pip install --upgrade pip >/dev/null
  quiet_pip install -e '.[test]'
  touch "$stamp"
fi

# Built-in BPF objects (generator, receivers, apps) are compiled here and shipped next to their
# sources with the hashes of what they were built from, so running them needs no clang; only
# the ones whose sources changed are compiled again.
"$VENV/bin/python" -c "from xdpkit.builtin import build_all; build_all(only_stale=True)"
