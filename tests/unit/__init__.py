"""Pure, fast tests: no processes, no sockets (make test-fast)."""
