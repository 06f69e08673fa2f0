#!/usr/bin/env bash
# Install the Debian packages the cluster test (real single-node SLURM + accounting) and the
# report test (headless Chromium) need. Idempotent: packages already present are skipped.
# Exits 0 with a message where it cannot install (not root, no apt-get), so CI goes on and
# the tests themselves skip with their reason.
set -euo pipefail

PKGS=(slurm-wlm slurmctld slurmd slurm-client munge slurmdbd mariadb-server chromium)

if [[ "$(id -u)" != "0" ]]; then
    echo "install_cluster_deps: not root; skipping (cluster and report tests will skip)"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_cluster_deps: no apt-get; skipping (cluster and report tests will skip)"
    exit 0
fi

missing=()
for p in "${PKGS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
    echo "install_cluster_deps: all packages already installed"
    exit 0
fi

echo "install_cluster_deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# A failed install (no network, broken mirror) must not fail CI: the tests skip instead.
if ! apt-get update -qq; then
    echo "install_cluster_deps: apt-get update failed; skipping"
    exit 0
fi
# policy-rc.d 101 stops maintainer scripts from trying to start daemons (no init system here);
# the test starts every daemon itself under a temporary folder.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created_policy=1
fi
rc=0
apt-get install -y -qq --no-install-recommends "${missing[@]}" || rc=$?
if [[ $created_policy -eq 1 ]]; then rm -f "$policy"; fi
if [[ $rc -ne 0 ]]; then
    echo "install_cluster_deps: apt-get install failed (rc=$rc); skipping"
    exit 0
fi
echo "install_cluster_deps: done"
