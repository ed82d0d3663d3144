# govmomi's vSphere API simulator for the vSphere plugin's tests and benchmarks: Debian's
# Go and govmomi sources (GOPATH mode, offline), built from tests/vcsim/main.go into
# $IMAGEFACTORY_SERVICES/vcsim/vcsim. Rebuilt when the source is newer than the binary.
# Sourced by scripts/setup.sh.
apt_need golang-go golang-github-vmware-govmomi-dev
vcsim_bin="$IMAGEFACTORY_SERVICES/vcsim/vcsim"
if [ ! -x "$vcsim_bin" ] || [ tests/vcsim/main.go -nt "$vcsim_bin" ]; then
  echo "setup: building the vSphere simulator into $vcsim_bin"
  mkdir -p "$IMAGEFACTORY_SERVICES/vcsim"
  vcsim_cache="$IMAGEFACTORY_SERVICES/vcsim/gocache"
  (cd tests/vcsim && GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE="$vcsim_cache" GOFLAGS= \
    go build -o "$vcsim_bin.tmp" main.go)
  mv "$vcsim_bin.tmp" "$vcsim_bin"
fi
