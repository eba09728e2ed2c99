"""Domain values: what a server, a run, a scenario and a sweep are. No I/O, no processes, no host."""
