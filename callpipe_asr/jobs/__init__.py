"""The durable job queue: job model, stores, the service dialects call, workers and retention."""

from .model import ClaimedJob, Job, JobRequest, JobStatus, QueueStats
from .service import JobProgress, JobService

__all__ = ["ClaimedJob", "Job", "JobProgress", "JobRequest", "JobService", "JobStatus", "QueueStats"]
