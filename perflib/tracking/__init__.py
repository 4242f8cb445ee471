"""Tracking jobs as they run: the tracker, its resource sampler, NVML and the GPU heartbeat."""
