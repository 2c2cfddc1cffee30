#!/usr/bin/env bash
# Installs the Debian packages ringwatch needs to build and test, only when missing (quiet when all are there).
# clang/llvm/libelf/zlib/pkg-config: building the eBPF programs and the vendored libbpf.
# bpftool: inspecting loaded programs in tests (vmlinux.h is committed, so building does not need it).
# clang-format: the C style check in `make lint`.
# gcc/libc6-dev: the hook's C shims and the static test binary (`gcc -static`); util-linux: `unshare` in tests.
# iproute2/dnsmasq-base/bind9-dnsutils: network tests (private namespaces with veth, a local DNS server, dig).
# openssl/curl/python3: network enforcement tests (a TLS server and client, HTTP client and server); iproute2's `tc`
# also sets up throttling at run time.
# xvfb/xterm/xdotool: X11 keystroke tests (a private X server, titled terminals, XTEST typing).
set -euo pipefail
packages=(clang clang-format llvm libelf-dev zlib1g-dev pkg-config bpftool gcc libc6-dev make util-linux procps nats-server iproute2 dnsmasq-base bind9-dnsutils openssl curl python3 xvfb xterm xdotool)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps: missing packages ${missing[*]}; run as root (or install them) first" >&2
    exit 3
  fi
  echo "install-deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
