"""The live queue: a FIFO simulation of queued and running jobs, its snapshot (ETA, timeline)
and the autoscaling signal."""
