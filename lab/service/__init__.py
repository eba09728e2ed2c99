"""The service: the manager facade, the scheduler, sweeps, the event bus and the store."""
