"""What a worker process knows of itself, for app code: ``current_worker()`` returns the
``WorkerInfo`` (``index``, ``generation``) of the worker it runs in under a supervisor
(``--workers N``), or None when the server runs in one process."""

from .process.worker import WorkerInfo, current_worker

__all__ = ["WorkerInfo", "current_worker"]
