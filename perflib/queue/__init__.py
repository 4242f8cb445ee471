"""The live queue, one module for every face: live jobs read and priced once
(:mod:`~perflib.queue.live_jobs`), a typed snapshot with the fleet's GPU count, each queued job's
start and the queue ETA (:mod:`~perflib.queue.snapshot`), the autoscaling signal
(:mod:`~perflib.queue.autoscale`), one FIFO loop (:mod:`~perflib.queue.fifo`, also capacity
planning's) and one search for the smallest GPU count meeting a target
(:mod:`~perflib.queue.search`)."""
