#!/usr/bin/env bash
# Install everything xdpkit needs on Debian 12 (run as root). Idempotent: it installs only what
# is missing, so `make demo` and `make test` can call it every time.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  clang llvm                 # compile BPF C (clang -target bpf)
  libbpf1 libbpf-dev         # libbpf.so.1 (loaded through cffi) and its BPF headers
  linux-libc-dev libc6-dev   # kernel uapi headers (asm/types.h in the multiarch dir)
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

VENV=${VENV:-.venv}
if [[ ! -x "$VENV/bin/python" ]]; then
  echo "setup: creating $VENV"
  python3 -m venv "$VENV"
fi
stamp="$VENV/.xdpkit-installed"
if [[ ! -f "$stamp" || pyproject.toml -nt "$stamp" ]]; then
  echo "setup: installing xdpkit and its Python dependencies into $VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
  "$VENV/bin/python" -m pip install -q -e '.[test]'
  touch "$stamp"
fi

# Built-in BPF objects (generator, receivers) are compiled once here and shipped next to their
# sources, so running them needs no clang; a stale one is recompiled on demand.
"$VENV/bin/python" -c "from xdpkit.builtin import build_all; build_all()"
