"""perflib: performance tracking and pre-run time prediction for GPU image/video generation.

Add two lines to a pipeline::

    from perflib import track_performance

    @track_performance("image")
    def generate(prompt, resolution="768x768", steps=30): ...

and every call's timing, phases and resource use land in the configured database.
"""
from perflib.tracking.tracker import configure, track_generation_job, track_performance

__version__ = "0.1.0"
__all__ = ["configure", "track_generation_job", "track_performance", "__version__"]
