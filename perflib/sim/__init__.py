"""Simulated history and demo data: the job simulator, the demo run and the live demo farm."""
