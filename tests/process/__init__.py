"""Real processes, real sockets, the command line end to end."""
