"""Cluster mode: measurement jobs carried out by `lab worker`s on other machines, through Celery + Redis.

A layer above the service: `lab worker` (lab.cluster.worker) runs the service's own job handlers on
its machine, and lab.cluster.remote is the scheduler's executor for those workers, which the driver
(`lab serve` with LAB_BROKER_URL) hands to the service. Nothing here is imported unless a broker is
configured or `lab worker` runs. What goes over the broker: lab.cluster.broker.
"""
