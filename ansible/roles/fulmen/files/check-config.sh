#!/bin/sh
# fulmen-check-config MEMLOCK BINARY CONFIG: `fulmen tune --check CONFIG`
# with BINARY, under the memlock limit the unit gives the node (MEMLOCK:
# "unlimited" or bytes), so that the executors' memlock check judges the
# limit the node will have. Installed by ansible's fulmen role.
set -eu
memlock="$1"
binary="$2"
config="$3"
if prlimit --memlock="$memlock" true 2>/dev/null; then
  exec prlimit --memlock="$memlock" "$binary" tune --check "$config"
fi
# Raising a hard limit needs CAP_SYS_RESOURCE, which a container may lack.
echo "note: cannot raise the memlock limit to $memlock here; checking under the current one" >&2
exec "$binary" tune --check "$config"
