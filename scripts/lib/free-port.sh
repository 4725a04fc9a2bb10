# Sourced by the scripts that start throwaway servers on loopback (pg-test-cluster,
# pg-failover-pair): `free_port` prints a TCP port that no socket uses.
#
# The port is taken below the kernel's ephemeral range (net.ipv4.ip_local_port_range), where
# outgoing connections never get their local port: a port the check finds free can then only be
# taken by another server picking ports the same way. Linux refuses to bind a port that an
# established connection holds, so a port inside the ephemeral range could be lost between the
# check and the bind whatever the check looked at.

free_port() {
  local low=32768 first last port
  if [[ -r /proc/sys/net/ipv4/ip_local_port_range ]]; then
    read -r low _ </proc/sys/net/ipv4/ip_local_port_range
  fi
  first=10000
  last=$((low - 1))
  if ((last - first < 1000)); then
    # An unusual ephemeral range reaching low: fall back on the range above it.
    first=61000
    last=64999
  fi
  for _ in $(seq 1 100); do
    port=$((first + RANDOM % (last - first + 1)))
    # Any TCP socket on the port, listening or not (ss prints one line per match).
    if [[ $(ss -Htan "sport = :$port" 2>/dev/null | wc -l) -eq 0 ]]; then
      echo "$port"
      return 0
    fi
  done
  echo "free_port: no free TCP port found in $first-$last" >&2
  return 1
}
