"""ComfyUI integration: a prompt's graph as a perflib job (:mod:`perflib.comfyui.graph`) and a
collector that records every prompt a ComfyUI server runs (:mod:`perflib.comfyui.collect`)."""
