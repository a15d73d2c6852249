#!/bin/sh
# Waits (up to $2 seconds, default 600) until the CPUs have been >= 90% idle for 3 s, then
# runs "$1". For benchmarks on a machine shared with other jobs.
deadline=$(( $(date +%s) + ${2:-600} ))
idle() { awk '/^cpu /{print $5+$6, $2+$3+$4+$5+$6+$7+$8}' /proc/stat; }
while [ "$(date +%s)" -lt "$deadline" ]; do
  set -- "$1" "$2"; a=$(idle); sleep 3; b=$(idle)
  pct=$(echo "$a $b" | awk '{printf "%d", 100*($3-$1)/($4-$2)}')
  if [ "$pct" -ge 90 ]; then echo "idle ${pct}%: running"; sh -c "$1"; exit $?; fi
done
echo "machine never quiet; running anyway"; sh -c "$1"
