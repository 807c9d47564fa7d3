#!/bin/sh
# Builds Toxiproxy's server and CLI from a source tree, offline, with Debian's Go and its packaged
# libraries (GOPATH mode, no module proxy). Toxiproxy is an optional peer: the relay API tests compare
# splicer's answers with its answers, and the benches measure against it, when it is installed.
#
#   scripts/build-toxiproxy.sh SRC_DIR [OUT_DIR]     OUT_DIR defaults to ./toxiproxy-bin
#
# Needs: golang-go (1.19 works), golang-github-gorilla-mux-dev,
# golang-github-prometheus-client-golang-dev, golang-github-rs-zerolog-dev, golang-gopkg-tomb.v1-dev;
# for the CLI also golang-github-urfave-cli-v2-dev and golang-golang-x-term-dev.
# SRC_DIR is a checkout or `git archive` of github.com/Shopify/toxiproxy (v2); TOXIPROXY_VERSION names
# the version /version reports (default: git describe). The tree is copied;
# SRC_DIR is left unchanged. Tests find the server through $TOXIPROXY_SERVER or PATH.
set -eu

if [ $# -lt 1 ] || [ ! -f "$1/go.mod" ]; then
  echo "usage: $0 SRC_DIR [OUT_DIR]  (SRC_DIR: a Toxiproxy v2 source tree with go.mod)" >&2
  exit 2
fi
src=$(cd "$1" && pwd)
out=${2:-toxiproxy-bin}
mkdir -p "$out"
out=$(cd "$out" && pwd)

module=$(sed -n 's/^module[[:space:]]*//p' "$src/go.mod")
gopath=$(mktemp -d)
trap 'rm -rf "$gopath"' EXIT
mkdir -p "$gopath/src/$module"
cp -R "$src/." "$gopath/src/$module/"

# Debian ships zerolog 1.26, whose CallerMarshalFunc has no pc argument; newer Toxiproxy targets
# zerolog >= 1.28's func(pc uintptr, file string, line int).
sed -i 's/CallerMarshalFunc = func(pc uintptr, file string, line int) string/CallerMarshalFunc = func(file string, line int) string/' \
  "$gopath/src/$module/cmd/server/server.go"

version=${TOXIPROXY_VERSION:-$(git -C "$src" describe --tags 2>/dev/null || echo git)}
cd "$gopath/src/$module"
export GO111MODULE=off GOPROXY=off GOFLAGS= GOPATH="$gopath:/usr/share/gocode"
go build -ldflags "-X $module.Version=$version" -o "$out/toxiproxy-server" ./cmd/server
echo "built $out/toxiproxy-server ($version)"
if go build -ldflags "-X $module.Version=$version" -o "$out/toxiproxy-cli" ./cmd/cli; then
  echo "built $out/toxiproxy-cli"
else
  echo "toxiproxy-cli not built (missing golang-github-urfave-cli-v2-dev or golang-golang-x-term-dev?); the server is enough for the tests" >&2
fi
