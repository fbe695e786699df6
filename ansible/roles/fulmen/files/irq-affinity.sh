#!/bin/sh
# Steers every movable interrupt, and the default for new ones, to the CPUs
# in $1 (a list such as 0,2-3). Installed by ansible's fulmen role; run by
# fulmen-irq-affinity.service at boot. Interrupts the kernel manages itself
# refuse the write; they are counted, not fatal.
set -eu
cpus="$1"
moved=0
kept=0
if [ -w /proc/irq/default_smp_affinity ]; then
  # The default mask in hex, from the list.
  mask=0
  for part in $(echo "$cpus" | tr ',' ' '); do
    first=${part%-*}
    last=${part#*-}
    cpu=$first
    while [ "$cpu" -le "$last" ]; do
      # A shell integer holds CPUs 0-62; past them the default is left.
      [ "$cpu" -lt 63 ] || { mask=""; break 2; }
      mask=$((mask | (1 << cpu)))
      cpu=$((cpu + 1))
    done
  done
  if [ -n "$mask" ]; then
    printf '%x\n' "$mask" > /proc/irq/default_smp_affinity 2>/dev/null || true
  fi
fi
for list in /proc/irq/*/smp_affinity_list; do
  [ -e "$list" ] || continue
  if echo "$cpus" > "$list" 2>/dev/null; then
    moved=$((moved + 1))
  else
    kept=$((kept + 1))
  fi
done
echo "fulmen-irq-affinity: $moved interrupt(s) on CPUs $cpus, $kept left where the kernel keeps them"
