"""NBD servers and clients: the nbdkit stack and other backends, libnbd handles, traces, verification."""
