#!/bin/bash
# Steers every movable interrupt, and the default for new ones, to the CPUs
# in $1 (a list such as 0,2-3). Installed by ansible's fulmen role; run by
# fulmen-irq-affinity.service at boot. Interrupts the kernel manages itself
# refuse the write: they are counted, not fatal. A refused default mask is
# fatal (the unit fails, visibly).
set -eu
cpus="$1"

# The CPU list as a bitmap in the kernel's format: 32-bit hex words, most
# significant first, separated by commas.
declare -a words=()
for part in ${cpus//,/ }; do
  first=${part%-*}
  last=${part#*-}
  for ((cpu = first; cpu <= last; cpu++)); do
    word=$((cpu / 32))
    words[word]=$(( ${words[word]:-0} | (1 << (cpu % 32)) ))
  done
done
mask=""
top=$(( ${#words[@]} > 0 ? $(printf '%s\n' "${!words[@]}" | sort -n | tail -n1) : 0 ))
for ((word = top; word >= 0; word--)); do
  if [ -z "$mask" ]; then
    mask=$(printf '%x' "${words[word]:-0}")
  else
    mask="$mask,$(printf '%08x' "${words[word]:-0}")"
  fi
done

if [ -e /proc/irq/default_smp_affinity ]; then
  if ! echo "$mask" > /proc/irq/default_smp_affinity; then
    echo "fulmen-irq-affinity: the kernel refused the default mask $mask (CPUs $cpus)" >&2
    exit 1
  fi
fi
moved=0
kept=0
for list in /proc/irq/*/smp_affinity_list; do
  [ -e "$list" ] || continue
  if echo "$cpus" > "$list" 2>/dev/null; then
    moved=$((moved + 1))
  else
    kept=$((kept + 1))
  fi
done
echo "fulmen-irq-affinity: default mask $mask; $moved interrupt(s) on CPUs $cpus, $kept left where the kernel keeps them"
