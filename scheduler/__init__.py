"""scheduler: triggers, the job lock, run records, the service process."""
