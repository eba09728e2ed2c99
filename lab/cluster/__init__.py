"""`lab worker`: a machine of a cluster, carrying out the measurement jobs the service sends it.

A layer above the service: the worker runs the service's own job handlers (lab.service.jobs.HANDLERS)
on its machine, with its own settings. The service's side of cluster mode (the executor whose machines
are workers, what goes over the broker) is lab.service.remote, lab.service.broker, lab.service.wire.
Nothing here is imported unless `lab worker` runs.
"""
