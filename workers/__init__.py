"""jobreg workers: the events-stream consumer and its housekeeping, hosted in an arq worker."""
