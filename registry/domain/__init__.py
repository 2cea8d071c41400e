"""The domain: statuses, events, the pure fold of events into a job, and the public job."""
