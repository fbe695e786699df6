# Shared by the benchmark scripts (sourced, not run).

# A free loopback TCP port.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

# Waits (up to 20 s) until a JSON-RPC endpoint answers eth_chainId.
wait_rpc() {
  for _ in $(seq 1 200); do
    if python3 -c "import sys,urllib.request as u; u.urlopen(u.Request(sys.argv[1], b'{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"eth_chainId\"}', {'content-type': 'application/json'}), timeout=1)" "$1" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "no RPC at $1" >&2; return 1
}
